/*
 * standby_bench.c: how long the keys of a moved task are unavailable, with
 * standby replicas (num.standby.replicas=1) and without (=0), for a store
 * of --records records (release build, run under scripts/harness:
 * `make bench-standby`).
 *
 * The store is identity's users-by-id (user id -> UserRecord), read by
 * GET /user/get/{id} (no token needed; a 503 while the key's task is
 * restoring or its owner is unknown). It is filled the quickest way: the
 * records are produced straight into its changelog,
 * <application.id>-users-by-id-changelog, while the instances are stopped,
 * so the instances restore them on their next start. Going through
 * users.commands would cost an argon2id hash and six records per user; a
 * changelog record is what the users-by-id task would have written, and a
 * restore or a standby cannot tell the difference.
 *
 * Per run (--standbys, default "1,0"; a fresh application.id each):
 *   1. start instances a and b (they create the topics, the changelog with
 *      as many partitions as its source), stop them, produce the records
 *      to the changelog (murmur2 of the user id, as the engine partitions
 *      and routes queries), start a and b again and wait until both are
 *      ready, every assigned task is running and, with standbys, b keeps
 *      standbys and its sluice_standby_records_total stood still for 3 s;
 *   2. pick --keys user ids that a owns, each on another partition
 *      (GET /v1/metadata/users-by-id/{id} on b), check b answers them (200,
 *      forwarded to a);
 *   3. SIGTERM a and poll those keys on b every 20 ms: per key the first
 *      answer that is not a 200 and the first 200 after it. A key that has
 *      a 200 after a exited without a failure before it was never
 *      unavailable (window 0).
 *   4. once b runs every task (no restore left), read how much b restored:
 *      the "task users-by-id_N running (restored R records in M ms)" lines
 *      of its log written after the stop (the store's own tasks), and the
 *      delta of sluice_restore_records_total (every moved task).
 * The window of a key is its first 200 minus its first failure; the table
 * shows the max over keys, and the max of first 200 minus the SIGTERM. The
 * issue's target with standbys is at most 2 s; printed, never asserted.
 *
 * Prints a Markdown report on stdout; progress goes to stderr.
 */
#include <jansson.h>
#include <signal.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/support/benchutil.h"
#include "bench/support/sluicecluster.h"
#include "connectors/http/auth/jwt.h"
#include "sluice/v1/identity.pb-c.h"

#define STORE         "users-by-id"
#define TARGET_S      2.0
#define SAMPLE_KEYS   4096      /* user ids kept in memory to pick probes from */
#define MAX_KEYS      32
#define POLL_MS       20
#define SETTLE_US     300000000 /* to get both instances running every task */
#define STILL_US      3000000   /* the standby count must stand still this long */
#define OUTAGE_US     300000000 /* for every probed key to answer again */

typedef struct options {
    bench_common_options common;
    long long records, keys, partitions;
    int standbys[2];
    int n_runs;
} options;

/* One probed key. */
typedef struct probe {
    char id[37];
    int partition;
    int64_t first_fail_us, first_ok_us; /* 0: not seen */
    int fail_status;
    bool done;
} probe;

/* What one run measured. */
typedef struct run_result {
    int standbys;
    long long records, restored_at_start, standby_records, standby_tasks;
    int n_keys;
    double window_max_s, stop_to_ok_max_s, a_exit_s;
    long long store_restored, store_restore_ms_max, store_tasks;
    long long engine_restored, engine_restore_ms;
    int fail_statuses[8], n_fail_statuses;
    bool ok;
} run_result;

static bool take_standbys(options *opt, const char *value) {
    char copy[32];
    if (!bench_fmt(copy, sizeof(copy), "%s", value))
        return false;
    opt->n_runs = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        long long r;
        if (opt->n_runs == 2 || !bench_parse_ll(item, 0, 1, &r))
            return false;
        opt->standbys[opt->n_runs++] = (int)r;
    }
    return opt->n_runs > 0;
}

