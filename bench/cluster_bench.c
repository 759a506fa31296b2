/*
 * cluster_bench.c: how the dialogs work spreads over a cluster of 1, 2 and
 * 3 `sluice run` instances (release build, run under scripts/harness:
 * `make bench-cluster`).
 *
 * For each cluster size k (--instances, default 1,2,3), with a fresh
 * application.id and topic prefix so that the runs share no topic or
 * consumer group:
 *   1. start k instances and wait until GET /v1/members shows k members
 *      with every dialogs.commands partition claimed once and per-instance
 *      counts within 1 of each other, for 2 s;
 *   2. register --users users by producing UserRegistered to users.events
 *      and wait until the instances consumed them all;
 *   3. produce --sends SendMessage commands straight to dialogs.commands
 *      (random pairs of those users, so about as many dialogs as sends) and
 *      read dialogs.events (read_committed, assigned, no group join) until
 *      as many MessageSent were seen: sends/s is sends over the time from
 *      the first produce to the last MessageSent;
 *   4. read each instance's sluice_records_consumed_total for
 *      dialogs.commands from /metrics (its share of the records), its CPU
 *      time, and its dialogs.commands partitions from /v1/members again.
 * max/mean share is the busiest instance's records over the mean; 1.0 is
 * an even split. The target is <= 1.2; it is printed, not asserted.
 * Two shared cores cannot show CPU scaling, so the sends/s of k instances
 * is not expected to grow with k; the shares can show the balance.
 *
 * Prints a Markdown report on stdout; progress goes to stderr.
 */
#include <jansson.h>
#include <signal.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/support/benchutil.h"
#include "bench/support/sluicecluster.h"
#include "connectors/http/auth/jwt.h"
#include "sluice/v1/dialogs.pb-c.h"

#define SHARE_TARGET   1.2
#define BALANCE_US     120000000 /* to get a balanced membership table */
#define STABLE_US      2000000   /* that must stay so */
#define USERS_US       120000000 /* to consume the registrations */
#define SENDS_US       600000000 /* to see every MessageSent */
#define MAX_PARTITIONS 256

typedef struct options {
    bench_common_options common;
    long long sends, users, partitions;
    int sizes[BENCH_CLUSTER_MAX];
    int n_sizes;
} options;

/* What one cluster size measured. */
typedef struct run_result {
    int instances;
    long long sent, seen;
    double seconds;
    int partitions_before[BENCH_CLUSTER_MAX], partitions_after[BENCH_CLUSTER_MAX];
    long long records[BENCH_CLUSTER_MAX];
    double cpu_s[BENCH_CLUSTER_MAX];
    bool ok;
} run_result;

static bool take_sizes(options *opt, const char *value) {
    char copy[64];
    if (!bench_fmt(copy, sizeof(copy), "%s", value))
        return false;
    opt->n_sizes = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        long long k;
        if (opt->n_sizes == BENCH_CLUSTER_MAX || !bench_parse_ll(item, 1, BENCH_CLUSTER_MAX, &k))
            return false;
        opt->sizes[opt->n_sizes++] = (int)k;
    }
    return opt->n_sizes > 0;
}

static bool take_option(void *opts, const char *name, const char *value) {
    options *opt = opts;
    if (strcmp(name, "--sends") == 0)
        return bench_parse_ll(value, 1, 10000000, &opt->sends);
    if (strcmp(name, "--users") == 0)
        return bench_parse_ll(value, 2, 1000000, &opt->users);
    if (strcmp(name, "--partitions") == 0)
        return bench_parse_ll(value, 1, MAX_PARTITIONS, &opt->partitions);
    if (strcmp(name, "--instances") == 0)
        return take_sizes(opt, value);
    return false;
}

/* ---- membership ------------------------------------------------------------------ */

/* The index of the instance whose HTTP port ends `address`, or -1. */
static int instance_of(const bench_cluster *c, const char *address) {
    const char *colon = address ? strrchr(address, ':') : NULL;
    for (int i = 0; colon && i < c->n; i++)
        if (atoi(colon + 1) == c->ports[i])
            return i;
    return -1;
}

