/*
 * bench_engine: the engine benchmark behind `make bench`. On the broker in
 * SLUICE_TEST_KAFKA_BOOTSTRAP (scripts/harness starts one), in one run on one
 * machine, it measures records/s of
 *
 *   (a)  bench/passthrough: raw librdkafka, transactional consume -> produce,
 *        one output record per input record (the baseline);
 *   (a3) the same with three outputs per input record: the output volume of
 *        the counter app (echo + aggregate + changelog), for reference;
 *   (b)  the counter app (tests/apps/counter, release build) under
 *        exactly_once_v2;
 *   (c)  the counter app under at_least_once;
 *   (k)  the Kafka Streams twin of the counter app (bench/peers/kafka-streams,
 *        --peer DIR), record cache off (statestore.cache.max.bytes=0);
 *   (kc) the twin with Kafka Streams' default record cache (10 MiB);
 *
 * and the restore rate of a fresh counter instance (empty state dir) from
 *
 *   (r1) the changelog run (b) wrote (one record per input record, --keys
 *        distinct keys, in transactions);
 *   (r2) a changelog of --restore-records distinct keys produced straight
 *        into <app>-agg-changelog;
 *   (r3) the changelog of (r2) again, with restore.batch.records=1000000
 *        (the default is 10000): how restore time depends on the engine's
 *        per-iteration slice;
 *   (rk) the changelog run (k) wrote, restored by a fresh twin instance (its
 *        state dir deleted): fork to RUNNING, as (r1) is fork to /readyz;
 *
 * with each process's peak RSS (VmHWM) and CPU time, the broker's CPU time
 * and the machine's busy and steal time over the same interval.
 *
 * usage: bench_engine [--records N] [--restore-records N] [--partitions P]
 *                     [--keys K] [--runs a,a3,b,c,k,kc,r1,r2,r3,rk]
 *                     [--rounds R] [--peer DIR] [--build DIR] [--label TEXT]
 *                     [--timeout-s S] [--keep]
 *
 * How a processing run is timed. The input (N records, keys k0..k<K-1>,
 * values per-key sequence numbers) is produced by an idempotent producer
 * before any timing starts, so a run is pure processing. Each run reads it
 * from the beginning in its own consumer group (its own application.id).
 * The clock starts when the process is forked and stops when the group's
 * committed offsets (rd_kafka_committed, polled every 50 ms) reach the end
 * of every input partition: "wall" includes start-up (group join,
 * init_transactions, topic checks). "steady" starts at the first commit
 * seen and counts only the records committed after it, which leaves
 * start-up out. "second half" starts at the first poll that sees at least
 * half of the input committed and counts the records committed after it,
 * with the process's and the broker's CPU over the same interval: a warm
 * process (JIT-compiled, caches and connections up) on the same footing for
 * every contender, since every one of them is watched the same way, through
 * its group's committed offsets. The processing runs are repeated --rounds
 * times (3), each round in its own groups, in alternating order
 * (a a3 b c k kc, then kc k c b a3 a), and the ratios are those of the
 * medians: on a shared, noisy machine a single run says little.
 *
 * How a restore run is timed. The clock starts at fork and stops when
 * GET /readyz answers 200 (every task restored), polled every 50 ms; the
 * engine reports restored_records there (the twin answers the same /readyz,
 * 200 once Kafka Streams is RUNNING). The engine also logs each task's
 * restore time ("task data_P running (restored N records in M ms)"); the
 * tasks restore concurrently, so the largest M is the restore's own wall
 * time, and restored / max M is the headline restore rate.
 *
 * Every wait has a deadline (--timeout-s per run), SIGINT/SIGTERM stop the
 * benchmark, and every child is stopped (SIGTERM, then SIGKILL) before it
 * exits; children also get PR_SET_PDEATHSIG so a killed driver leaves none
 * behind. Timings are reported, never asserted: the exit status is 0 when
 * every run finished, whatever the numbers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/support/benchutil.h"
#include "processor/kafka/admin.h"
#include "processor/kafka/client.h"

#define MAX_PARTITIONS  256
#define MAX_CHILDREN    4
#define MAX_TOPICS      64
#define MAX_ARGS        40
#define ADMIN_TIMEOUT   30000
#define STOP_TIMEOUT_MS 60000
#define NAME_SIZE       200
#define MAX_RESULTS     64
#define MAX_ROUNDS      10

static void stderr_log(void *opaque, sl_log_level level, const char *component, const char *line) {
    (void)opaque;
    fprintf(stderr, "bench %s %s: %s\n", sl_log_level_name(level), component, line);
}

static const sl_logger logger = {.fn = stderr_log, .opaque = NULL, .level = SL_LOG_WARN};

/* ------------------------------------------------------------------------ */
/* Options and state                                                         */

typedef struct options {
    long long records, restore_records, timeout_s;
    long long partitions, keys, rounds;
    char runs[64];
    char peer[PATH_MAX];         /* --peer DIR: the twin's Maven project, built */
    bench_common_options common; /* --build, --label, --keep */
} options;

/* One measured run of any kind; fields that do not apply stay negative. */
typedef struct result {
    char id[8];
    int round; /* processing runs: 1..rounds; restores: 0 */
    char what[96];
    bool ok;
    long long records;    /* processed (committed) or restored */
    double wall_s;        /* fork -> done */
    double steady_s;      /* first commit seen -> done (processing) */
    long long steady_n;   /* records committed in steady_s */
    double restore_s;     /* restore: max per-task restore time (engine log) */
    long long hwm_kib;    /* peak RSS */
    double cpu_s;         /* the process's user + system CPU */
    double broker_cpu_s;  /* the broker's user + system CPU, same interval */
    double busy_cores;    /* machine: average busy cores over the interval */
    double steal_pct;     /* machine: steal time, % of all CPU time */
    long long commits;    /* transactions or offset commits: /readyz, or the passthrough's line */
    long long records_in; /* engine records_in (from /readyz) */
    double half_s;        /* processing: first poll with >= half committed -> done */
    long long half_n;     /* records committed in half_s */
    double half_cpu_s;    /* the process's CPU over half_s */
    double half_broker_cpu_s;
} result;

typedef struct bench {
    options opt;
    const char *bootstrap;
    char prefix[64];
    char work_dir[64];
    char input[NAME_SIZE];
    int64_t input_end[MAX_PARTITIONS];
    rd_kafka_t *admin;
    pid_t children[MAX_CHILDREN];
    char *topics[MAX_TOPICS]; /* created by us or by the engine, deleted at the end */
    int n_topics;
    pid_t broker_pid; /* 0 if unknown */
    long clock_ticks;
    result results[MAX_RESULTS];
    int n_results;
    double produce_s, changelog_produce_s;
    char eos_group[NAME_SIZE];  /* application.id of the first finished run (b) */
    char twin_group[NAME_SIZE]; /* application.id of the first finished run (k) */
    int64_t twin_stopped_us;    /* when that run's process was stopped */
    char java[PATH_MAX];        /* java on PATH, for the twin */
} bench;

static bool want_run(const bench *b, const char *id) {
    char list[sizeof(b->opt.runs) + 2];
    char needle[16];
    return bench_fmt(list, sizeof(list), ",%s,", b->opt.runs) &&
           bench_fmt(needle, sizeof(needle), ",%s,", id) && strstr(list, needle) != NULL;
}

/* ------------------------------------------------------------------------ */
/* Child processes                                                           */

/* Fork and exec argv[0] with stdout and stderr appended to log_path, in a
 * free slot of b->children. */
static pid_t spawn(bench *b, char *const argv[], const char *log_path) {
    int slot = -1;
    for (int i = 0; i < MAX_CHILDREN && slot < 0; i++)
        if (!b->children[i])
            slot = i;
    if (slot < 0) {
        fprintf(stderr, "bench: too many children\n");
        return -1;
    }
    pid_t pid = bench_spawn(argv, log_path);
    if (pid > 0)
        b->children[slot] = pid;
    return pid;
}