static bool take_option(void *opts, const char *name, const char *value) {
    options *opt = opts;
    if (strcmp(name, "--records") == 0)
        return bench_parse_ll(value, 1000, 100000000, &opt->records);
    if (strcmp(name, "--keys") == 0)
        return bench_parse_ll(value, 1, MAX_KEYS, &opt->keys);
    if (strcmp(name, "--partitions") == 0)
        return bench_parse_ll(value, 1, 256, &opt->partitions);
    if (strcmp(name, "--standbys") == 0)
        return take_standbys(opt, value);
    return false;
}

static long long metric0(int port, const char *series) {
    long long v = bench_metric(port, series);
    return v < 0 ? 0 : v;
}

/* ---- filling the store ----------------------------------------------------------- */

/* Produce `n` UserRecords to the store's changelog; the first SAMPLE_KEYS
 * user ids into `sample`. false if not every record was delivered. */
static bool fill_store(const bench_cluster *c, long long n, char (*sample)[37]) {
    char topic[300];
    bench_fmt(topic, sizeof(topic), "%s-%s-changelog", c->app_id, STORE);
    rd_kafka_t *producer = bench_producer_new(c->bootstrap);
    unsigned seed = (unsigned)getpid() ^ (unsigned)bench_now_us();
    char id[37], email[64];
    uint8_t buf[512];
    double t0 = bench_now_s();
    for (long long i = 0; i < n && !bench_stop_requested; i++) {
        bench_random_uuid(id, &seed);
        if (i < SAMPLE_KEYS)
            memcpy(sample[i], id, sizeof(id));
        bench_fmt(email, sizeof(email), "user%lld@standby.bench", i);
        Sluice__V1__Profile profile = SLUICE__V1__PROFILE__INIT;
        profile.first_name = "Standby";
        profile.second_name = "Bench";
        profile.city = "Loopback";
        Sluice__V1__UserRecord user = SLUICE__V1__USER_RECORD__INIT;
        user.user_id = id;
        user.email = email;
        user.password_hash = "";
        user.profile = &profile;
        user.registered_at_ms = 1700000000000LL + i;
        bench_produce(producer, topic, id, buf, sluice__v1__user_record__pack(&user, buf));
        rd_kafka_poll(producer, 0);
    }
    bool flushed = rd_kafka_flush(producer, 120000) == RD_KAFKA_RESP_ERR_NO_ERROR;
    fprintf(stderr, "bench: %lld records produced to %s in %.1f s\n", n, topic,
            bench_now_s() - t0);
    rd_kafka_destroy(producer);
    return flushed && !bench_stop_requested;
}

/* ---- waiting --------------------------------------------------------------------- */

/* Both instances run every task they were assigned (and have some), and
 * with standbys b keeps some whose applied-record count stood still for
 * STILL_US. */
static bool wait_settled(const bench_cluster *c, int standbys, run_result *r) {
    int64_t deadline = bench_now_us() + SETTLE_US, still_since = bench_now_us();
    long long last = -1;
    while (bench_now_us() < deadline && !bench_stop_requested) {
        bool running = true;
        for (int i = 0; i < 2; i++) {
            long long assigned = bench_metric(c->admin_ports[i], "sluice_tasks_assigned");
            long long run = bench_metric(c->admin_ports[i], "sluice_tasks_running");
            running = running && assigned > 0 && assigned == run;
        }
        long long followed = metric0(c->admin_ports[1], "sluice_standby_records_total");
        long long kept = metric0(c->admin_ports[1], "sluice_standby_tasks");
        if (followed != last || !running || (standbys && kept == 0))
            still_since = bench_now_us();
        last = followed;
        if (bench_now_us() - still_since >= STILL_US) {
            r->standby_records = followed;
            r->standby_tasks = kept;
            return true;
        }
        bench_sleep_ms(200);
    }
    fprintf(stderr, "bench: %s did not settle in time\n", c->app_id);
    return false;
}

/* ---- probes ---------------------------------------------------------------------- */