/* dialogs.commands partitions per instance from one GET /v1/members (on
 * the first instance): true if the table lists exactly the k instances and
 * they claim all `partitions` partitions, counts within 1 of each other. */
static bool census(const bench_cluster *c, int partitions, int counts[BENCH_CLUSTER_MAX]) {
    static char out[1 << 18];
    memset(counts, 0, sizeof(int) * BENCH_CLUSTER_MAX);
    if (bench_http(c->admin_ports[0], "GET", "/v1/members", NULL, NULL, out, sizeof(out)) != 200)
        return false;
    const char *body = strstr(out, "\r\n\r\n");
    json_t *doc = body ? json_loads(body + 4, 0, NULL) : NULL;
    json_t *members = json_object_get(doc, "members");
    int listed = 0, claimed = 0;
    size_t i;
    json_t *member;
    json_array_foreach(members, i, member) {
        int at = instance_of(c, json_string_value(json_object_get(member, "address")));
        if (at < 0)
            continue;
        listed++;
        json_t *parts = json_object_get(json_object_get(member, "assignment"), c->commands_topic);
        counts[at] = (int)json_array_size(parts);
        claimed += counts[at];
    }
    json_decref(doc);
    int low = partitions, high = 0;
    for (int k = 0; k < c->n; k++) {
        low = counts[k] < low ? counts[k] : low;
        high = counts[k] > high ? counts[k] : high;
    }
    return listed == c->n && claimed == partitions && high - low <= 1;
}

static bool wait_balanced(const bench_cluster *c, int partitions, int counts[BENCH_CLUSTER_MAX]) {
    int64_t deadline = bench_now_us() + BALANCE_US, since = 0;
    while (bench_now_us() < deadline && !bench_stop_requested) {
        if (!census(c, partitions, counts))
            since = 0;
        else if (!since)
            since = bench_now_us();
        else if (bench_now_us() - since >= STABLE_US)
            return true;
        bench_sleep_ms(200);
    }
    fprintf(stderr, "bench: %d instances of %s not balanced in time\n", c->n, c->app_id);
    return false;
}

/* The records all instances consumed from `topic` (a series they lack
 * counts 0); per instance into `each` if not NULL. */
static long long consumed(const bench_cluster *c, const char *topic,
                          long long each[BENCH_CLUSTER_MAX]) {
    char series[256];
    bench_fmt(series, sizeof(series), "sluice_records_consumed_total{topic=\"%s\"}", topic);
    long long total = 0;
    for (int i = 0; i < c->n; i++) {
        long long v = bench_metric(c->admin_ports[i], series);
        v = v < 0 ? 0 : v;
        if (each)
            each[i] = v;
        total += v;
    }
    return total;
}

/* ---- the MessageSent reader ------------------------------------------------------ */

/* A read_committed consumer assigned every partition of `topic` from the
 * start (no group join to wait for), or NULL. */