static void forget_child(bench *b, pid_t pid) {
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (b->children[i] == pid)
            b->children[i] = 0;
}

/* Non-blocking: true if the child exited (status and usage filled). */
static bool child_exited(bench *b, pid_t pid, int *status, struct rusage *usage) {
    pid_t got = wait4(pid, status, WNOHANG, usage);
    if (got == pid) {
        forget_child(b, pid);
        return true;
    }
    return false;
}

/* Send `sig`, wait up to timeout_ms, then SIGKILL. Returns the exit code, or
 * -1 if it died by a signal or had to be killed. */
static int child_stop(bench *b, pid_t pid, int sig, int timeout_ms, struct rusage *usage) {
    int status = 0;
    if (pid <= 0) /* kill(-1) or kill(0) would reach far more than our child */
        return -1;
    if (kill(pid, sig) != 0 && errno != ESRCH)
        fprintf(stderr, "bench: kill %d: %s\n", (int)pid, strerror(errno));
    for (int64_t deadline = bench_now_us() + (int64_t)timeout_ms * 1000;
         bench_now_us() < deadline;) {
        if (child_exited(b, pid, &status, usage))
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        bench_sleep_ms(20);
    }
    fprintf(stderr, "bench: process %d did not stop within %d ms: SIGKILL\n", (int)pid, timeout_ms);
    kill(pid, SIGKILL);
    if (wait4(pid, &status, 0, usage) == pid)
        forget_child(b, pid);
    return -1;
}

static void stop_all_children(bench *b) {
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (b->children[i]) {
            struct rusage usage;
            child_stop(b, b->children[i], SIGTERM, 10000, &usage);
        }
}

/* ------------------------------------------------------------------------ */
/* HTTP: GET /readyz of a counter instance                                   */

/* GET http://127.0.0.1:port/path with 2 s socket timeouts. Returns the
 * status (or -1) and copies at most body_size-1 bytes of the body. */
static int http_get(int port, const char *path, char *body, size_t body_size) {
    char buf[16384];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int status = -1;
    size_t have = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
        goto done;
    int len = snprintf(buf, sizeof(buf),
                       "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    if (len < 0 || (size_t)len >= sizeof(buf) || write(fd, buf, (size_t)len) != len)
        goto done;
    for (ssize_t n;
         have < sizeof(buf) - 1 && (n = read(fd, buf + have, sizeof(buf) - 1 - have)) > 0;)
        have += (size_t)n;
    buf[have] = '\0';
    status = bench_http_response(buf, have, body, body_size);
done:
    close(fd);
    return status;
}

typedef struct engine_stats {
    long long restored_records, records_in, records_dlq, commits;
} engine_stats;

/* GET /readyz: its status, and the engine's counters (-1 if absent). */
static int readyz(int port, engine_stats *stats) {
    char body[4096] = "";
    stats->restored_records = stats->records_in = stats->records_dlq = stats->commits = -1;
    int status = http_get(port, "/readyz", body, sizeof(body));
    if (status != 200 && status != 503)
        return status;
    json_t *root = json_loads(body, 0, NULL);
    json_t *engine = json_object_get(root, "engine");
    struct {
        const char *name;
        long long *into;
    } fields[] = {{"restored_records", &stats->restored_records},
                  {"records_in", &stats->records_in},
                  {"records_dlq", &stats->records_dlq},
                  {"commits", &stats->commits}};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        json_t *v = json_object_get(engine, fields[i].name);
        if (json_is_integer(v))
            *fields[i].into = (long long)json_integer_value(v);
    }
    json_decref(root);
    return status;
}

/* ------------------------------------------------------------------------ */
/* Kafka                                                                     */

