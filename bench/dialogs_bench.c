/*
 * dialogs_bench.c: end-to-end numbers of the dialogs topology on the real
 * broker (run under scripts/harness: `make bench-dialogs`).
 *
 * Starts three `sluice run` instances (the release build), registers users
 * by producing UserRegistered to users.events (no argon2 in the way), mints
 * their access tokens with the instances' signing key, then measures:
 *   1. sends through HTTP: --http-sends messages from --threads client
 *      threads, each request to a random instance; throughput and p50/p99
 *      of the whole request (produce, process, commit, reply);
 *   2. sends as direct Kafka commands: --kafka-sends SendMessage records
 *      produced at once; latency = produce time (in the command id) to the
 *      MessageSent on dialogs.events (read_committed);
 *   3. list latency, p50/p99 of --lists requests, to the instance that owns
 *      the dialog (local) and to one that does not (routed, one hop);
 *   4. Lady Gaga: one user sends 3 messages to each of --partners partners
 *      while --pairs pairs exchange 5 each, as Kafka commands: messages per
 *      partition, max/mean load, her index updates vs her messages, and the
 *      record cache's emitted/coalesced counters.
 * Prints a Markdown report on stdout. Timings on 2 shared cores are noisy.
 */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/support/benchutil.h"
#include "bench/support/sluicecluster.h"
#include "connectors/http/auth/jwt.h"
#include "processor/kafka/client.h"
#include "sluice/v1/dialogs.pb-c.h"
#include "sluice/v1/identity.pb-c.h"
#include "topology/dialogs/dialogs.h"

#define INSTANCES  3
#define PARTITIONS 12

static const char *bootstrap, *build = "build/release";
static char app_id[64], index_topic[160];
static bench_cluster cluster;
static sl_jwt_keys *keys;

static int64_t wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void auth_header(const char *sub, char *out, size_t size) {
    sl_jwt_claims claims;
    char errstr[256], sid[SL_JWT_RANDOM_ID_LEN + 1], token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_random_id(sid, sizeof(sid));
    if (sl_jwt_claims_init(&claims, SL_JWT_ACCESS, sub, sid, "sluice", "sluice",
                           (int64_t)time(NULL), 3600, errstr, sizeof(errstr)) ||
        sl_jwt_issue(keys, &claims, token, sizeof(token), NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "bench: token: %s\n", errstr);
        exit(1);
    }
    snprintf(out, size, "Authorization: Bearer %s\r\n", token);
}

static int compare_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void percentiles(long long *v, size_t n, double *p50_ms, double *p99_ms) {
    qsort(v, n, sizeof(*v), compare_ll);
    *p50_ms = n ? (double)v[n / 2] / 1000.0 : 0;
    *p99_ms = n ? (double)v[(n * 99) / 100 >= n ? n - 1 : (n * 99) / 100] / 1000.0 : 0;
}

/* Read dialogs.events from the start until `want` MessageSent events whose
 * command id starts with `id_prefix` were seen (or 120 s passed); calls
 * `seen` for each. */
typedef void seen_fn(const Sluice__V1__MessageSent *m, int32_t partition, int64_t at_us,
                     void *opaque);