static rd_kafka_t *events_reader(const char *bootstrap, const char *topic) {
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "group.id", "cluster-bench-unused", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "isolation.level", "read_committed", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bench: consumer: %s\n", errstr);
        return NULL;
    }
    rd_kafka_topic_t *handle = rd_kafka_topic_new(rk, topic, NULL);
    int partitions = -1;
    for (int64_t deadline = bench_now_us() + 30000000;
         partitions < 0 && bench_now_us() < deadline;) {
        const rd_kafka_metadata_t *md = NULL;
        if (rd_kafka_metadata(rk, 0, handle, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0)
            partitions = md->topics[0].partition_cnt;
        if (md)
            rd_kafka_metadata_destroy(md);
        if (partitions < 0)
            bench_sleep_ms(200);
    }
    rd_kafka_topic_destroy(handle);
    if (partitions < 0) {
        fprintf(stderr, "bench: no metadata for %s\n", topic);
        rd_kafka_destroy(rk);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(list, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    return rk;
}

/* Poll `reader` until `want` MessageSent were seen or the deadline; the
 * count, and the time the last one was seen in *last_us. */
static long long read_sent(rd_kafka_t *reader, long long want, int64_t *last_us) {
    long long seen = 0;
    int64_t deadline = bench_now_us() + SENDS_US;
    while (seen < want && bench_now_us() < deadline && !bench_stop_requested) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(reader, 100);
        if (!m)
            continue;
        if (!m->err) {
            Sluice__V1__DialogsEvent *e =
                sluice__v1__dialogs_event__unpack(NULL, m->len, m->payload);
            if (e && e->event_case == SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT) {
                seen++;
                *last_us = bench_now_us();
            }
            sluice__v1__dialogs_event__free_unpacked(e, NULL);
        }
        rd_kafka_message_destroy(m);
    }
    return seen;
}

/* ---- one cluster size ------------------------------------------------------------ */

/* Steps 2 to 4 on the running, balanced cluster `c`, into `r`. */
static void measure(const options *opt, bench_cluster *c, run_result *r) {
    int k = c->n;
    unsigned seed = (unsigned)getpid() + (unsigned)k;
    size_t n_users = (size_t)opt->users;
    char(*users)[37] = calloc(n_users, 37);
    if (!users)
        return;
    rd_kafka_t *producer = bench_producer_new(c->bootstrap);
    for (size_t i = 0; i < n_users; i++) {
        bench_random_uuid(users[i], &seed);
        bench_register_user(producer, c, users[i]);
    }
    rd_kafka_flush(producer, 30000);
    int64_t deadline = bench_now_us() + USERS_US;
    while (consumed(c, c->users_topic, NULL) < opt->users && bench_now_us() < deadline)
        bench_sleep_ms(200);
    bench_sleep_s(1); /* the count moves when a record is processed, before its commit */

    long long records0[BENCH_CLUSTER_MAX], ticks0[BENCH_CLUSTER_MAX];
    consumed(c, c->commands_topic, records0);
    for (int i = 0; i < k; i++)
        ticks0[i] = bench_proc_ticks(c->pids[i]);
    rd_kafka_t *reader = events_reader(c->bootstrap, c->events_topic);
    if (reader) {
        char command_id[64];
        int64_t t0 = bench_now_us(), last_us = t0;
        for (long long i = 0; i < opt->sends; i++) {
            size_t a = (size_t)rand_r(&seed) % n_users,
                   b = (a + 1 + (size_t)rand_r(&seed) % (n_users - 1)) % n_users;
            bench_fmt(command_id, sizeof(command_id), "cluster-%d-%lld", k, i);
            bench_produce_send(producer, c, command_id, users[a], users[b],
                               "benchmark message through kafka");
            rd_kafka_poll(producer, 0);
        }
        rd_kafka_flush(producer, 60000);
        r->sent = opt->sends;
        r->seen = read_sent(reader, opt->sends, &last_us);
        r->seconds = (double)(last_us - t0) / 1e6;
        rd_kafka_consumer_close(reader);
        rd_kafka_destroy(reader);
        long long records[BENCH_CLUSTER_MAX];
        consumed(c, c->commands_topic, records);
        long ticks_per_s = sysconf(_SC_CLK_TCK);
        for (int i = 0; i < k; i++) {
            r->records[i] = records[i] - records0[i];
            r->cpu_s[i] = (double)(bench_proc_ticks(c->pids[i]) - ticks0[i]) / (double)ticks_per_s;
        }
        census(c, (int)opt->partitions, r->partitions_after);
        r->ok = r->seen == r->sent;
    }
    rd_kafka_destroy(producer);
    free(users);
}

static void run_size(const options *opt, const char *bootstrap, const char *dir,
                     const char *key_path, int k, run_result *r) {
    static const char *const extra[] = {"gateway.members.interval.ms=500",
                                        "gateway.members.expiry.ms=3000", NULL};
    char app_id[64];
    bench_fmt(app_id, sizeof(app_id), "cbench-%d-%d", (int)getpid(), k);
    bench_cluster c;
    bench_cluster_init(&c, bootstrap, opt->common.build, dir, key_path, app_id);
    memset(r, 0, sizeof(*r));
    r->instances = k;
    fprintf(stderr, "bench: %d instance(s), application %s\n", k, app_id);
    if (bench_cluster_start(&c, k, (int)opt->partitions, extra) &&
        wait_balanced(&c, (int)opt->partitions, r->partitions_before))
        measure(opt, &c, r);
    bench_cluster_stop(&c);
    fprintf(stderr, "bench: %d instance(s): %lld of %lld MessageSent in %.1f s\n", k, r->seen,
            r->sent, r->seconds);
}

/* ---- the report ------------------------------------------------------------------ */

static void print_list_int(const int *v, int n) {
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? " / " : "", v[i]);
}