static rd_kafka_t *new_client(const bench *b, rd_kafka_type_t type, const char *const *settings) {
    char errstr[512];
    rd_kafka_conf_t *conf =
        sl_kafka_conf_new(type, b->bootstrap, NULL, &logger, errstr, sizeof(errstr));
    if (!conf) {
        fprintf(stderr, "bench: %s\n", errstr);
        return NULL;
    }
    for (const char *const *s = settings; s && s[0]; s += 2)
        if (sl_kafka_conf_set(conf, s[0], s[1], errstr, sizeof(errstr))) {
            fprintf(stderr, "bench: %s\n", errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bench: cannot create Kafka client: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Remember a topic name for deletion at the end. */
static void track_topic(bench *b, const char *name) {
    if (b->n_topics < MAX_TOPICS) {
        b->topics[b->n_topics] = strdup(name);
        if (b->topics[b->n_topics])
            b->n_topics++;
    }
}

static bool create_topic(bench *b, const char *name, bool compacted) {
    static const char *const compact[] = {"cleanup.policy", "compact", NULL};
    sl_topic_spec spec = {.name = name,
                          .partitions = (int)b->opt.partitions,
                          .replication_factor = -1,
                          .configs = compacted ? compact : NULL};
    char errstr[512];
    track_topic(b, name);
    if (sl_admin_ensure_topic(b->admin, &spec, ADMIN_TIMEOUT, errstr, sizeof(errstr))) {
        fprintf(stderr, "bench: create topic %s: %s\n", name, errstr);
        return false;
    }
    return true;
}

static void delete_topics(bench *b) {
    if (b->n_topics == 0 || !b->admin)
        return;
    rd_kafka_DeleteTopic_t *del[MAX_TOPICS];
    for (int i = 0; i < b->n_topics; i++)
        del[i] = rd_kafka_DeleteTopic_new(b->topics[i]);
    rd_kafka_queue_t *queue = rd_kafka_queue_new(b->admin);
    rd_kafka_AdminOptions_t *admin_options =
        rd_kafka_AdminOptions_new(b->admin, RD_KAFKA_ADMIN_OP_DELETETOPICS);
    char errstr[256];
    if (queue && admin_options &&
        rd_kafka_AdminOptions_set_request_timeout(admin_options, ADMIN_TIMEOUT, errstr,
                                                  sizeof(errstr)) == 0) {
        rd_kafka_DeleteTopics(b->admin, del, (size_t)b->n_topics, admin_options, queue);
        rd_kafka_event_t *event = rd_kafka_queue_poll(queue, ADMIN_TIMEOUT + 5000);
        if (!event)
            fprintf(stderr, "bench: deleting the benchmark's topics timed out\n");
        else if (rd_kafka_event_error(event))
            fprintf(stderr, "bench: deleting topics: %s\n", rd_kafka_event_error_string(event));
        if (event)
            rd_kafka_event_destroy(event);
    }
    if (admin_options)
        rd_kafka_AdminOptions_destroy(admin_options);
    if (queue)
        rd_kafka_queue_destroy(queue);
    rd_kafka_DeleteTopic_destroy_array(del, (size_t)b->n_topics);
    for (int i = 0; i < b->n_topics; i++)
        free(b->topics[i]);
    b->n_topics = 0;
}

/* End offsets of every partition of `topic` into ends[]; their sum. -1 on
 * error. */
static long long topic_end(bench *b, const char *topic, int64_t *ends) {
    long long sum = 0;
    for (int p = 0; p < b->opt.partitions; p++) {
        int64_t low, high;
        rd_kafka_resp_err_t code =
            rd_kafka_query_watermark_offsets(b->admin, topic, p, &low, &high, ADMIN_TIMEOUT);
        if (code) {
            fprintf(stderr, "bench: watermarks of %s [%d]: %s\n", topic, p, rd_kafka_err2str(code));
            return -1;
        }
        if (ends)
            ends[p] = high;
        sum += high;
    }
    return sum;
}

typedef void make_record_fn(long long i, const options *opt, char *key, size_t key_size,
                            int *key_len, char *value, size_t value_size, int *value_len);

/* Input: key k<i mod K>, value the per-key sequence number i / K. */
static void input_record(long long i, const options *opt, char *key, size_t key_size, int *key_len,
                         char *value, size_t value_size, int *value_len) {
    *key_len = snprintf(key, key_size, "k%lld", i % opt->keys);
    *value_len = snprintf(value, value_size, "%lld", i / opt->keys);
}

/* Changelog of the aggregate store: distinct keys, values "count,sum,min". */
static void changelog_record(long long i, const options *opt, char *key, size_t key_size,
                             int *key_len, char *value, size_t value_size, int *value_len) {
    (void)opt;
    *key_len = snprintf(key, key_size, "r%lld", i);
    *value_len = snprintf(value, value_size, "1,%lld,%lld", i, i);
}

/* Produce n records with an idempotent producer (murmur2 by key) and wait
 * until every one is acknowledged. Returns the seconds it took, -1 on
 * failure. */
static double produce(bench *b, const char *topic, long long n, make_record_fn *make) {
    static const char *const settings[] = {"enable.idempotence", "true", "linger.ms", "20", NULL};
    rd_kafka_t *producer = new_client(b, RD_KAFKA_PRODUCER, settings);
    if (!producer)
        return -1;
    int64_t started = bench_now_us();
    bool ok = true;
    for (long long i = 0; ok && i < n && !bench_stop_requested; i++) {
        char key[32], value[64];
        int key_len, value_len;
        make(i, &b->opt, key, sizeof(key), &key_len, value, sizeof(value), &value_len);
        for (int attempt = 0;; attempt++) {
            rd_kafka_resp_err_t code = rd_kafka_producev(
                producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, (size_t)key_len),
                RD_KAFKA_V_VALUE(value, (size_t)value_len),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (!code)
                break;
            if (code != RD_KAFKA_RESP_ERR__QUEUE_FULL || attempt > 6000) {
                fprintf(stderr, "bench: produce to %s: %s\n", topic, rd_kafka_err2str(code));
                ok = false;
                break;
            }
            rd_kafka_poll(producer, 10);
        }
    }
    rd_kafka_resp_err_t code = rd_kafka_flush(producer, 120000);
    if (code) {
        fprintf(stderr, "bench: flush to %s: %s\n", topic, rd_kafka_err2str(code));
        ok = false;
    }
    rd_kafka_destroy(producer);
    double took = (double)(bench_now_us() - started) / 1e6;
    long long end = ok ? topic_end(b, topic, NULL) : -1;
    if (ok && end != n) {
        fprintf(stderr, "bench: %s holds %lld records, expected %lld\n", topic, end, n);
        ok = false;
    }
    return ok && !bench_stop_requested ? took : -1;
}

/* Sum of the group's committed offsets on the input; *at_end once every
 * partition's committed offset reached its end. false if the coordinator
 * did not answer (try again). */
static bool group_progress(bench *b, rd_kafka_t *checker, long long *sum, bool *at_end) {
    rd_kafka_topic_partition_list_t *list =
        rd_kafka_topic_partition_list_new((int)b->opt.partitions);
    for (int p = 0; p < b->opt.partitions; p++)
        rd_kafka_topic_partition_list_add(list, b->input, p);
    bool ok = rd_kafka_committed(checker, list, 5000) == 0;
    *sum = 0;
    *at_end = ok;
    for (int i = 0; ok && i < list->cnt; i++) {
        int64_t committed = list->elems[i].offset < 0 ? 0 : list->elems[i].offset;
        *sum += committed;
        *at_end &= committed >= b->input_end[list->elems[i].partition];
    }
    rd_kafka_topic_partition_list_destroy(list);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Runs                                                                      */

typedef struct argv_builder {
    char store[MAX_ARGS][PATH_MAX];
    char *argv[MAX_ARGS + 1];
    int n;
    bool ok;
} argv_builder;

static void arg(argv_builder *a, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void arg(argv_builder *a, const char *format, ...) {
    if (a->n >= MAX_ARGS) {
        a->ok = false;
        return;
    }
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(a->store[a->n], sizeof(a->store[0]), format, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(a->store[0]))
        a->ok = false;
    a->argv[a->n] = a->store[a->n];
    a->argv[++a->n] = NULL;
}

/* The counter app's command line for application `app` on `input`. */
static void counter_args(const bench *b, argv_builder *a, const char *app, const char *input,
                         const char *guarantee, const char *state_dir, int port,
                         const char *extra_set) {
    a->n = 0;
    a->ok = true;
    arg(a, "%s/tests/apps/counter", b->opt.common.build);
    arg(a, "--input");
    arg(a, "%s", input);
    arg(a, "--echo");
    arg(a, "%s.echo", app);
    arg(a, "--agg");
    arg(a, "%s.agg", app);
    arg(a, "--set");
    arg(a, "application.id=%s", app);
    arg(a, "--set");
    arg(a, "processing.guarantee=%s", guarantee);
    arg(a, "--set");
    arg(a, "bootstrap.servers=%s", b->bootstrap);
    arg(a, "--set");
    arg(a, "state.dir=%s", state_dir);
    arg(a, "--set");
    arg(a, "http.port=%d", port);
    if (extra_set) {
        arg(a, "--set");
        arg(a, "%s", extra_set);
    }
}

/* The Kafka Streams twin's command line (bench/peers/kafka-streams): plain
 * `java -cp classes:lib/(all jars)`, no JVM flags, so the JVM runs with its defaults
 * as the counter runs with the engine's. `cache` is "on" or "off". */
static void twin_args(const bench *b, argv_builder *a, const char *app, const char *input,
                      const char *state_dir, int port, const char *cache) {
    a->n = 0;
    a->ok = true;
    arg(a, "%s", b->java);
    arg(a, "-cp");
    arg(a, "%s/target/classes:%s/target/lib/*", b->opt.peer, b->opt.peer);
    arg(a, "dev.sluice.peer.Counter");
    arg(a, "--bootstrap");
    arg(a, "%s", b->bootstrap);
    arg(a, "--application-id");
    arg(a, "%s", app);
    arg(a, "--input");
    arg(a, "%s", input);
    arg(a, "--echo");
    arg(a, "%s.echo", app);
    arg(a, "--agg");
    arg(a, "%s.agg", app);
    arg(a, "--dlq");
    arg(a, "%s-dlq", app);
    arg(a, "--state-dir");
    arg(a, "%s", state_dir);
    arg(a, "--port");
    arg(a, "%d", port);
    arg(a, "--cache");
    arg(a, "%s", cache);
}

static void machine_delta(const bench *b, const bench_cpu_sample *before, long long broker_before,
                          double seconds, result *r) {
    bench_cpu_sample after = bench_machine_cpu();
    long long total = after.total - before->total;
    long long idle = after.idle - before->idle;
    if (total > 0 && seconds > 0) {
        /* busy ticks / ticks per second / seconds = average busy cores */
        r->busy_cores = (double)(total - idle) / (double)b->clock_ticks / seconds;
        r->steal_pct = 100.0 * (double)(after.steal - before->steal) / (double)total;
    }
    long long broker_after = b->broker_pid ? bench_proc_ticks(b->broker_pid) : -1;
    if (broker_before >= 0 && broker_after >= 0)
        r->broker_cpu_s = (double)(broker_after - broker_before) / (double)b->clock_ticks;
}

/* A fresh result slot, or NULL when every slot is taken. */
static result *new_result(bench *b, const char *id, int round, const char *what) {
    if (b->n_results >= MAX_RESULTS) {
        fprintf(stderr, "bench: more than %d runs\n", MAX_RESULTS);
        return NULL;
    }
    result *r = &b->results[b->n_results++];
    memset(r, 0, sizeof(*r));
    bench_fmt(r->id, sizeof(r->id), "%s", id);
    bench_fmt(r->what, sizeof(r->what), "%s", what);
    r->round = round;
    r->records = r->steady_n = r->hwm_kib = r->commits = r->records_in = r->half_n = -1;
    r->wall_s = r->steady_s = r->restore_s = r->cpu_s = r->broker_cpu_s = r->busy_cores =
        r->steal_pct = r->half_s = r->half_cpu_s = r->half_broker_cpu_s = -1;
    return r;
}

/* The commit count the passthrough printed ("..., N commits, ..."), or -1. */
static long long logged_commits(const char *log_path) {
    FILE *file = fopen(log_path, "r");
    if (!file)
        return -1;
    char line[1024];
    long long commits = -1;
    while (fgets(line, sizeof(line), file)) {
        const char *end = strstr(line, " commits, ");
        if (strncmp(line, "passthrough: ", 13) != 0 || !end)
            continue;
        const char *start = end;
        while (start > line && start[-1] >= '0' && start[-1] <= '9')
            start--;
        char digits[24];
        if (start < end && (size_t)(end - start) < sizeof(digits)) {
            memcpy(digits, start, (size_t)(end - start));
            digits[end - start] = '\0';
            if (!bench_parse_ll(digits, 0, INT64_MAX, &commits))
                commits = -1;
        }
    }
    fclose(file);
    return commits;
}

/* The log <work_dir>/<name>.log and the fresh state directory
 * <work_dir>/<name> of one run (log_path and state_dir are PATH_MAX bytes),
 * and an empty command line for it: the caller frees it. NULL when the
 * directory cannot be made (after saying so) or out of memory. */
static argv_builder *prepare_run(const bench *b, const char *name, char *log_path,
                                 char *state_dir) {
    state_dir[0] = '\0';
    if (!bench_fmt(log_path, PATH_MAX, "%s/%s.log", b->work_dir, name) ||
        !bench_fmt(state_dir, PATH_MAX, "%s/%s", b->work_dir, name) ||
        mkdir(state_dir, 0755) != 0) {
        fprintf(stderr, "bench: cannot prepare %s\n", state_dir);
        return NULL;
    }
    return calloc(1, sizeof(argv_builder));
}

/* A processing run: passthrough (n_outputs > 0), the counter app
 * (guarantee != NULL) or, when twin_cache is not NULL, the Kafka Streams
 * twin (exactly_once_v2, its record cache "on" or "off"), from the
 * beginning of the input in group `group`, until the group's committed
 * offsets reach the input's end. */
static bool run_processing(bench *b, const char *id, int round, const char *what, const char *group,
                           int n_outputs, const char *guarantee, const char *twin_cache) {
    result *r = new_result(b, id, round, what);
    char log_path[PATH_MAX], state_dir[PATH_MAX], topic[NAME_SIZE];
    argv_builder *a = r ? prepare_run(b, group, log_path, state_dir) : NULL;
    if (!a)
        return false;
    int port = -1;
    if (n_outputs > 0) {
        a->ok = true;
        arg(a, "%s/bench/passthrough", b->opt.common.build);
        arg(a, "--bootstrap");
        arg(a, "%s", b->bootstrap);
        arg(a, "--input");
        arg(a, "%s", b->input);
        arg(a, "--group");
        arg(a, "%s", group);
        arg(a, "--records");
        arg(a, "%lld", b->opt.records);
        arg(a, "--timeout-s");
        arg(a, "%lld", b->opt.timeout_s);
        for (int o = 0; o < n_outputs; o++) {
            if (!bench_fmt(topic, sizeof(topic), "%s.out%d", group, o) ||
                !create_topic(b, topic, false))
                goto fail;
            arg(a, "--output");
            arg(a, "%s", topic);
        }
    } else {
        /* The twin's dead-letter topic is its sink, which Kafka Streams
         * does not create; the engine creates its own. */
        const char *suffixes[] = {".echo", ".agg", "-dlq"};
        for (int i = 0; i < (twin_cache ? 3 : 2); i++)
            if (!bench_fmt(topic, sizeof(topic), "%s%s", group, suffixes[i]) ||
                !create_topic(b, topic, false))
                goto fail;
        /* The engine (or Kafka Streams) creates these; track them for
         * deletion. */
        if (bench_fmt(topic, sizeof(topic), "%s-agg-changelog", group))
            track_topic(b, topic);
        if (!twin_cache && bench_fmt(topic, sizeof(topic), "%s-dlq", group))
            track_topic(b, topic);
        port = bench_free_port();
        if (twin_cache)
            twin_args(b, a, group, b->input, state_dir, port, twin_cache);
        else
            counter_args(b, a, group, b->input, guarantee, state_dir, port, NULL);
    }
    if (!a->ok) {
        fprintf(stderr, "bench: command line of %s too long\n", id);
        goto fail;
    }
    /* The counter app's engine commits in the group of its source "data"
     * (<application.id>-data); the passthrough and the twin in `group`. */
    char committed_group[NAME_SIZE];
    if (!bench_fmt(committed_group, sizeof(committed_group),
                   n_outputs > 0 || twin_cache ? "%s" : "%s-data", group))
        goto fail;
    /* read_uncommitted: OffsetFetch without require_stable. The answer is
     * still only committed offsets (a transaction's offsets count once it
     * commits), but it comes at once instead of being retried while the
     * group has a transaction open, which is nearly always. */
    const char *const checker_settings[] = {"group.id", committed_group, "isolation.level",
                                            "read_uncommitted", NULL};
    rd_kafka_t *checker = new_client(b, RD_KAFKA_CONSUMER, checker_settings);
    if (!checker)
        goto fail;

    fprintf(stderr, "bench: %s %s ...\n", id, what);
    bench_cpu_sample machine_before = bench_machine_cpu();
    long long broker_before = b->broker_pid ? bench_proc_ticks(b->broker_pid) : -1;
    int64_t started = bench_now_us(), first_commit = 0, done_at = 0, half_at = 0;
    long long first_commit_sum = 0, ticks = -1, half_sum = 0, half_ticks = -1;
    long long half_broker_ticks = -1;
    pid_t pid = spawn(b, a->argv, log_path);
    bool exited = false, failed = pid < 0;
    int status = 0;
    struct rusage usage;
    memset(&usage, 0, sizeof(usage));
    int64_t deadline = started + b->opt.timeout_s * 1000000;
    while (!failed && !done_at && !bench_stop_requested) {
        if (bench_now_us() > deadline) {
            fprintf(stderr, "bench: %s did not finish within %lld s\n", id, b->opt.timeout_s);
            failed = true;
            break;
        }
        long long sum = 0;
        bool at_end = false;
        if (group_progress(b, checker, &sum, &at_end)) {
            if (!first_commit && sum > 0) {
                first_commit = bench_now_us();
                first_commit_sum = sum;
            }
            /* The second half: the same clock and the same CPU counters as
             * the whole run, started where the group passed half the input.
             * A half point seen at the end (the process committed it all in
             * one go) is no second half. */
            if (!half_at && !at_end && sum >= b->opt.records / 2) {
                half_at = bench_now_us();
                half_sum = sum;
                half_ticks = bench_proc_ticks(pid);
                half_broker_ticks = b->broker_pid ? bench_proc_ticks(b->broker_pid) : -1;
            }
            if (at_end)
                done_at = bench_now_us();
        }
        if (!exited) {
            long long hwm = bench_hwm_kib(pid), t = bench_proc_ticks(pid);
            if (hwm > r->hwm_kib)
                r->hwm_kib = hwm;
            if (t >= 0)
                ticks = t;
            exited = child_exited(b, pid, &status, &usage);
            if (exited && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
                fprintf(stderr, "bench: %s exited early (status %d)\n", id, status);
                failed = true;
            }
        }
        if (!done_at && !failed)
            bench_sleep_ms(50);
    }
    failed |= !done_at;
    if (done_at) {
        r->wall_s = (double)(done_at - started) / 1e6;
        machine_delta(b, &machine_before, broker_before, r->wall_s, r);
        r->records = b->opt.records;
        /* A first commit seen late would make "steady" a rate of the tail
         * only: report it only if it covers at least half the input. */
        if (first_commit && done_at > first_commit && first_commit_sum <= b->opt.records / 2) {
            r->steady_s = (double)(done_at - first_commit) / 1e6;
            r->steady_n = b->opt.records - first_commit_sum;
        }
    }
    if (done_at && half_at && done_at > half_at) {
        r->half_s = (double)(done_at - half_at) / 1e6;
        r->half_n = b->opt.records - half_sum;
        long long broker_now = b->broker_pid ? bench_proc_ticks(b->broker_pid) : -1;
        if (half_broker_ticks >= 0 && broker_now >= 0)
            r->half_broker_cpu_s =
                (double)(broker_now - half_broker_ticks) / (double)b->clock_ticks;
    }
    if (done_at && !twin_cache && guarantee && strcmp(guarantee, "exactly_once_v2") == 0 &&
        !b->eos_group[0])
        bench_fmt(b->eos_group, sizeof(b->eos_group), "%s", group);
    if (done_at && twin_cache && strcmp(twin_cache, "off") == 0 && !b->twin_group[0])
        bench_fmt(b->twin_group, sizeof(b->twin_group), "%s", group);
    if (!exited && guarantee && pid > 0) {
        engine_stats stats;
        if (readyz(port, &stats) >= 0) {
            r->commits = stats.commits;
            r->records_in = stats.records_in;
        }
        long long hwm = bench_hwm_kib(pid), t = bench_proc_ticks(pid);
        if (hwm > r->hwm_kib)
            r->hwm_kib = hwm;
        if (t >= 0)
            ticks = t; /* CPU up to now, not the shutdown */
        int code = child_stop(b, pid, SIGTERM, STOP_TIMEOUT_MS, &usage);
        if (code != 0 && done_at) {
            fprintf(stderr, "bench: %s did not stop cleanly (exit %d)\n", id, code);
            failed = true;
        }
    } else if (!exited && pid > 0) {
        /* The passthrough exits by itself after its last commit. */
        for (int64_t until = bench_now_us() + STOP_TIMEOUT_MS * 1000LL;
             !exited && bench_now_us() < until;) {
            exited = child_exited(b, pid, &status, &usage);
            if (!exited)
                bench_sleep_ms(20);
        }
        if (!exited)
            child_stop(b, pid, SIGTERM, 10000, &usage);
        else if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
            failed = true;
    }
    if (n_outputs > 0) {
        /* Its whole life, from wait4. */
        r->cpu_s = (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                   (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
        if (usage.ru_maxrss > r->hwm_kib)
            r->hwm_kib = usage.ru_maxrss;
    } else if (ticks >= 0) {
        r->cpu_s = (double)ticks / (double)b->clock_ticks;
    }
    /* The passthrough's second half ends with its exit (it stops itself
     * right after its last commit), the others' at the last sample before
     * the SIGTERM. */
    if (r->half_s > 0 && half_ticks >= 0 && r->cpu_s >= 0)
        r->half_cpu_s = r->cpu_s - (double)half_ticks / (double)b->clock_ticks;
    if (n_outputs > 0)
        r->commits = logged_commits(log_path);
    if (twin_cache && strcmp(b->twin_group, group) == 0)
        b->twin_stopped_us = bench_now_us();
    rd_kafka_destroy(checker);
    r->ok = !failed && !bench_stop_requested;
    if (!r->ok)
        bench_dump_log(log_path, 30);
    free(a);
    return r->ok;
fail:
    free(a);
    return false;
}

/* The longest per-task restore time the engine logged, in ms, and the sum of
 * the records it says the tasks restored. -1 if no task logged one. */
static long long logged_restore_ms(const char *log_path, long long *records) {
    FILE *file = fopen(log_path, "r");
    if (!file)
        return -1;
    char line[4096];
    long long max_ms = -1;
    *records = 0;
    static const char marker[] = "running (restored ";
    while (fgets(line, sizeof(line), file)) {
        char *p = strstr(line, marker);
        if (!p)
            continue;
        char *end;
        errno = 0;
        long long n = strtoll(p + sizeof(marker) - 1, &end, 10);
        if (errno || strncmp(end, " records in ", 12) != 0)
            continue;
        long long ms = strtoll(end + 12, &end, 10);
        if (errno || strncmp(end, " ms", 3) != 0)
            continue;
        *records += n;
        if (ms > max_ms)
            max_ms = ms;
    }
    fclose(file);
    return max_ms;
}

/* A fresh counter instance (empty state dir) of application `app` on
 * `input`, or a fresh twin's (`twin`): time until /readyz answers 200
 * (every task restored; for the twin, Kafka Streams RUNNING). */
static bool run_restore(bench *b, const char *id, const char *what, const char *app,
                        const char *input, const char *extra_set, bool twin) {
    result *r = new_result(b, id, 0, what);
    char name[NAME_SIZE + 16], log_path[PATH_MAX], state_dir[PATH_MAX];
    argv_builder *a = r && bench_fmt(name, sizeof(name), "%s.%s", app, id)
                          ? prepare_run(b, name, log_path, state_dir)
                          : NULL;
    if (!a)
        return false;
    int port = bench_free_port();
    if (twin)
        twin_args(b, a, app, input, state_dir, port, "off");
    else
        counter_args(b, a, app, input, "exactly_once_v2", state_dir, port, extra_set);
    if (!a->ok) {
        free(a);
        return false;
    }
    fprintf(stderr, "bench: %s %s ...\n", id, what);
    bench_cpu_sample machine_before = bench_machine_cpu();
    long long broker_before = b->broker_pid ? bench_proc_ticks(b->broker_pid) : -1;
    int64_t started = bench_now_us(), ready_at = 0;
    pid_t pid = spawn(b, a->argv, log_path);
    free(a);
    bool failed = pid < 0;
    engine_stats stats = {-1, -1, -1, -1};
    struct rusage usage;
    int status;
    long long ticks = -1;
    int64_t deadline = started + b->opt.timeout_s * 1000000;
    while (!failed && !ready_at && !bench_stop_requested) {
        if (bench_now_us() > deadline) {
            fprintf(stderr, "bench: %s not ready within %lld s\n", id, b->opt.timeout_s);
            failed = true;
            break;
        }
        if (readyz(port, &stats) == 200) {
            ready_at = bench_now_us();
            break;
        }
        if (child_exited(b, pid, &status, &usage)) {
            fprintf(stderr, "bench: %s exited while restoring (status %d)\n", id, status);
            failed = true;
            pid = -1;
            break;
        }
        bench_sleep_ms(50);
    }
    if (ready_at) {
        r->wall_s = (double)(ready_at - started) / 1e6;
        machine_delta(b, &machine_before, broker_before, r->wall_s, r);
        r->records = stats.restored_records;
        r->hwm_kib = bench_hwm_kib(pid);
        ticks = bench_proc_ticks(pid);
        if (ticks >= 0)
            r->cpu_s = (double)ticks / (double)b->clock_ticks;
    }
    if (pid > 0 && child_stop(b, pid, SIGTERM, STOP_TIMEOUT_MS, &usage) != 0 && ready_at) {
        fprintf(stderr, "bench: %s did not stop cleanly\n", id);
        failed = true;
    }
    long long logged_records = 0;
    long long ms = logged_restore_ms(log_path, &logged_records);
    if (ms >= 0)
        r->restore_s = (double)ms / 1000.0;
    if (ready_at && logged_records != r->records)
        fprintf(stderr, "bench: %s: /readyz says %lld restored, the task log lines %lld\n", id,
                r->records, logged_records);
    r->ok = !failed && ready_at && !bench_stop_requested;
    if (!r->ok)
        bench_dump_log(log_path, 30);
    return r->ok;
}

/* ------------------------------------------------------------------------ */
/* Report                                                                    */

/* A table cell: the value with `decimals` decimals, or "-" if unknown. */
static void cell_f(char *buf, size_t size, double v, int decimals) {
    if (v < 0)
        bench_fmt(buf, size, "-");
    else
        bench_fmt(buf, size, "%.*f", decimals, v);
}

static void cell_ll(char *buf, size_t size, long long v) {
    if (v < 0)
        bench_fmt(buf, size, "-");
    else
        bench_fmt(buf, size, "%lld", v);
}

typedef double metric_fn(const result *r);

static double rate(const result *r) {
    return r && r->ok && r->wall_s > 0 ? (double)r->records / r->wall_s : -1;
}

static double steady_rate(const result *r) {
    return r && r->ok && r->steady_s > 0 ? (double)r->steady_n / r->steady_s : -1;
}

static double records_per_cpu_s(const result *r) {
    return r && r->ok && r->cpu_s > 0 ? (double)r->records / r->cpu_s : -1;
}

static double half_rate(const result *r) {
    return r && r->ok && r->half_s > 0 ? (double)r->half_n / r->half_s : -1;
}

/* CPU microseconds per record: over the whole run, and over the second half. */
static double cpu_us_per_record(const result *r) {
    return r && r->ok && r->cpu_s > 0 && r->records > 0 ? 1e6 * r->cpu_s / (double)r->records : -1;
}

static double half_cpu_us_per_record(const result *r) {
    return r && r->ok && r->half_cpu_s > 0 && r->half_n > 0
               ? 1e6 * r->half_cpu_s / (double)r->half_n
               : -1;
}

static double peak_rss_mib(const result *r) {
    return r && r->ok && r->hwm_kib > 0 ? (double)r->hwm_kib / 1024.0 : -1;
}

static int compare_doubles(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The median of `metric` over the finished runs `id` (-1 if none); the
 * count, minimum and maximum in *n, *min, *max when not NULL. */
static double median(const bench *b, const char *id, metric_fn *metric, int *n, double *min,
                     double *max) {
    double values[MAX_RESULTS];
    int count = 0;
    for (int i = 0; i < b->n_results; i++)
        if (strcmp(b->results[i].id, id) == 0 && metric(&b->results[i]) > 0)
            values[count++] = metric(&b->results[i]);
    if (n)
        *n = count;
    if (count == 0)
        return -1;
    qsort(values, (size_t)count, sizeof(values[0]), compare_doubles);
    if (min)
        *min = values[0];
    if (max)
        *max = values[count - 1];
    return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
}

static void print_ratio(const bench *b, const char *num, const char *den) {
    double n = median(b, num, rate, NULL, NULL, NULL), d = median(b, den, rate, NULL, NULL, NULL);
    double ns = median(b, num, steady_rate, NULL, NULL, NULL);
    double ds = median(b, den, steady_rate, NULL, NULL, NULL);
    double nh = median(b, num, half_rate, NULL, NULL, NULL);
    double dh = median(b, den, half_rate, NULL, NULL, NULL);
    if (n < 0 || d < 0)
        return;
    char wall[32] = "-", steady[32] = "-", half[32] = "-";
    bench_fmt(wall, sizeof(wall), "%.1f %%", 100.0 * n / d);
    if (ns > 0 && ds > 0)
        bench_fmt(steady, sizeof(steady), "%.1f %%", 100.0 * ns / ds);
    if (nh > 0 && dh > 0)
        bench_fmt(half, sizeof(half), "%.1f %%", 100.0 * nh / dh);
    printf("| (%s) / (%s) | %s | %s | %s |\n", num, den, wall, steady, half);
}

/* Machine cores busy with something other than the measured process and
 * the broker (other tenants, kernel writeback): the noise of the run. */
static double other_cores(const result *r) {
    if (r->busy_cores < 0 || r->cpu_s < 0 || r->wall_s <= 0)
        return -1;
    double ours = (r->cpu_s + (r->broker_cpu_s > 0 ? r->broker_cpu_s : 0)) / r->wall_s;
    return r->busy_cores > ours ? r->busy_cores - ours : 0;
}

static void report(const bench *b) {
    char date[64], model[256];
    bench_utc_now(date, sizeof(date));
    bench_machine_model(model, sizeof(model));
    printf("\n## Engine benchmark, %s\n\n", date);
    printf("- label: %s\n", b->opt.common.label ? b->opt.common.label : "-");
    printf("- machine: %ld CPUs online, %s\n", sysconf(_SC_NPROCESSORS_ONLN), model);
    printf("- input: %lld records, %lld keys, %lld partitions (produced in %.1f s, untimed)\n",
           b->opt.records, b->opt.keys, b->opt.partitions, b->produce_s);
    printf("- broker CPU measured: %s\n", b->broker_pid ? "yes" : "no (broker not found)");
    printf("\nProcessing (wall: fork to all input offsets committed; steady: first commit seen "
           "to the end; CPU: user + system; other: machine cores busy with neither the process "
           "nor the broker):\n\n");
    printf("| run | records | wall s | records/s | steady records/s | peak RSS MiB | process CPU s "
           "| records per CPU-s | broker CPU s | other cores | steal %% | commits |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < b->n_results; i++) {
        const result *r = &b->results[i];
        if (r->id[0] == 'r')
            continue;
        char c[11][32];
        cell_ll(c[0], sizeof(c[0]), r->records);
        cell_f(c[1], sizeof(c[1]), r->wall_s, 2);
        cell_f(c[2], sizeof(c[2]), rate(r), 0);
        cell_f(c[3], sizeof(c[3]), steady_rate(r), 0);
        cell_f(c[4], sizeof(c[4]), r->hwm_kib < 0 ? -1 : (double)r->hwm_kib / 1024.0, 1);
        cell_f(c[5], sizeof(c[5]), r->cpu_s, 1);
        cell_f(c[6], sizeof(c[6]), r->ok && r->cpu_s > 0 ? (double)r->records / r->cpu_s : -1, 0);
        cell_f(c[7], sizeof(c[7]), r->broker_cpu_s, 1);
        cell_f(c[8], sizeof(c[8]), other_cores(r), 2);
        cell_f(c[9], sizeof(c[9]), r->steal_pct, 1);
        cell_ll(c[10], sizeof(c[10]), r->commits);
        printf("| (%s) #%d %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r->id,
               r->round, r->what, r->ok ? "" : " **FAILED**", c[0], c[1], c[2], c[3], c[4], c[5],
               c[6], c[7], c[8], c[9], c[10]);
    }
    printf("\nSecond half (from the first poll that saw at least half of the input committed "
           "to the end: a warm process; CPU: the process's over the same interval):\n\n");
    printf("| run | records | s | records/s | process CPU s | CPU us/record | broker CPU s |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < b->n_results; i++) {
        const result *r = &b->results[i];
        if (r->id[0] == 'r')
            continue;
        char c[6][32];
        cell_ll(c[0], sizeof(c[0]), r->half_n);
        cell_f(c[1], sizeof(c[1]), r->half_s, 2);
        cell_f(c[2], sizeof(c[2]), half_rate(r), 0);
        cell_f(c[3], sizeof(c[3]), r->half_cpu_s, 2);
        cell_f(c[4], sizeof(c[4]), half_cpu_us_per_record(r), 2);
        cell_f(c[5], sizeof(c[5]), r->half_broker_cpu_s, 1);
        printf("| (%s) #%d%s | %s | %s | %s | %s | %s | %s |\n", r->id, r->round,
               r->ok ? "" : " **FAILED**", c[0], c[1], c[2], c[3], c[4], c[5]);
    }
    printf("\nMedians over the rounds:\n\n");
    printf("| run | rounds | records/s median (min - max) | steady records/s median | records per "
           "CPU-s median | CPU us/record median | second half records/s median | second half "
           "CPU us/record median | peak RSS MiB (max) |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    static const char *const ids[] = {"a", "a3", "b", "c", "k", "kc"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        int n = 0;
        double lo = 0, hi = 0, rss_lo = 0, rss_hi = -1;
        double med = median(b, ids[i], rate, &n, &lo, &hi);
        if (n == 0)
            continue;
        double steady = median(b, ids[i], steady_rate, NULL, NULL, NULL);
        double per_cpu = median(b, ids[i], records_per_cpu_s, NULL, NULL, NULL);
        double us = median(b, ids[i], cpu_us_per_record, NULL, NULL, NULL);
        double half = median(b, ids[i], half_rate, NULL, NULL, NULL);
        double half_us = median(b, ids[i], half_cpu_us_per_record, NULL, NULL, NULL);
        median(b, ids[i], peak_rss_mib, NULL, &rss_lo, &rss_hi);
        char c[6][32];
        cell_f(c[0], sizeof(c[0]), steady, 0);
        cell_f(c[1], sizeof(c[1]), per_cpu, 0);
        cell_f(c[2], sizeof(c[2]), us, 2);
        cell_f(c[3], sizeof(c[3]), half, 0);
        cell_f(c[4], sizeof(c[4]), half_us, 2);
        cell_f(c[5], sizeof(c[5]), rss_hi, 1);
        printf("| (%s) | %d | %.0f (%.0f - %.0f) | %s | %s | %s | %s | %s | %s |\n", ids[i], n, med,
               lo, hi, c[0], c[1], c[2], c[3], c[4], c[5]);
    }
    printf("\nRatios of the medians (records/s):\n\n| ratio | wall | steady | second half |\n"
           "|---|---:|---:|---:|\n");
    print_ratio(b, "b", "a");
    print_ratio(b, "c", "a");
    print_ratio(b, "b", "a3");
    print_ratio(b, "c", "a3");
    print_ratio(b, "a3", "a");
    print_ratio(b, "k", "a");
    print_ratio(b, "kc", "a");
    print_ratio(b, "b", "k");
    print_ratio(b, "b", "kc");
    for (int i = 0; i < b->n_results; i++) {
        const result *r = &b->results[i];
        if (r->ok && r->records_in >= 0 && r->records_in != r->records)
            printf("\nNote: (%s) engine records_in = %lld for %lld input records (re-processed "
                   "after an abort or rewind).\n",
                   r->id, r->records_in, r->records);
    }
    printf("\nRestore (fresh state dir; engine s: the largest per-task restore time the engine "
           "logged, the tasks restore concurrently; wall: fork to /readyz 200):\n\n");
    printf("| run | restored records | engine s | records/s (engine) | wall s | records/s (wall) | "
           "peak RSS MiB | process CPU s | records per CPU-s | broker CPU s | other cores |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < b->n_results; i++) {
        const result *r = &b->results[i];
        if (r->id[0] != 'r')
            continue;
        char c[10][32];
        cell_ll(c[0], sizeof(c[0]), r->records);
        cell_f(c[1], sizeof(c[1]), r->restore_s, 2);
        cell_f(c[2], sizeof(c[2]),
               r->ok && r->restore_s > 0 ? (double)r->records / r->restore_s : -1, 0);
        cell_f(c[3], sizeof(c[3]), r->wall_s, 2);
        cell_f(c[4], sizeof(c[4]), rate(r), 0);
        cell_f(c[5], sizeof(c[5]), r->hwm_kib < 0 ? -1 : (double)r->hwm_kib / 1024.0, 1);
        cell_f(c[6], sizeof(c[6]), r->cpu_s, 1);
        cell_f(c[7], sizeof(c[7]), r->ok && r->cpu_s > 0 ? (double)r->records / r->cpu_s : -1, 0);
        cell_f(c[8], sizeof(c[8]), r->broker_cpu_s, 1);
        cell_f(c[9], sizeof(c[9]), other_cores(r), 2);
        printf("| (%s) %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r->id, r->what,
               r->ok ? "" : " **FAILED**", c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8],
               c[9]);
    }
    printf("\n");
    fflush(stdout);
}

/* ------------------------------------------------------------------------ */
/* Main                                                                      */

static int usage(void) {
    fprintf(stderr,
            "usage: bench_engine [--records N] [--restore-records N] [--partitions P] [--keys K]\n"
            "                    [--runs a,a3,b,c,k,kc,r1,r2,r3,rk] [--rounds R]\n"
            "                    [--peer DIR] [--build DIR] [--label TEXT] [--timeout-s S]\n"
            "                    [--keep]\n"
            "Needs SLUICE_TEST_KAFKA_BOOTSTRAP (scripts/harness sets it); k, kc and rk need\n"
            "--peer bench/peers/kafka-streams, built (make bench-peer builds it).\n");
    return 2;
}

/* One of bench_engine's own options (bench_option_fn). */
static bool take_option(void *opts, const char *name, const char *value) {
    options *opt = opts;
    if (strcmp(name, "--records") == 0)
        return bench_parse_ll(value, 1000, 1000000000, &opt->records);
    if (strcmp(name, "--restore-records") == 0)
        return bench_parse_ll(value, 1000, 1000000000, &opt->restore_records);
    if (strcmp(name, "--partitions") == 0)
        return bench_parse_ll(value, 1, MAX_PARTITIONS, &opt->partitions);
    if (strcmp(name, "--rounds") == 0)
        return bench_parse_ll(value, 1, MAX_ROUNDS, &opt->rounds);
    if (strcmp(name, "--keys") == 0)
        return bench_parse_ll(value, 1, 100000000, &opt->keys);
    if (strcmp(name, "--timeout-s") == 0)
        return bench_parse_ll(value, 10, 86400, &opt->timeout_s);
    if (strcmp(name, "--runs") == 0)
        return bench_fmt(opt->runs, sizeof(opt->runs), "%s", value);
    if (strcmp(name, "--peer") == 0)
        return realpath(value, opt->peer) != NULL;
    return false;
}

static int parse_args(options *opt, int argc, char **argv) {
    opt->records = 1000000;
    opt->restore_records = 1000000;
    opt->partitions = 4;
    opt->keys = 1000;
    opt->timeout_s = 900;
    opt->rounds = 3;
    bench_fmt(opt->runs, sizeof(opt->runs), "a,a3,b,c,r1,r2,r3");
    return bench_parse_args(argc, argv, &opt->common, take_option, opt) ? 0 : usage();
}

/* `java` on PATH into buf (PATH_MAX bytes); false if there is none. */
static bool find_java(char *buf) {
    const char *path = getenv("PATH");
    char dirs[8192];
    if (!path || !bench_fmt(dirs, sizeof(dirs), "%s", path))
        return false;
    for (char *save = NULL, *dir = strtok_r(dirs, ":", &save); dir;
         dir = strtok_r(NULL, ":", &save))
        if (bench_fmt(buf, PATH_MAX, "%s/java", dir) && access(buf, X_OK) == 0)
            return true;
    return false;
}

static bool check_binaries(bench *b) {
    const char *needed[] = {"tests/apps/counter", "bench/passthrough"};
    for (size_t i = 0; i < 2; i++) {
        char path[PATH_MAX];
        if (!bench_fmt(path, sizeof(path), "%s/%s", b->opt.common.build, needed[i]) ||
            access(path, X_OK)) {
            fprintf(stderr, "bench: %s/%s is missing: run 'make VARIANT=release tests benches'\n",
                    b->opt.common.build, needed[i]);
            return false;
        }
    }
    if (!want_run(b, "k") && !want_run(b, "kc") && !want_run(b, "rk"))
        return true;
    char path[PATH_MAX];
    if (!b->opt.peer[0] ||
        !bench_fmt(path, sizeof(path), "%s/target/classes/dev/sluice/peer/Counter.class",
                   b->opt.peer) ||
        access(path, R_OK)) {
        fprintf(stderr, "bench: runs k, kc and rk need --peer DIR with the Kafka Streams twin "
                        "built in DIR/target (make bench-peer builds it)\n");
        return false;
    }
    if (!find_java(b->java)) {
        fprintf(stderr, "bench: runs k, kc and rk need java on PATH\n");
        return false;
    }
    return true;
}

/* Everything but argument parsing and cleanup. */
static bool run_all(bench *b) {
    const options *opt = &b->opt;
    if (!bench_fmt(b->input, sizeof(b->input), "%s.in", b->prefix) ||
        !create_topic(b, b->input, false))
        return false;
    fprintf(stderr, "bench: producing %lld input records to %s (untimed) ...\n", opt->records,
            b->input);
    b->produce_s = produce(b, b->input, opt->records, input_record);
    if (b->produce_s < 0 || topic_end(b, b->input, b->input_end) != opt->records)
        return false;
    bool ok = true;
    char group[NAME_SIZE];
    struct {
        const char *id, *what, *suffix;
        int outputs;
        const char *guarantee, *twin_cache;
    } runs[] = {
        {"a", "raw transactional pass-through, 1 output/record", "pt", 1, NULL, NULL},
        {"a3", "raw transactional pass-through, 3 outputs/record", "pt3", 3, NULL, NULL},
        {"b", "counter app, exactly_once_v2", "eos", 0, "exactly_once_v2", NULL},
        {"c", "counter app, at_least_once", "alos", 0, "at_least_once", NULL},
        {"k", "Kafka Streams twin, exactly_once_v2, cache off", "ks", 0, "exactly_once_v2", "off"},
        {"kc", "Kafka Streams twin, exactly_once_v2, cache on", "ksc", 0, "exactly_once_v2", "on"},
    };
    /* Rounds alternate the order (a, a3, b, c, k, kc, then kc, k, c, b, a3, a), so that
     * no contender always runs first after the input was produced or last
     * after the others warmed the broker up. */
    const size_t n_runs = sizeof(runs) / sizeof(runs[0]);
    for (int round = 1; ok && round <= opt->rounds; round++) {
        for (size_t k = 0; ok && k < n_runs; k++) {
            size_t i = round % 2 ? k : n_runs - 1 - k;
            if (!want_run(b, runs[i].id))
                continue;
            ok = bench_fmt(group, sizeof(group), "%s-%s%d", b->prefix, runs[i].suffix, round) &&
                 run_processing(b, runs[i].id, round, runs[i].what, group, runs[i].outputs,
                                runs[i].guarantee, runs[i].twin_cache);
        }
    }
    if (ok && want_run(b, "r1")) {
        /* Restore what run (b) wrote; its group committed the whole input,
         * so the fresh instance has nothing to process afterwards. */
        if (!b->eos_group[0]) {
            fprintf(stderr, "bench: r1 restores the changelog of run b: skipped without b\n");
        } else {
            ok = run_restore(b, "r1", "changelog of run (b), fresh state dir", b->eos_group,
                             b->input, NULL, false);
        }
    }
    if (ok && want_run(b, "rk")) {
        /* What run (k) wrote, restored by a fresh twin: its state dir is
         * new, as r1's is. */
        if (!b->twin_group[0]) {
            fprintf(stderr, "bench: rk restores the changelog of run k: skipped without k\n");
        } else {
            /* Kafka Streams does not leave its group when it closes (a
             * dynamic member), so a new member's first join waits until
             * the old one's session expires (session.timeout.ms, 45 s by
             * default). Wait that out, untimed: the restore is then timed
             * from a clean start, as r1's is (librdkafka leaves on close). */
            int64_t free_at = b->twin_stopped_us + 46 * 1000000LL;
            if (bench_now_us() < free_at) {
                fprintf(stderr, "bench: waiting %.0f s for run k's session to expire ...\n",
                        (double)(free_at - bench_now_us()) / 1e6);
                while (bench_now_us() < free_at && !bench_stop_requested)
                    bench_sleep_ms(200);
            }
            ok = run_restore(b, "rk", "Kafka Streams twin, changelog of run (k), fresh state dir",
                             b->twin_group, b->input, NULL, true);
        }
    }
    if (ok && (want_run(b, "r2") || want_run(b, "r3"))) {
        char app[NAME_SIZE], input[NAME_SIZE], changelog[NAME_SIZE + 32];
        ok = bench_fmt(app, sizeof(app), "%s-rst", b->prefix) &&
             bench_fmt(input, sizeof(input), "%s.in", app) &&
             bench_fmt(changelog, sizeof(changelog), "%s-agg-changelog", app);
        char topic[NAME_SIZE + 8];
        /* An empty input of its own: after restoring there is nothing to
         * process, so processing never competes with the restore. */
        ok = ok && create_topic(b, input, false) &&
             bench_fmt(topic, sizeof(topic), "%s.echo", app) && create_topic(b, topic, false) &&
             bench_fmt(topic, sizeof(topic), "%s.agg", app) && create_topic(b, topic, false) &&
             create_topic(b, changelog, true);
        if (ok && bench_fmt(topic, sizeof(topic), "%s-dlq", app))
            track_topic(b, topic);
        if (ok) {
            fprintf(stderr, "bench: producing %lld distinct-key changelog records (untimed) ...\n",
                    opt->restore_records);
            b->changelog_produce_s = produce(b, changelog, opt->restore_records, changelog_record);
            ok = b->changelog_produce_s >= 0;
        }
        char what[96];
        bench_fmt(what, sizeof(what), "%lld distinct keys, fresh state dir", opt->restore_records);
        if (want_run(b, "r2"))
            ok = ok && run_restore(b, "r2", what, app, input, NULL, false);
        /* The same restore with one big slice per loop iteration: how much
         * of the restore time is the loop's wait between slices. */
        if (want_run(b, "r3"))
            ok = ok && run_restore(b, "r3", "as (r2), restore.batch.records=1000000", app, input,
                                   "restore.batch.records=1000000", false);
    }
    return ok;
}

/* Arguments, environment, signals: 0, or the exit status. */
static int prepare(bench *b, int argc, char **argv) {
    int status = parse_args(&b->opt, argc, argv);
    if (status)
        return status;
    b->bootstrap = bench_kafka_bootstrap("make bench");
    if (!b->bootstrap || !check_binaries(b))
        return 2;
    if (!bench_catch_stop_signals()) {
        fprintf(stderr, "bench: sigaction: %s\n", strerror(errno));
        return 1;
    }
    b->clock_ticks = sysconf(_SC_CLK_TCK);
    b->broker_pid = bench_find_broker();
    return 0;
}

int main(int argc, char **argv) {
    bench *b = calloc(1, sizeof(*b));
    if (!b) {
        fprintf(stderr, "bench: out of memory\n");
        return 1;
    }
    int status = prepare(b, argc, argv);
    if (status) {
        free(b);
        return status;
    }
    bench_fmt(b->prefix, sizeof(b->prefix), "bench-%d-%lld", (int)getpid(), (long long)time(NULL));
    bench_fmt(b->work_dir, sizeof(b->work_dir), "/tmp/sluice-bench-XXXXXX");
    static const char *const admin_settings[] = {NULL};
    b->admin = new_client(b, RD_KAFKA_PRODUCER, admin_settings);
    bool work_dir_made = mkdtemp(b->work_dir) != NULL;
    bool ok = b->admin && work_dir_made;
    if (!ok)
        fprintf(stderr, "bench: cannot start (admin client or work dir)\n");
    ok = ok && run_all(b);
    stop_all_children(b);
    report(b);
    if (!b->opt.common.keep)
        delete_topics(b);
    if (b->admin)
        rd_kafka_destroy(b->admin);
    if (b->opt.common.keep)
        fprintf(stderr, "bench: topics (prefix %s), logs and state kept in %s\n", b->prefix,
                b->work_dir);
    else if (work_dir_made)
        bench_remove_tree(b->work_dir);
    if (bench_stop_requested)
        fprintf(stderr, "bench: stopped by a signal\n");
    free(b);
    return ok && !bench_stop_requested ? 0 : 1;
}