static long consume_sent(const char *id_prefix, long want, seen_fn *seen, void *opaque) {
    char errstr[512], group[128];
    snprintf(group, sizeof(group), "%s-bench-%lld", app_id, (long long)bench_now_us());
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "isolation.level", "read_committed", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, cluster.events_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    long count = 0;
    int64_t deadline = bench_now_us() + 120000000;
    while (count < want && bench_now_us() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err) {
            Sluice__V1__DialogsEvent *e =
                sluice__v1__dialogs_event__unpack(NULL, m->len, m->payload);
            if (e && e->event_case == SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT &&
                e->message_sent->meta &&
                strncmp(e->message_sent->meta->command_id, id_prefix, strlen(id_prefix)) == 0) {
                count++;
                if (seen)
                    seen(e->message_sent, m->partition, wall_us(), opaque);
            }
            sluice__v1__dialogs_event__free_unpacked(e, NULL);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return count;
}

/* ---- 1. HTTP sends ------------------------------------------------------------- */

typedef struct sender {
    pthread_t thread;
    int n;
    unsigned seed;
    char (*users)[37];
    int n_users;
    char (*auth)[SL_JWT_MAX_TOKEN + 64];
    long long *latency_us;
    int failures;
} sender;

static void *send_loop(void *opaque) {
    sender *s = opaque;
    char path[128], headers[SL_JWT_MAX_TOKEN + 128], out[4096];
    for (int i = 0; i < s->n; i++) {
        int a = rand_r(&s->seed) % s->n_users,
            b = (a + 1 + rand_r(&s->seed) % (s->n_users - 1)) % s->n_users;
        snprintf(path, sizeof(path), "/dialog/%s/send", s->users[b]);
        snprintf(headers, sizeof(headers), "%sContent-Type: application/json\r\n", s->auth[a]);
        int64_t t0 = bench_now_us();
        int status =
            bench_http(cluster.ports[rand_r(&s->seed) % INSTANCES], "POST", path, headers,
                       "{\"text\":\"benchmark message with a few words in it\"}", out, sizeof(out));
        s->latency_us[i] = bench_now_us() - t0;
        if (status != 200)
            s->failures++;
    }
    return NULL;
}

/* ---- 2. Kafka sends ------------------------------------------------------------ */

typedef struct kafka_latency {
    long long *latency_us;
    long n;
    int64_t last_us;
} kafka_latency;

static void kafka_seen(const Sluice__V1__MessageSent *m, int32_t partition, int64_t at_us,
                       void *opaque) {
    (void)partition;
    kafka_latency *k = opaque;
    const char *stamp = strrchr(m->meta->command_id, '-');
    if (stamp)
        k->latency_us[k->n++] = at_us - atoll(stamp + 1);
    k->last_us = at_us;
}

/* ---- 4. Lady Gaga -------------------------------------------------------------- */

typedef struct gaga {
    const char *hot;
    long per_partition[PARTITIONS], hot_per_partition[PARTITIONS];
} gaga;

static void gaga_seen(const Sluice__V1__MessageSent *m, int32_t partition, int64_t at_us,
                      void *opaque) {
    (void)at_us;
    gaga *g = opaque;
    g->per_partition[partition]++;
    if (strcmp(m->sender_id, g->hot) == 0)
        g->hot_per_partition[partition]++;
}

static long long metric_sum(const char *name) {
    static char out[1 << 20];
    long long total = 0;
    for (int i = 0; i < INSTANCES; i++) {
        if (bench_http(cluster.admin_ports[i], "GET", "/metrics", NULL, NULL, out, sizeof(out)) !=
            200)
            continue;
        for (char *line = strstr(out, name); line; line = strstr(line + 1, name))
            if (line[-1] == '\n' && line[strlen(name)] == ' ')
                total += atoll(line + strlen(name) + 1);
    }
    return total;
}

static long count_key(const char *topic, const char *key) {
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "group.id", "unused", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "isolation.level", "read_committed", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    long count = 0;
    for (int32_t p = 0; p < PARTITIONS; p++) {
        int64_t low, high;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &low, &high, 10000))
            continue;
        rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(list, topic, p)->offset = low;
        rd_kafka_assign(rk, list);
        rd_kafka_topic_partition_list_destroy(list);
        int64_t next = low, deadline = bench_now_us() + 30000000;
        while (next < high && bench_now_us() < deadline) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
            if (!m)
                continue;
            if (!m->err) {
                next = m->offset + 1;
                if (m->key_len == strlen(key) && memcmp(m->key, key, m->key_len) == 0)
                    count++;
            } else if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                next = high;
            }
            rd_kafka_message_destroy(m);
        }
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return count;
}