static void print_row(const run_result *r) {
    long long total = 0, max = 0;
    for (int i = 0; i < r->instances; i++) {
        total += r->records[i];
        max = r->records[i] > max ? r->records[i] : max;
    }
    double mean = (double)total / r->instances, ratio = mean > 0 ? (double)max / mean : 0;
    printf("| %d | %lld | %lld | %.1f | %.0f | ", r->instances, r->sent, r->seen, r->seconds,
           r->seconds > 0 ? (double)r->seen / r->seconds : 0);
    print_list_int(r->partitions_before, r->instances);
    if (memcmp(r->partitions_before, r->partitions_after, sizeof(int) * (size_t)r->instances)) {
        printf(" (after: ");
        print_list_int(r->partitions_after, r->instances);
        printf(")");
    }
    printf(" | ");
    for (int i = 0; i < r->instances; i++)
        printf("%s%lld", i ? " / " : "", r->records[i]);
    printf(" | ");
    for (int i = 0; i < r->instances; i++)
        printf("%s%.1f%%", i ? " / " : "",
               total ? 100.0 * (double)r->records[i] / (double)total : 0);
    printf(" | %.2f%s | ", ratio, ratio <= SHARE_TARGET ? "" : " (over 1.2)");
    for (int i = 0; i < r->instances; i++)
        printf("%s%.1f", i ? " / " : "", r->cpu_s[i]);
    printf(" |\n");
}

static int usage(void) {
    fprintf(stderr, "usage: cluster_bench [--instances 1,2,3] [--sends N] [--users N] "
                    "[--partitions N] [--build DIR] [--label TEXT] [--keep]\n"
                    "       (under scripts/harness: make bench-cluster)\n");
    return 2;
}

int main(int argc, char **argv) {
    options opt = {
        .sends = 50000, .users = 2000, .partitions = 12, .n_sizes = 3, .sizes = {1, 2, 3}};
    if (!bench_parse_args(argc, argv, &opt.common, take_option, &opt))
        return usage();
    const char *bootstrap;
    char dir[] = "/tmp/sluice-cluster-bench-XXXXXX", key_path[128];
    int status = bench_cluster_setup("make bench-cluster", dir, key_path, sizeof(key_path), &bootstrap);
    if (status)
        return status;
    run_result results[BENCH_CLUSTER_MAX];
    int done = 0;
    for (; done < opt.n_sizes && !bench_stop_requested; done++)
        run_size(&opt, bootstrap, dir, key_path, opt.sizes[done], &results[done]);

    char when[64], model[128];
    bench_utc_now(when, sizeof(when));
    bench_machine_model(model, sizeof(model));
    printf("## cluster_bench: dialogs work over 1..k instances (%s)\n\n",
           opt.common.label ? opt.common.label : "unlabelled");
    printf("%s, %s, %ld CPUs; %lld SendMessage commands produced at once to dialogs.commands "
           "(%lld partitions), %lld users, random pairs; release build\n\n",
           when, model, sysconf(_SC_NPROCESSORS_ONLN), opt.sends, opt.partitions, opt.users);
    printf("| instances | sends | MessageSent seen | s | sends/s | dialogs.commands partitions "
           "per instance | records per instance | share per instance | max/mean share | "
           "CPU s per instance |\n");
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