/* The partition of `id` and the port its owner serves on, from b. */
static bool owner_of(const bench_cluster *c, const char *id, int *partition, int *port) {
    static char out[1 << 14];
    char path[128];
    bench_fmt(path, sizeof(path), "/v1/metadata/%s/%s", STORE, id);
    if (bench_http(c->admin_ports[1], "GET", path, NULL, NULL, out, sizeof(out)) != 200)
        return false;
    const char *body = strstr(out, "\r\n\r\n");
    json_t *doc = body ? json_loads(body + 4, 0, NULL) : NULL;
    const char *address =
        json_string_value(json_object_get(json_object_get(doc, "owner"), "address"));
    const char *colon = address ? strrchr(address, ':') : NULL;
    bool found = colon != NULL;
    if (found) {
        *port = atoi(colon + 1);
        *partition = (int)json_integer_value(json_object_get(doc, "partition"));
    }
    json_decref(doc);
    return found;
}

/* Up to `want` sampled ids that a owns, one per partition, answered by b. */
static int pick_keys(const bench_cluster *c, char (*sample)[37], long long n_sample, int want,
                     probe *keys) {
    int n = 0;
    char path[128], out[4096];
    for (long long i = 0; i < n_sample && n < want; i++) {
        int partition, port;
        if (!owner_of(c, sample[i], &partition, &port) || port != c->ports[0])
            continue;
        bool seen = false;
        for (int k = 0; k < n; k++)
            seen = seen || keys[k].partition == partition;
        bench_fmt(path, sizeof(path), "/user/get/%s", sample[i]);
        if (seen || bench_http(c->ports[1], "GET", path, NULL, NULL, out, sizeof(out)) != 200)
            continue;
        memset(&keys[n], 0, sizeof(keys[n]));
        memcpy(keys[n].id, sample[i], 37);
        keys[n].partition = partition;
        n++;
    }
    return n;
}

/* SIGTERM a, then poll every key on b every POLL_MS until each answered
 * again (or the deadline); fills the windows in `r`. */
static bool outage(bench_cluster *c, probe *keys, int n_keys, run_result *r) {
    int64_t stop_us = bench_now_us(), a_exit_us = 0;
    kill(c->pids[0], SIGTERM);
    int64_t deadline = stop_us + OUTAGE_US;
    int remaining = n_keys;
    char path[128], out[4096];
    while (remaining > 0 && bench_now_us() < deadline && !bench_stop_requested) {
        int64_t round_us = bench_now_us();
        if (!a_exit_us && waitpid(c->pids[0], NULL, WNOHANG) == c->pids[0]) {
            a_exit_us = bench_now_us();
            c->pids[0] = 0;
        }
        for (int k = 0; k < n_keys; k++) {
            probe *p = &keys[k];
            if (p->done)
                continue;
            bench_fmt(path, sizeof(path), "/user/get/%s", p->id);
            int status = bench_http(c->ports[1], "GET", path, NULL, NULL, out, sizeof(out));
            int64_t now = bench_now_us();
            if (status != 200 && !p->first_fail_us) {
                p->first_fail_us = now;
                p->fail_status = status;
            } else if (status == 200 && (p->first_fail_us || a_exit_us)) {
                p->first_ok_us = now;
                p->done = true;
                remaining--;
            }
        }
        int64_t spent = bench_now_us() - round_us;
        if (spent < POLL_MS * 1000)
            usleep((useconds_t)(POLL_MS * 1000 - spent));
    }
    if (!a_exit_us && c->pids[0] > 0) {
        waitpid(c->pids[0], NULL, 0);
        a_exit_us = bench_now_us();
        c->pids[0] = 0;
    }
    r->a_exit_s = (double)(a_exit_us - stop_us) / 1e6;
    for (int k = 0; k < n_keys; k++) {
        probe *p = &keys[k];
        if (!p->done)
            continue;
        double window = p->first_fail_us ? (double)(p->first_ok_us - p->first_fail_us) / 1e6 : 0;
        double since_stop = (double)(p->first_ok_us - stop_us) / 1e6;
        r->window_max_s = window > r->window_max_s ? window : r->window_max_s;
        r->stop_to_ok_max_s = since_stop > r->stop_to_ok_max_s ? since_stop : r->stop_to_ok_max_s;
        bool listed = false;
        for (int s = 0; s < r->n_fail_statuses; s++)
            listed = listed || r->fail_statuses[s] == p->fail_status;
        if (p->first_fail_us && !listed && r->n_fail_statuses < 8)
            r->fail_statuses[r->n_fail_statuses++] = p->fail_status;
    }
    if (remaining)
        fprintf(stderr, "bench: %d of %d keys did not answer again in time\n", remaining, n_keys);
    return remaining == 0;
}