int main(int argc, char **argv) {
    int http_sends = 2000, threads = 16, kafka_sends = 5000, lists = 1000, partners = 1000,
        pairs = 200;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--build"))
            build = argv[i + 1];
        else if (!strcmp(argv[i], "--http-sends"))
            http_sends = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kafka-sends"))
            kafka_sends = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--lists"))
            lists = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--partners"))
            partners = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--pairs"))
            pairs = atoi(argv[i + 1]);
    }
    bootstrap = getenv("SLUICE_TEST_KAFKA_BOOTSTRAP");
    if (!bootstrap || threads < 1 || http_sends < threads || partners < 1 || pairs < 1) {
        fprintf(stderr, "usage: run under scripts/harness (make bench-dialogs)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char dir[] = "/tmp/sluice-dialogs-bench-XXXXXX", key_path[128], errstr[256];
    if (!mkdtemp(dir))
        return 1;
    snprintf(key_path, sizeof(key_path), "%s/signing.pem", dir);
    if (sl_jwt_key_generate(key_path, SL_JWT_RS256, NULL, errstr, sizeof(errstr)) ||
        !(keys = sl_jwt_keys_load(key_path, NULL, errstr, sizeof(errstr)))) {
        fprintf(stderr, "bench: %s\n", errstr);
        return 1;
    }
    snprintf(app_id, sizeof(app_id), "dbench-%d-%lld", (int)getpid(), (long long)time(NULL));
    snprintf(index_topic, sizeof(index_topic), "%s-dialogs-by-user-repartition", app_id);
    bench_cluster_init(&cluster, bootstrap, build, dir, key_path, app_id);
    if (!bench_cluster_start(&cluster, INSTANCES, PARTITIONS, NULL)) {
        bench_cluster_stop(&cluster);
        return 1;
    }

    /* Users: 64 for the HTTP and list runs, the Lady Gaga cast. */
    unsigned seed = (unsigned)getpid();
    enum { USERS = 64 };
    static char users[USERS][37], auth[USERS][SL_JWT_MAX_TOKEN + 64];
    char hot[37];
    char(*partner_ids)[37] = calloc((size_t)partners, 37);
    char(*pair_ids)[37] = calloc((size_t)pairs * 2, 37);
    rd_kafka_t *rk = bench_producer_new(bootstrap);
    for (int i = 0; i < USERS; i++) {
        bench_random_uuid(users[i], &seed);
        bench_register_user(rk, &cluster, users[i]);
        auth_header(users[i], auth[i], sizeof(auth[i]));
    }
    bench_random_uuid(hot, &seed);
    bench_register_user(rk, &cluster, hot);
    for (int i = 0; i < partners; i++) {
        bench_random_uuid(partner_ids[i], &seed);
        bench_register_user(rk, &cluster, partner_ids[i]);
    }
    for (int i = 0; i < 2 * pairs; i++) {
        bench_random_uuid(pair_ids[i], &seed);
        bench_register_user(rk, &cluster, pair_ids[i]);
    }
    rd_kafka_flush(rk, 30000);
    sleep(3); /* let every instance's dialogs-users copy catch up */

    /* 1. HTTP sends */
    sender *senders = calloc((size_t)threads, sizeof(*senders));
    long long *http_latency = calloc((size_t)http_sends, sizeof(long long));
    int64_t t0 = bench_now_us();
    for (int i = 0; i < threads; i++) {
        senders[i] =
            (sender){.n = http_sends / threads,
                     .seed = seed + (unsigned)i,
                     .users = users,
                     .n_users = USERS,
                     .auth = auth,
                     .latency_us = http_latency + (size_t)i * (size_t)(http_sends / threads)};
        pthread_create(&senders[i].thread, NULL, send_loop, &senders[i]);
    }
    int failures = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(senders[i].thread, NULL);
        failures += senders[i].failures;
    }
    double http_s = (double)(bench_now_us() - t0) / 1e6;
    size_t http_n = (size_t)(http_sends / threads) * (size_t)threads;
    double http_p50, http_p99;
    percentiles(http_latency, http_n, &http_p50, &http_p99);

    /* 2. Kafka sends */
    kafka_latency kl = {.latency_us = calloc((size_t)kafka_sends, sizeof(long long))};
    char command_id[96];
    int64_t k0 = wall_us();
    for (int i = 0; i < kafka_sends; i++) {
        int a = i % USERS, b = (a + 1 + i / USERS) % USERS;
        if (a == b)
            b = (b + 1) % USERS;
        snprintf(command_id, sizeof(command_id), "kafka-%d-%lld", i, (long long)wall_us());
        bench_produce_send(rk, &cluster, command_id, users[a], users[b],
                           "benchmark message through kafka");
    }
    rd_kafka_flush(rk, 30000);
    long kafka_seen_n = consume_sent("kafka-", kafka_sends, kafka_seen, &kl);
    double kafka_s = (double)(kl.last_us - k0) / 1e6;
    double kafka_p50, kafka_p99;
    percentiles(kl.latency_us, (size_t)kl.n, &kafka_p50, &kafka_p99);

    /* 3. lists: local and routed, for one dialog of the HTTP run */
    char dialog_id[SL_DIALOGS_ID_LEN + 1], path[256], out[65536];
    sl_dialogs_id(users[0], users[1], dialog_id);
    for (int i = 0; i < 20; i++) { /* make the dialog non-trivial */
        snprintf(command_id, sizeof(command_id), "fill-%d", i);
        bench_produce_send(rk, &cluster, command_id, users[0], users[1], "a message to list");
    }
    rd_kafka_flush(rk, 30000);
    sleep(1);
    snprintf(path, sizeof(path), "/v1/metadata/%s/%s", SL_DIALOGS_STORE_HEADS, dialog_id);
    bench_http(cluster.admin_ports[0], "GET", path, NULL, NULL, out, sizeof(out));
    int owner = -1;
    const char *address = strstr(out, "\"address\":\"");
    const char *colon = address ? strchr(address + 11, ':') : NULL;
    for (int i = 0; colon && i < INSTANCES; i++)
        if (atoi(colon + 1) == cluster.ports[i])
            owner = i;
    long long *local = calloc((size_t)lists, sizeof(long long)),
              *routed = calloc((size_t)lists, sizeof(long long));
    snprintf(path, sizeof(path), "/dialog/%s/list?limit=20", users[1]);
    int list_failures = 0;
    for (int i = 0; owner >= 0 && i < lists; i++) {
        int64_t s0 = bench_now_us();
        list_failures +=
            bench_http(cluster.ports[owner], "GET", path, auth[0], NULL, out, sizeof(out)) != 200;
        local[i] = bench_now_us() - s0;
        s0 = bench_now_us();
        list_failures += bench_http(cluster.ports[(owner + 1) % INSTANCES], "GET", path, auth[0],
                                    NULL, out, sizeof(out)) != 200;
        routed[i] = bench_now_us() - s0;
    }
    double local_p50, local_p99, routed_p50, routed_p99;
    percentiles(local, (size_t)lists, &local_p50, &local_p99);
    percentiles(routed, (size_t)lists, &routed_p50, &routed_p99);

    /* 4. Lady Gaga */
    long long emitted0 = metric_sum("sluice_record_cache_emitted_total");
    long long coalesced0 = metric_sum("sluice_record_cache_coalesced_total");
    gaga g = {.hot = hot};
    int64_t g0 = bench_now_us();
    for (int round = 0; round < 5; round++) {
        for (int i = 0; round < 3 && i < partners; i++) {
            snprintf(command_id, sizeof(command_id), "gaga-hot-%d-%d", i, round);
            bench_produce_send(rk, &cluster, command_id, hot, partner_ids[i],
                               "hello from the hot user");
        }
        for (int i = 0; i < pairs; i++) {
            snprintf(command_id, sizeof(command_id), "gaga-pair-%d-%d", i, round);
            bench_produce_send(rk, &cluster, command_id, pair_ids[2 * i + round % 2],
                               pair_ids[2 * i + 1 - round % 2], "pair message");
        }
    }
    rd_kafka_flush(rk, 30000);
    long gaga_want = 3L * partners + 5L * pairs;
    long gaga_n = consume_sent("gaga-", gaga_want, gaga_seen, &g);
    double gaga_s = (double)(bench_now_us() - g0) / 1e6;
    long long emitted = metric_sum("sluice_record_cache_emitted_total") - emitted0;
    long long coalesced = metric_sum("sluice_record_cache_coalesced_total") - coalesced0;
    long hot_updates = count_key(index_topic, hot);
    rd_kafka_destroy(rk);

    printf("## dialogs_bench (3 instances, %d partitions, release build)\n\n", PARTITIONS);
    printf("| measurement | n | throughput/s | p50 ms | p99 ms | failures |\n");
    printf("| --- | --- | --- | --- | --- | --- |\n");
    printf(
        "| send via HTTP (%d client threads, random instance) | %zu | %.0f | %.1f | %.1f | %d |\n",
        threads, http_n, (double)http_n / http_s, http_p50, http_p99, failures);
    printf("| send via Kafka command -> MessageSent (read_committed) | %ld | %.0f | %.1f | %.1f | "
           "%ld |\n",
           kafka_seen_n, kafka_s > 0 ? (double)kafka_seen_n / kafka_s : 0, kafka_p50, kafka_p99,
           kafka_sends - kafka_seen_n);
    printf("| list, owner instance (local), 20 messages | %d | - | %.2f | %.2f | %d |\n", lists,
           local_p50, local_p99, list_failures);
    printf("| list, other instance (routed, one hop) | %d | - | %.2f | %.2f | |\n\n", lists,
           routed_p50, routed_p99);
    printf("Lady Gaga: %d partners x 3 + %d pairs x 5 = %ld messages (%ld seen) in %.1f s\n\n",
           partners, pairs, gaga_want, gaga_n, gaga_s);
    printf("| partition | messages | hot user's |\n| --- | --- | --- |\n");
    long max = 0;
    for (int p = 0; p < PARTITIONS; p++) {
        printf("| %d | %ld | %ld |\n", p, g.per_partition[p], g.hot_per_partition[p]);
        if (g.per_partition[p] > max)
            max = g.per_partition[p];
    }
    printf("\nmax/mean partition load: %.2f; hot user's index updates: %ld for %d messages; "
           "record cache: %lld emitted, %lld coalesced\n",
           (double)max / ((double)gaga_want / PARTITIONS), hot_updates, 3 * partners, emitted,
           coalesced);
    bench_cluster_stop(&cluster);
    free(partner_ids);
    free(pair_ids);
    free(senders);
    free(http_latency);
    free(kl.latency_us);
    free(local);
    free(routed);
    sl_jwt_keys_destroy(keys);
    fprintf(stderr, "bench: logs and state in %s\n", dir);
    return 0;
}