/* The store's task lines in b's log from byte `from` on: restored records
 * summed, the longest restore, the number of tasks. */
static void store_restores(const char *log_path, long from, run_result *r) {
    FILE *f = fopen(log_path, "r");
    if (!f)
        return;
    fseek(f, from, SEEK_SET);
    char line[2048], pattern[64];
    bench_fmt(pattern, sizeof(pattern), "task %s_", STORE);
    while (fgets(line, sizeof(line), f)) {
        const char *task = strstr(line, pattern);
        const char *running = task ? strstr(task, "running (restored ") : NULL;
        unsigned long long records;
        long long ms;
        if (!running || sscanf(running, "running (restored %llu records in %lld ms)", &records,
                               &ms) != 2)
            continue;
        r->store_restored += (long long)records;
        r->store_restore_ms_max = ms > r->store_restore_ms_max ? ms : r->store_restore_ms_max;
        r->store_tasks++;
    }
    fclose(f);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* ---- one run --------------------------------------------------------------------- */

static void run_one(const options *opt, const char *bootstrap, const char *dir,
                    const char *key_path, int standbys, run_result *r) {
    char standby_setting[64];
    bench_fmt(standby_setting, sizeof(standby_setting), "num.standby.replicas=%d", standbys);
    const char *const extra[] = {standby_setting, "log.level=info",
                                 "gateway.members.interval.ms=500",
                                 "gateway.members.expiry.ms=3000", NULL};
    char app_id[64];
    bench_fmt(app_id, sizeof(app_id), "sbbench-%d-%d", (int)getpid(), standbys);
    bench_cluster c;
    bench_cluster_init(&c, bootstrap, opt->common.build, dir, key_path, app_id);
    memset(r, 0, sizeof(*r));
    r->standbys = standbys;
    r->records = opt->records;
    fprintf(stderr, "bench: num.standby.replicas=%d, application %s\n", standbys, app_id);
    char(*sample)[37] = calloc(SAMPLE_KEYS, 37);
    probe keys[MAX_KEYS];
    if (!sample)
        return;
    if (!bench_cluster_start(&c, 2, (int)opt->partitions, extra))
        goto done;
    bench_cluster_stop(&c);
    if (!fill_store(&c, opt->records, sample))
        goto done;
    double t0 = bench_now_s();
    if (!bench_cluster_start(&c, 2, (int)opt->partitions, extra) ||
        !wait_settled(&c, standbys, r))
        goto done;
    r->restored_at_start = metric0(c.admin_ports[0], "sluice_restore_records_total") +
                           metric0(c.admin_ports[1], "sluice_restore_records_total");
    fprintf(stderr,
            "bench: settled %.1f s after the restart; %lld records restored at start, b keeps "
            "%lld standbys (%lld records applied)\n",
            bench_now_s() - t0, r->restored_at_start, r->standby_tasks, r->standby_records);
    long long n_sample = opt->records < SAMPLE_KEYS ? opt->records : SAMPLE_KEYS;
    r->n_keys = pick_keys(&c, sample, n_sample, (int)opt->keys, keys);
    if (r->n_keys == 0) {
        fprintf(stderr, "bench: no key owned by a that b answers\n");
        goto done;
    }
    char log_b[PATH_MAX];
    bench_fmt(log_b, sizeof(log_b), "%s/%s-instance-1.log", dir, app_id);
    long log_from = file_size(log_b);
    long long restored0 = metric0(c.admin_ports[1], "sluice_restore_records_total");
    long long restore_ms0 = metric0(c.admin_ports[1], "sluice_restore_milliseconds_total");
    bool answered = outage(&c, keys, r->n_keys, r);
    /* The other moved tasks (tokens, dialogs) may still be restoring. */
    for (int64_t deadline = bench_now_us() + 60000000; bench_now_us() < deadline;
         bench_sleep_ms(200)) {
        long long assigned = bench_metric(c.admin_ports[1], "sluice_tasks_assigned");
        if (assigned > 0 && assigned == bench_metric(c.admin_ports[1], "sluice_tasks_running"))
            break;
    }
    r->engine_restored = metric0(c.admin_ports[1], "sluice_restore_records_total") - restored0;
    r->engine_restore_ms =
        metric0(c.admin_ports[1], "sluice_restore_milliseconds_total") - restore_ms0;
    store_restores(log_b, log_from, r);
    r->ok = answered;
done:
    bench_cluster_stop(&c);
    free(sample);
    fprintf(stderr, "bench: num.standby.replicas=%d: max window %.3f s over %d keys\n", standbys,
            r->window_max_s, r->n_keys);
}

/* ---- the report ------------------------------------------------------------------ */

static void print_row(const run_result *r) {
    printf("| %s (%d) | %lld | %d | %.3f s%s | %.3f s | %.2f s | %lld in %lld task(s) | %lld ms | "
           "%lld / %lld ms | ",
           r->standbys ? "on" : "off", r->standbys, r->records, r->n_keys, r->window_max_s,
           r->standbys && r->window_max_s > TARGET_S ? " (over 2 s)" : "", r->stop_to_ok_max_s,
           r->a_exit_s, r->store_restored, r->store_tasks, r->store_restore_ms_max,
           r->engine_restored, r->engine_restore_ms);
    for (int s = 0; s < r->n_fail_statuses; s++)
        printf("%s%d", s ? ", " : "", r->fail_statuses[s]);
    printf("%s |\n", r->ok ? "" : " (incomplete)");
}

static int usage(void) {
    fprintf(stderr, "usage: standby_bench [--records N] [--keys N] [--partitions N] "
                    "[--standbys 1,0] [--build DIR] [--label TEXT] [--keep]\n"
                    "       (under scripts/harness: make bench-standby)\n");
    return 2;
}

int main(int argc, char **argv) {
    options opt = {.records = 1000000, .keys = 4, .partitions = 4, .n_runs = 2,
                   .standbys = {1, 0}};
    if (!bench_parse_args(argc, argv, &opt.common, take_option, &opt))
        return usage();
    const char *bootstrap;
    char dir[] = "/tmp/sluice-standby-bench-XXXXXX", key_path[128];
    int status = bench_cluster_setup("make bench-standby", dir, key_path, sizeof(key_path), &bootstrap);
    if (status)
        return status;
    run_result results[2];
    int done = 0;
    for (; done < opt.n_runs && !bench_stop_requested; done++)
        run_one(&opt, bootstrap, dir, key_path, opt.standbys[done], &results[done]);

    char when[64], model[128];
    bench_utc_now(when, sizeof(when));
    bench_machine_model(model, sizeof(model));
    printf("## standby_bench: unavailability of a moved task, standbys on vs off (%s)\n\n",
           opt.common.label ? opt.common.label : "unlabelled");
    printf("%s, %s, %ld CPUs; store %s (%lld records produced to its changelog), two release-"
           "build instances, a stopped with SIGTERM, up to %lld probed keys of a (one per "
           "partition of the store that a owns) polled on b every %d ms with GET "
           "/user/get/{id}\n\n",
           when, model, sysconf(_SC_NPROCESSORS_ONLN), STORE, opt.records, opt.keys, POLL_MS);
    printf("| standbys | records in the store | keys | unavailability window (max, first "
           "failure to first 200) | SIGTERM to first 200 (max) | SIGTERM to a's exit | "
           "%s records restored on b | longest %s restore | all restored on b (records / "
           "task-ms) | failure statuses |\n",
           STORE, STORE);
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    bool all_ok = true;
    for (int i = 0; i < done; i++) {
        print_row(&results[i]);
        all_ok = all_ok && results[i].ok;
    }
    if (opt.common.keep)
        fprintf(stderr, "bench: logs and state in %s\n", dir);
    else
        bench_remove_tree(dir);
    return all_ok ? 0 : 1;
}
