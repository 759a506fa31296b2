/*
 * identity_bench: the identity HTTP routes under load, behind
 * `make bench-identity`. On the broker in SLUICE_TEST_KAFKA_BOOTSTRAP
 * (scripts/harness starts one) it starts two release-build `sluice run`
 * instances sharing that broker and one signing key, and measures in one run
 * on the same cores:
 *
 *   (1) raw argon2id hashes/s: sl_password_hash (OWASP: m=19456 KiB, t=2,
 *       p=1, the instances' parameters) called directly from N threads of
 *       this process, N = identity.argon2.threads x 2 instances, while the
 *       instances idle: the baseline. Measured first and last; the mean of
 *       the two is the denominator of the ratios;
 *   (2) registrations/s: POST /user/register from --clients concurrent
 *       clients, distinct e-mails, alternating between the instances;
 *   (3) logins/s: POST /login by e-mail of users registered in (2);
 *   (4) token verifications/s: POST /auth/introspect, authorized by a valid
 *       access token and introspecting that same token (two verifications
 *       of one token per request; after its first use each token is a hit
 *       of the instance's verified-token cache). GET /healthz with the same
 *       clients is the HTTP floor of this client and server;
 *   (5) p50/p99 latency of GET /user/get/{id} (existing users) from
 *       --readers paced readers (one request per --read-interval-ms each),
 *       with no other load, then while --clients clients register users
 *       (a registration storm), then with no load again.
 *
 * The instances run with identity.throttle.ip.burst = account.burst = 10000
 * and refill every 1 ms: every client here is 127.0.0.1, and the per-IP and
 * per-account limits (20 and 5 by default) would otherwise answer 429 to
 * almost all of the load. Nothing else differs from the defaults.
 *
 * Every request is a new connection (Connection: close); each has a 10 s
 * socket timeout, each phase a fixed duration (--seconds), every wait a
 * deadline. The rates count 2xx answers only, over the phase's wall time
 * (from start until the last client finished its request in flight).
 * "ok/s last 2/3" counts those completed in the window's last two thirds
 * only: with a closed loop whose bottleneck (argon2) comes before a wait,
 * the first third also counts the pipeline filling behind the bottleneck,
 * and so charges a route's extra latency as lost throughput (a window rate
 * is the bottleneck's rate times 1 - latency after it / window). Per
 * phase the report gives the CPU time of the two instances, the broker and
 * this driver, and the machine's other busy cores: the noise of a shared
 * machine. Timings are reported, never asserted.
 *
 * No password or token is printed: the benchmark's password is a constant
 * of this file and tokens stay in memory.
 *
 * usage: identity_bench [--seconds S] [--clients C] [--readers R]
 *                       [--read-interval-ms MS] [--argon2-threads T]
 *                       [--only registrations] [--build DIR] [--label TEXT] [--keep]
 *
 * --only registrations runs (1a), (2) and (1b) only: for A/B rounds of the
 * registration path, which need many runs on a noisy machine.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/support/benchutil.h"
#include "connectors/http/auth/jwt.h"
#include "connectors/http/auth/passwords.h"

#define INSTANCES       2
#define MAX_CLIENTS     128
#define MAX_READERS     8
#define MAX_USERS       4096
#define TOKEN_MAX       2048 /* RS256 access tokens are ~700 bytes */
#define SAMPLES_PER_THR 50000
#define HTTP_TIMEOUT_S  10
#define READY_TIMEOUT_S 180
#define MAX_PHASES      16
#define NAME_SIZE       256

/* Never printed. Long enough for any password policy the routes apply. */
static const char PASSWORD[] = "bench-correct-horse-battery-staple";

/* ------------------------------------------------------------------------ */
/* /proc: CPU of a process                                                  */

static long clock_ticks;

/* utime + stime of a process in seconds, or -1. */
static double proc_cpu_s(pid_t pid) {
    long long ticks = bench_proc_ticks(pid);
    return ticks < 0 ? -1 : (double)ticks / (double)clock_ticks;
}

/* ------------------------------------------------------------------------ */
/* A small HTTP/1.1 client: one connection per request                       */

/* `method` `path` on 127.0.0.1:port with `headers` (CRLF-terminated lines
 * or NULL) and `body` (or NULL), Connection: close, HTTP_TIMEOUT_S socket
 * timeouts. Returns the status, or -1 on a connection, I/O or parse error.
 * At most out_size-1 bytes of the answer's body are copied to `out`
 * (NUL-terminated) when it is not NULL. Thread-safe. */
static int http_call(int port, const char *method, const char *path, const char *headers,
                     const char *body, char *out, size_t out_size) {
    char req[TOKEN_MAX * 2 + 2048];
    char buf[16384];
    size_t body_len = body ? strlen(body) : 0;
    if (out && out_size)
        out[0] = '\0';
    int len = snprintf(req, sizeof(req),
                       "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s"
                       "Content-Length: %zu\r\n\r\n%s",
                       method, path, port, headers ? headers : "", body_len, body ? body : "");
    if (len < 0 || (size_t)len >= sizeof(req))
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = HTTP_TIMEOUT_S, .tv_usec = 0};
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int status = -1;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
        goto done;
    for (size_t sent = 0; sent < (size_t)len;) {
        ssize_t n = send(fd, req + sent, (size_t)len - sent, MSG_NOSIGNAL);
        if (n <= 0)
            goto done;
        sent += (size_t)n;
    }
    /* Read to EOF; an answer bigger than the buffer keeps its head only. */
    size_t have = 0;
    for (;;) {
        char sink[4096];
        char *into = have < sizeof(buf) - 1 ? buf + have : sink;
        size_t room = have < sizeof(buf) - 1 ? sizeof(buf) - 1 - have : sizeof(sink);
        ssize_t n = recv(fd, into, room, 0);
        if (n < 0)
            goto done; /* timeout or reset */
        if (n == 0)
            break;
        if (into != sink)
            have += (size_t)n;
    }
    buf[have] = '\0';
    status = bench_http_response(buf, have, out, out_size);
done:
    close(fd);
    return status;
}

/* ------------------------------------------------------------------------ */
/* The benchmark's state                                                     */

typedef struct options {
    long long seconds, clients, readers, read_interval_ms, argon2_threads;
    bool registrations_only;     /* --only registrations: (1a), (2), (1b) */
    bench_common_options common; /* --build, --label, --keep */
} options;

typedef struct instance {
    int port;
    pid_t pid;
    char state_dir[NAME_SIZE], log_path[NAME_SIZE + 16];
} instance;

/* A user registered by the benchmark. Its token is the access token the
 * registration returned (kept in memory only). */
typedef struct bench_user {
    char id[40];
    char email[96];
    char token[TOKEN_MAX];
} bench_user;

typedef struct latency {
    double p50, p99, max; /* ms */
} latency;

/* One measured phase. */
typedef struct phase {
    char name[96];
    int clients;
    double wall_s;
    double window_s;   /* the phase's duration: no request starts after it */
    long ok_in_window; /* ok answers (hashes) completed within the window */
    /* ok answers completed in the window's last two thirds, and their span:
     * the steady state, once the first answers have come back. A window
     * rate also counts the pipeline filling at the start, which costs a
     * route with a longer latency (after its bottleneck) rate it does not
     * lose in a closed loop. */
    long ok_steady;
    double steady_s;
    long ok, conflict, throttled, unavailable, other_4xx, other_5xx, io_errors;
    long samples; /* latencies measured (2xx answers) */
    latency lat;
    double sluice_cpu_s, broker_cpu_s, driver_cpu_s; /* -1 unknown */
    double busy_cores, steal_pct;
} phase;

typedef struct bench {
    options opt;
    const char *bootstrap;
    char work_dir[64], app_id[96], key_path[128];
    instance inst[INSTANCES];
    pid_t broker_pid;
    char run_tag[32];         /* makes e-mails unique per run */
    atomic_long email_serial; /* ... and this within the run */

    pthread_mutex_t users_lock;
    bench_user *users; /* MAX_USERS */
    atomic_int n_users;
    atomic_int readable_users; /* the first ones, readable by id on both instances */

    phase phases[MAX_PHASES];
    int n_phases;
    double load_start[3], load_end[3];
} bench;

/* ------------------------------------------------------------------------ */
/* Child processes: the two sluice instances                                 */

/* SIGTERM, wait up to timeout_s, then SIGKILL. Returns the exit code, or -1. */
static int child_stop(pid_t *pid, double timeout_s) {
    int status = 0;
    if (*pid <= 0) /* kill(-1) or kill(0) would reach far more than our child */
        return -1;
    kill(*pid, SIGTERM);
    for (double deadline = bench_now_s() + timeout_s; bench_now_s() < deadline;) {
        if (waitpid(*pid, &status, WNOHANG) == *pid) {
            *pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        bench_sleep_s(0.02);
    }
    fprintf(stderr, "bench: process %d did not stop within %.0f s: SIGKILL\n", (int)*pid,
            timeout_s);
    kill(*pid, SIGKILL);
    waitpid(*pid, &status, 0);
    *pid = 0;
    return -1;
}


#define MAX_ARGS 64

static bool start_instance(bench *b, int index) {
    instance *in = &b->inst[index];
    in->port = bench_free_port();
    if (in->port <= 0 ||
        !bench_fmt(in->state_dir, sizeof(in->state_dir), "%s/%c", b->work_dir, 'a' + index) ||
        !bench_fmt(in->log_path, sizeof(in->log_path), "%s.log", in->state_dir) ||
        mkdir(in->state_dir, 0755) != 0) {
        fprintf(stderr, "bench: cannot prepare instance %d\n", index);
        return false;
    }
    static char args[MAX_ARGS][NAME_SIZE + 64];
    char *argv[MAX_ARGS + 1];
    int n = 0;
    const sl_argon2_params *p = &sl_argon2_params_owasp;
#define ARG(...)                                                                                   \
    (n < MAX_ARGS && bench_fmt(args[n], sizeof(args[n]), __VA_ARGS__)                              \
         ? (argv[n] = args[n], n++, true)                                                          \
         : false)
    bool ok = ARG("%s/sluice", b->opt.common.build) && ARG("run");
#define SET(...) (ok = ok && ARG("--set") && ARG(__VA_ARGS__))
    SET("application.id=%s", b->app_id);
    SET("identity.topic.prefix=%s.", b->app_id);
    SET("bootstrap.servers=%s", b->bootstrap);
    SET("identity.key.file=%s", b->key_path);
    /* Both instances need one cluster secret; the (secret, shared) signing
     * key file is as good a 32+ byte secret as any for a bench. */
    SET("cluster.secret.file=%s", b->key_path);
    SET("state.dir=%s", in->state_dir);
    SET("http.port=%d", in->port);
    SET("reply.partitions=2");
    SET("identity.argon2.threads=%lld", b->opt.argon2_threads);
    SET("identity.argon2.memory.kib=%u", p->m_cost_kib);
    SET("identity.argon2.passes=%u", p->t_cost);
    SET("identity.argon2.parallelism=%u", p->parallelism);
    /* Every client is 127.0.0.1 and logs in often: the limits must not be
     * what is measured (the module comment says so). */
    SET("identity.throttle.ip.burst=10000");
    SET("identity.throttle.ip.refill.ms=1");
    SET("identity.throttle.account.burst=10000");
    SET("identity.throttle.account.refill.ms=1");
    SET("log.level=warn");
#undef SET
#undef ARG
    argv[n] = NULL;
    if (!ok) {
        fprintf(stderr, "bench: instance arguments too long\n");
        return false;
    }
    in->pid = bench_spawn(argv, in->log_path);
    return in->pid > 0;
}

/* Wait until every instance answers /readyz with 200. */
static bool wait_ready(bench *b, int count, double timeout_s) {
    double deadline = bench_now_s() + timeout_s;
    for (int i = 0; i < count; i++) {
        while (http_call(b->inst[i].port, "GET", "/readyz", NULL, NULL, NULL, 0) != 200) {
            int status;
            if (b->inst[i].pid > 0 && waitpid(b->inst[i].pid, &status, WNOHANG) == b->inst[i].pid) {
                fprintf(stderr, "bench: instance %d exited while starting\n", i);
                b->inst[i].pid = 0;
                bench_dump_log(b->inst[i].log_path, 30);
                return false;
            }
            if (bench_stop_requested || bench_now_s() > deadline) {
                fprintf(stderr, "bench: instance %d not ready within %.0f s\n", i, timeout_s);
                bench_dump_log(b->inst[i].log_path, 30);
                return false;
            }
            bench_sleep_s(0.1);
        }
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Phases: client threads, per-phase accounting                              */

typedef struct worker worker;
/* One request of a phase; returns the HTTP status (or -1). */
typedef int op_fn(bench *b, worker *w);

struct worker {
    pthread_t thread;
    bench *b;
    int index;
    long seq;
    op_fn *op;
    double interval_s; /* > 0: paced, one request per interval */
    double deadline;
    double steady_from; /* completions from here to the deadline are steady */
    long ok_in_window, ok_steady;
    long ok, conflict, throttled, unavailable, other_4xx, other_5xx, io_errors;
    int n_samples;
    double *samples_ms;
};

static void *worker_main(void *arg) {
    worker *w = arg;
    double next = bench_now_s();
    while (!bench_stop_requested && bench_now_s() < w->deadline) {
        double start = bench_now_s();
        int status = w->op(w->b, w);
        double ms = (bench_now_s() - start) * 1000.0;
        w->seq++;
        if (status >= 200 && status < 300) {
            w->ok++;
            double done = bench_now_s();
            w->ok_in_window += done <= w->deadline;
            w->ok_steady += done >= w->steady_from && done <= w->deadline;
            if (w->n_samples < SAMPLES_PER_THR)
                w->samples_ms[w->n_samples++] = ms;
        } else if (status == 409) {
            w->conflict++;
        } else if (status == 429) {
            w->throttled++;
        } else if (status == 503) {
            w->unavailable++;
        } else if (status >= 400 && status < 500) {
            w->other_4xx++;
        } else if (status >= 500) {
            w->other_5xx++;
        } else {
            w->io_errors++;
        }
        if (w->interval_s > 0) {
            next += w->interval_s;
            bench_sleep_s(next - bench_now_s());
        }
    }
    return NULL;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, c = *(const double *)y;
    return a < c ? -1 : a > c;
}

/* What one group of threads did: counts and latencies. */
typedef struct group {
    worker *workers;
    int n;
} group;

static bool group_start(bench *b, group *g, int n, op_fn *op, double interval_s, double deadline) {
    g->n = 0;
    g->workers = calloc((size_t)n, sizeof(worker));
    if (!g->workers)
        return false;
    double steady_from = deadline - (deadline - bench_now_s()) * 2.0 / 3.0;
    for (int i = 0; i < n; i++) {
        worker *w = &g->workers[i];
        *w = (worker){.b = b,
                      .index = i,
                      .op = op,
                      .interval_s = interval_s,
                      .deadline = deadline,
                      .steady_from = steady_from};
        w->samples_ms = malloc(SAMPLES_PER_THR * sizeof(double));
        if (!w->samples_ms || pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            free(w->samples_ms);
            return false;
        }
        g->n++;
    }
    return true;
}

static void group_join(group *g) {
    for (int i = 0; i < g->n; i++)
        pthread_join(g->workers[i].thread, NULL);
}

/* Counts and latency percentiles of a joined group into `ph`. */
static void group_collect(const group *g, phase *ph) {
    int total = 0;
    for (int i = 0; i < g->n; i++)
        total += g->workers[i].n_samples;
    double *all = total ? malloc((size_t)total * sizeof(double)) : NULL;
    int at = 0;
    for (int i = 0; i < g->n; i++) {
        const worker *w = &g->workers[i];
        ph->ok += w->ok;
        ph->ok_in_window += w->ok_in_window;
        ph->ok_steady += w->ok_steady;
        if (i == 0)
            ph->steady_s = w->deadline - w->steady_from;
        ph->conflict += w->conflict;
        ph->throttled += w->throttled;
        ph->unavailable += w->unavailable;
        ph->other_4xx += w->other_4xx;
        ph->other_5xx += w->other_5xx;
        ph->io_errors += w->io_errors;
        if (all) {
            memcpy(all + at, w->samples_ms, (size_t)w->n_samples * sizeof(double));
            at += w->n_samples;
        }
    }
    ph->clients = g->n;
    ph->samples = at;
    if (all && at) {
        qsort(all, (size_t)at, sizeof(double), cmp_double);
        ph->lat = (latency){all[at / 2], all[(int)((double)at * 0.99)], all[at - 1]};
    }
    free(all);
}

static void group_free(group *g) {
    for (int i = 0; i < g->n; i++)
        free(g->workers[i].samples_ms);
    free(g->workers);
    g->workers = NULL;
    g->n = 0;
}

/* CPU counters at the start of a phase. */
typedef struct meter {
    double t, sluice, broker, driver;
    bench_cpu_sample machine;
} meter;

static double sluice_cpu_s(const bench *b) {
    double sum = 0;
    for (int i = 0; i < INSTANCES; i++) {
        double s = proc_cpu_s(b->inst[i].pid);
        if (s < 0)
            return -1;
        sum += s;
    }
    return sum;
}

static meter meter_start(const bench *b) {
    return (meter){.t = bench_now_s(),
                   .sluice = sluice_cpu_s(b),
                   .broker = proc_cpu_s(b->broker_pid),
                   .driver = bench_cpu_self_s(),
                   .machine = bench_machine_cpu()};
}

static void meter_stop(const bench *b, const meter *m, phase *ph) {
    ph->wall_s = bench_now_s() - m->t;
    double sluice = sluice_cpu_s(b), broker = proc_cpu_s(b->broker_pid);
    ph->sluice_cpu_s = sluice >= 0 && m->sluice >= 0 ? sluice - m->sluice : -1;
    ph->broker_cpu_s = broker >= 0 && m->broker >= 0 ? broker - m->broker : -1;
    ph->driver_cpu_s = bench_cpu_self_s() - m->driver;
    bench_cpu_sample end = bench_machine_cpu();
    long long total = end.total - m->machine.total;
    ph->busy_cores = total > 0 && ph->wall_s > 0 ? (double)(total - (end.idle - m->machine.idle)) /
                                                       (double)clock_ticks / ph->wall_s
                                                 : -1;
    ph->steal_pct = total > 0 ? 100.0 * (double)(end.steal - m->machine.steal) / (double)total : -1;
}

static phase *new_phase(bench *b, const char *name) {
    if (b->n_phases >= MAX_PHASES)
        return NULL;
    phase *ph = &b->phases[b->n_phases++];
    *ph = (phase){.sluice_cpu_s = -1, .broker_cpu_s = -1, .driver_cpu_s = -1, .busy_cores = -1};
    bench_fmt(ph->name, sizeof(ph->name), "%s", name);
    ph->window_s = (double)b->opt.seconds;
    fprintf(stderr, "bench: phase %s\n", name);
    return ph;
}

/* Run `clients` threads of `op` for opt.seconds as one phase. */
static phase *run_phase(bench *b, const char *name, int clients, op_fn *op) {
    phase *ph = new_phase(b, name);
    if (!ph)
        return NULL;
    group g;
    meter m = meter_start(b);
    bool started = group_start(b, &g, clients, op, 0, bench_now_s() + (double)b->opt.seconds);
    group_join(&g);
    meter_stop(b, &m, ph);
    group_collect(&g, ph);
    group_free(&g);
    return started ? ph : NULL;
}

/* ------------------------------------------------------------------------ */
/* The requests                                                              */

static int pick_port(const bench *b, const worker *w) {
    return b->inst[(w->index + w->seq) % INSTANCES].port;
}

/* A user registered earlier, spread over the users by worker and sequence. */
static const bench_user *pick_user(bench *b, const worker *w) {
    int n = atomic_load(&b->n_users);
    if (n == 0)
        return NULL;
    return &b->users[((long)w->index * 7919 + w->seq * 31) % n];
}

static int op_register(bench *b, worker *w) {
    char email[96], body[1024], answer[8192];
    if (!bench_fmt(email, sizeof(email), "idb-%s-%ld@bench.example", b->run_tag,
             atomic_fetch_add(&b->email_serial, 1)) ||
        !bench_fmt(body, sizeof(body),
             "{\"first_name\":\"Ada\",\"second_name\":\"Lovelace\",\"birthdate\":\"1985-12-10\","
             "\"biography\":\"Engines\",\"city\":\"London\",\"password\":\"%s\",\"email\":\"%s\"}",
             PASSWORD, email))
        return -1;
    int status = http_call(pick_port(b, w), "POST", "/user/register",
                           "Content-Type: application/json\r\n", body, answer, sizeof(answer));
    explicit_bzero(body, sizeof(body));
    if (status != 200)
        return status;
    json_t *root = json_loads(answer, 0, NULL);
    const char *id = json_string_value(json_object_get(root, "user_id"));
    const char *token = json_string_value(json_object_get(root, "token"));
    if (!id || !token || strlen(token) >= TOKEN_MAX) {
        json_decref(root);
        explicit_bzero(answer, sizeof(answer));
        return -1; /* counted as an error: the answer is not what the spec says */
    }
    pthread_mutex_lock(&b->users_lock);
    int n = atomic_load(&b->n_users);
    if (n < MAX_USERS) {
        bench_user *u = &b->users[n];
        bench_fmt(u->id, sizeof(u->id), "%s", id);
        bench_fmt(u->email, sizeof(u->email), "%s", email);
        bench_fmt(u->token, sizeof(u->token), "%s", token);
        atomic_store(&b->n_users, n + 1);
    }
    pthread_mutex_unlock(&b->users_lock);
    json_decref(root);
    explicit_bzero(answer, sizeof(answer));
    return status;
}

static int op_login(bench *b, worker *w) {
    const bench_user *u = pick_user(b, w);
    char body[512], answer[8192];
    if (!u ||
        !bench_fmt(body, sizeof(body), "{\"email\":\"%s\",\"password\":\"%s\"}", u->email,
                   PASSWORD))
        return -1;
    int status = http_call(pick_port(b, w), "POST", "/login", "Content-Type: application/json\r\n",
                           body, answer, sizeof(answer));
    explicit_bzero(body, sizeof(body));
    if (status == 200 && !strstr(answer, "\"token\""))
        status = -1;
    explicit_bzero(answer, sizeof(answer));
    return status;
}

static int op_introspect(bench *b, worker *w) {
    const bench_user *u = pick_user(b, w);
    char headers[TOKEN_MAX + 128], body[TOKEN_MAX + 16], answer[4096];
    if (!u ||
        !bench_fmt(headers, sizeof(headers),
             "Authorization: Bearer %s\r\nContent-Type: application/x-www-form-urlencoded\r\n",
             u->token) ||
        !bench_fmt(body, sizeof(body), "token=%s", u->token))
        return -1;
    int status = http_call(pick_port(b, w), "POST", "/auth/introspect", headers, body, answer,
                           sizeof(answer));
    if (status == 200 && !strstr(answer, "\"active\":true"))
        status = -1; /* a valid token must be active */
    explicit_bzero(answer, sizeof(answer));
    return status;
}

static int op_healthz(bench *b, worker *w) {
    return http_call(pick_port(b, w), "GET", "/healthz", NULL, NULL, NULL, 0);
}

static int op_user_get(bench *b, worker *w) {
    /* Users registered by a concurrent storm may not be in users-by-id yet. */
    int n = atomic_load(&b->readable_users);
    const bench_user *u = n ? &b->users[((long)w->index * 7919 + w->seq * 31) % n] : NULL;
    char path[96];
    if (!u || !bench_fmt(path, sizeof(path), "/user/get/%s", u->id))
        return -1;
    return http_call(pick_port(b, w), "GET", path, NULL, NULL, NULL, 0);
}

/* ------------------------------------------------------------------------ */
/* Raw argon2id                                                              */

typedef struct hasher {
    pthread_t thread;
    double deadline;
    long hashes, in_window, failed;
} hasher;

static void *hasher_main(void *arg) {
    hasher *h = arg;
    char encoded[SL_PASSWORD_ENCODED_MAX], errstr[256];
    while (!bench_stop_requested && bench_now_s() < h->deadline) {
        if (sl_password_hash(PASSWORD, strlen(PASSWORD), &sl_argon2_params_owasp, encoded,
                             sizeof(encoded), errstr, sizeof(errstr)))
            h->failed++;
        else {
            h->hashes++;
            h->in_window += bench_now_s() <= h->deadline;
        }
    }
    return NULL;
}

/* `threads` threads hash for opt.seconds; ok counts the hashes. */
static phase *run_raw(bench *b, const char *name, int threads) {
    phase *ph = new_phase(b, name);
    hasher hs[MAX_CLIENTS];
    if (!ph || threads > MAX_CLIENTS)
        return NULL;
    meter m = meter_start(b);
    double deadline = bench_now_s() + (double)b->opt.seconds;
    int started = 0;
    for (int i = 0; i < threads; i++) {
        hs[i] = (hasher){.deadline = deadline};
        if (pthread_create(&hs[i].thread, NULL, hasher_main, &hs[i]) != 0)
            break;
        started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(hs[i].thread, NULL);
        ph->ok += hs[i].hashes;
        ph->ok_in_window += hs[i].in_window;
        ph->other_5xx += hs[i].failed;
    }
    meter_stop(b, &m, ph);
    ph->clients = started;
    return started == threads ? ph : NULL;
}

/* ------------------------------------------------------------------------ */
/* Read latency with and without a registration storm                        */

static phase *run_reads(bench *b, const char *name, bool storm, phase **storm_phase) {
    phase *ph = new_phase(b, name);
    phase *st = storm ? new_phase(b, "(5) registrations during the storm") : NULL;
    if (!ph || (storm && !st))
        return NULL;
    group readers, writers = {.workers = NULL, .n = 0};
    meter m = meter_start(b);
    double deadline = bench_now_s() + (double)b->opt.seconds;
    bool ok = group_start(b, &readers, (int)b->opt.readers, op_user_get,
                          (double)b->opt.read_interval_ms / 1000.0, deadline);
    if (storm)
        ok = group_start(b, &writers, (int)b->opt.clients, op_register, 0, deadline) && ok;
    group_join(&readers);
    group_join(&writers);
    meter_stop(b, &m, ph);
    group_collect(&readers, ph);
    if (st) {
        meter_stop(b, &m, st);
        group_collect(&writers, st);
    }
    group_free(&readers);
    group_free(&writers);
    if (storm_phase)
        *storm_phase = st;
    return ok ? ph : NULL;
}

/* ------------------------------------------------------------------------ */
/* Report                                                                    */

/* Successes completed within the phase's window, per second of it: the
 * clients keep the instances busy the whole window, so neither the pipeline
 * filling at the start nor the requests in flight at the end (whose
 * latency can be seconds under a storm) count. */
static double rate(const phase *ph) {
    return ph && ph->window_s > 0 ? (double)ph->ok_in_window / ph->window_s : 0;
}

/* Successes completed in the window's last two thirds, per second of it. */
static double steady_rate(const phase *ph) {
    return ph && ph->steady_s > 0 ? (double)ph->ok_steady / ph->steady_s : 0;
}

/* Successes per CPU second of the process(es) that did the work. */
static double rate_per_cpu(const phase *ph, bool raw) {
    double cpu = raw ? ph->driver_cpu_s : ph->sluice_cpu_s;
    return ph && cpu > 0 ? (double)ph->ok / cpu : 0;
}

/* Successes per CPU second of the instances and the broker together: a
 * registration also costs the broker its transactions and fetches. */
static double rate_per_system_cpu(const phase *ph) {
    double cpu = ph->sluice_cpu_s + (ph->broker_cpu_s > 0 ? ph->broker_cpu_s : 0);
    return ph && ph->sluice_cpu_s > 0 ? (double)ph->ok / cpu : 0;
}

static double other_cores(const phase *ph) {
    if (ph->busy_cores < 0 || ph->wall_s <= 0)
        return -1;
    double ours = ((ph->sluice_cpu_s > 0 ? ph->sluice_cpu_s : 0) +
                   (ph->broker_cpu_s > 0 ? ph->broker_cpu_s : 0) +
                   (ph->driver_cpu_s > 0 ? ph->driver_cpu_s : 0)) /
                  ph->wall_s;
    return ph->busy_cores > ours ? ph->busy_cores - ours : 0;
}

static const phase *find_phase(const bench *b, const char *prefix) {
    for (int i = 0; i < b->n_phases; i++)
        if (strncmp(b->phases[i].name, prefix, strlen(prefix)) == 0)
            return &b->phases[i];
    return NULL;
}

static void pct(char *buf, size_t size, double num, double den) {
    if (den > 0)
        bench_fmt(buf, size, "%.1f %%", 100.0 * num / den);
    else
        bench_fmt(buf, size, "-");
}

static void report(const bench *b) {
    char date[64], model[256];
    bench_utc_now(date, sizeof(date));
    bench_machine_model(model, sizeof(model));
    const sl_argon2_params *p = &sl_argon2_params_owasp;
    printf("\n## Identity benchmark, %s\n\n", date);
    printf("- label: %s\n", b->opt.common.label ? b->opt.common.label : "-");
    printf("- machine: %ld CPUs online, %s; load average at start %.2f %.2f %.2f, at end %.2f "
           "%.2f %.2f\n",
           sysconf(_SC_NPROCESSORS_ONLN), model, b->load_start[0], b->load_start[1],
           b->load_start[2], b->load_end[0], b->load_end[1], b->load_end[2]);
    printf("- %d `sluice run` instances (release build), one broker, one RS256 signing key; "
           "argon2id m=%u KiB t=%u p=%u, identity.argon2.threads=%lld per instance; "
           "identity.throttle.{ip,account}.burst=10000, refill.ms=1 (raised for the benchmark)\n",
           INSTANCES, p->m_cost_kib, p->t_cost, p->parallelism, b->opt.argon2_threads);
    printf("- %lld s per phase, %lld clients, %lld paced readers (one GET every %lld ms each), a "
           "new connection per request; %d users registered in all\n",
           b->opt.seconds, b->opt.clients, b->opt.readers, b->opt.read_interval_ms,
           atomic_load(&b->n_users));
    printf("- broker CPU measured: %s\n\n", b->broker_pid > 0 ? "yes" : "no");

    printf("Phases (ok: 2xx answers, or hashes for the raw phases; ok/s: those completed within "
           "the phase's %lld s window, per second; ok/s last 2/3: those completed in the "
           "window's last two thirds, per second of them (the steady state, without the "
           "pipeline filling at the start); wall s: until the last request in flight "
           "ended; latency of the 2xx answers; CPU s: sluice = both instances; other cores: "
           "machine cores busy with neither sluice, "
           "the broker nor this driver):\n\n",
           b->opt.seconds);
    printf("| phase | threads | wall s | ok | ok/s | ok/s last 2/3 | 409 | 429 | 503 | other "
           "4xx/5xx | I/O err "
           "| p50 ms | p99 ms | max ms | sluice CPU s | broker CPU s | driver CPU s | other "
           "cores | steal %% |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
           "---:|---:|\n");
    for (int i = 0; i < b->n_phases; i++) {
        const phase *ph = &b->phases[i];
        bool timed = ph->samples > 0;
        printf("| %s | %d | %.2f | %ld | %.1f | ", ph->name, ph->clients, ph->wall_s, ph->ok,
               rate(ph));
        if (ph->steady_s > 0)
            printf("%.1f | ", steady_rate(ph));
        else
            printf("- | ");
        printf("%ld | %ld | %ld | %ld | %ld | ", ph->conflict, ph->throttled, ph->unavailable,
               ph->other_4xx + ph->other_5xx, ph->io_errors);
        if (timed)
            printf("%.2f | %.2f | %.2f | ", ph->lat.p50, ph->lat.p99, ph->lat.max);
        else
            printf("- | - | - | ");
        printf("%.1f | %.1f | %.1f | %.2f | %.1f |\n", ph->sluice_cpu_s, ph->broker_cpu_s,
               ph->driver_cpu_s, other_cores(ph), ph->steal_pct);
    }

    const phase *raw_a = find_phase(b, "(1a)"), *raw_b = find_phase(b, "(1b)");
    const phase *reg = find_phase(b, "(2)"), *login = find_phase(b, "(3)");
    const phase *floor_ = find_phase(b, "(4a)"), *intro = find_phase(b, "(4b)");
    const phase *quiet1 = find_phase(b, "(5a)"), *storm = find_phase(b, "(5b)"),
                *storm_reg = find_phase(b, "(5) registrations"), *quiet2 = find_phase(b, "(5c)");
    int n_raw = (raw_a != NULL) + (raw_b != NULL);
    double raw = n_raw ? (rate(raw_a) + rate(raw_b)) / n_raw : 0;
    double raw_cpu =
        n_raw
            ? ((raw_a ? rate_per_cpu(raw_a, true) : 0) + (raw_b ? rate_per_cpu(raw_b, true) : 0)) /
                  n_raw
            : 0;
    char c1[32], c2[32], c3[32];
    printf("\nSummary (ratios against the same run's raw argon2id rate, mean of (1a) and "
           "(1b); per CPU-s: successes per CPU second of the instances (of the instances and "
           "the broker), hashes per CPU second of the raw threads; the CPU ratios are what the "
           "wall ratios would be if nothing else ran on these cores):\n\n");
    printf("| measure | per s | ratio to (1) | per sluice CPU-s | ratio to (1) | per "
           "sluice+broker CPU-s | ratio to (1) |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|\n");
    printf("| (1) raw argon2id hashes, %d threads | %.1f | 100 %% | %.1f | 100 %% | %.1f | 100 %% "
           "|\n",
           raw_a ? raw_a->clients : 0, raw, raw_cpu, raw_cpu);
    const phase *rows[] = {reg, login, storm_reg};
    const char *labels[] = {"(2) registrations", "(3) logins by e-mail",
                            "(5) registrations during the read phase"};
    for (int i = 0; i < 3; i++) {
        if (!rows[i])
            continue;
        pct(c1, sizeof(c1), rate(rows[i]), raw);
        pct(c2, sizeof(c2), rate_per_cpu(rows[i], false), raw_cpu);
        pct(c3, sizeof(c3), rate_per_system_cpu(rows[i]), raw_cpu);
        printf("| %s | %.1f | %s | %.1f | %s | %.1f | %s |\n", labels[i], rate(rows[i]), c1,
               rate_per_cpu(rows[i], false), c2, rate_per_system_cpu(rows[i]), c3);
    }
    if (intro && floor_) {
        printf("\nToken verification through HTTP (ratio: to GET /healthz, the same clients' "
               "HTTP floor):\n\n");
        printf("| measure | per s | ratio to /healthz | per sluice CPU-s | sluice CPU us per "
               "request |\n|---|---:|---:|---:|---:|\n");
        const phase *rows4[] = {floor_, intro};
        const char *labels4[] = {"(4a) GET /healthz", "(4b) POST /auth/introspect (2 "
                                                      "verifications + blacklist per request)"};
        for (int i = 0; i < 2; i++) {
            double per_cpu = rate_per_cpu(rows4[i], false);
            pct(c1, sizeof(c1), rate(rows4[i]), rate(floor_));
            printf("| %s | %.1f | %s | %.1f | %.1f |\n", labels4[i], rate(rows4[i]), c1, per_cpu,
                   per_cpu > 0 ? 1e6 / per_cpu : 0);
        }
    }
    if (quiet1 && storm) {
        printf("\nGET /user/get/{id} latency (ms) with and without a registration storm:\n\n");
        printf("| | requests | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n");
        const phase *reads[] = {quiet1, storm, quiet2};
        const char *names[] = {"no load (before)", "registration storm", "no load (after)"};
        for (int i = 0; i < 3; i++)
            if (reads[i])
                printf("| %s | %ld | %.2f | %.2f | %.2f |\n", names[i], reads[i]->ok,
                       reads[i]->lat.p50, reads[i]->lat.p99, reads[i]->lat.max);
        double base_p50 = quiet1->lat.p50, base_p99 = quiet1->lat.p99;
        if (quiet2 && quiet2->samples) {
            base_p50 = (base_p50 + quiet2->lat.p50) / 2;
            base_p99 = (base_p99 + quiet2->lat.p99) / 2;
        }
        printf("| **storm / no load** (mean of before and after) | | %.2fx | %.2fx | |\n",
               base_p50 > 0 ? storm->lat.p50 / base_p50 : 0,
               base_p99 > 0 ? storm->lat.p99 / base_p99 : 0);
    }
    printf("\nFor comparison, in-process token verification on one core: `make bench-jwt` "
           "(bench/RESULTS.md).\n");
    fflush(stdout);
}

/* ------------------------------------------------------------------------ */
/* Main                                                                      */

static int usage(void) {
    fprintf(stderr, "usage: identity_bench [--seconds S] [--clients C] [--readers R]\n"
                    "                      [--read-interval-ms MS] [--argon2-threads T]\n"
                    "                      [--only registrations]\n"
                    "                      [--build DIR] [--label TEXT] [--keep]\n"
                    "Needs SLUICE_TEST_KAFKA_BOOTSTRAP (scripts/harness sets it).\n");
    return 2;
}

/* One of identity_bench's own options (bench_option_fn). */
static bool take_option(void *opts, const char *name, const char *value) {
    options *opt = opts;
    if (strcmp(name, "--seconds") == 0)
        return bench_parse_ll(value, 1, 3600, &opt->seconds);
    if (strcmp(name, "--clients") == 0)
        return bench_parse_ll(value, 1, MAX_CLIENTS, &opt->clients);
    if (strcmp(name, "--readers") == 0)
        return bench_parse_ll(value, 1, MAX_READERS, &opt->readers);
    if (strcmp(name, "--read-interval-ms") == 0)
        return bench_parse_ll(value, 1, 10000, &opt->read_interval_ms);
    if (strcmp(name, "--argon2-threads") == 0)
        return bench_parse_ll(value, 1, MAX_CLIENTS / INSTANCES, &opt->argon2_threads);
    if (strcmp(name, "--only") == 0)
        return (opt->registrations_only = strcmp(value, "registrations") == 0);
    return false;
}

static int parse_args(options *opt, int argc, char **argv) {
    opt->seconds = 10;
    opt->clients = 64;
    opt->readers = 2;
    opt->read_interval_ms = 10;
    opt->argon2_threads = 2;
    return bench_parse_args(argc, argv, &opt->common, take_option, opt) ? 0 : usage();
}

/* Environment and signals, once the arguments are parsed: 0, or the exit
 * status. */
static int prepare(bench *b) {
    b->bootstrap = bench_kafka_bootstrap("make bench-identity");
    if (!b->bootstrap)
        return 2;
    char sluice[PATH_MAX + 16];
    if (!bench_fmt(sluice, sizeof(sluice), "%s/sluice", b->opt.common.build) ||
        access(sluice, X_OK) != 0) {
        fprintf(stderr, "bench: %s is missing: run 'make VARIANT=release'\n", sluice);
        return 2;
    }
    if (!bench_catch_stop_signals()) {
        fprintf(stderr, "bench: sigaction: %s\n", strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    clock_ticks = sysconf(_SC_CLK_TCK);
    b->broker_pid = bench_find_broker();
    return 0;
}

/* Register a few users through both instances and wait until each is
 * readable from both (untimed): the group has settled and forwarding
 * works before anything is measured. */
static bool warm_up(bench *b) {
    worker w = {.b = b, .index = 0};
    double deadline = bench_now_s() + 120;
    for (int i = 0; i < 8 && !bench_stop_requested; i++) {
        w.seq = i;
        int status;
        while ((status = op_register(b, &w)) != 200) {
            if (bench_now_s() > deadline || bench_stop_requested) {
                fprintf(stderr, "bench: warm-up registration failed (last status %d)\n", status);
                return false;
            }
            bench_sleep_s(0.5);
        }
    }
    for (int i = 0; i < atomic_load(&b->n_users); i++) {
        char path[96];
        bench_fmt(path, sizeof(path), "/user/get/%s", b->users[i].id);
        for (int k = 0; k < INSTANCES; k++)
            while (http_call(b->inst[k].port, "GET", path, NULL, NULL, NULL, 0) != 200) {
                if (bench_now_s() > deadline || bench_stop_requested) {
                    fprintf(stderr, "bench: warm-up users not readable from instance %d\n", k);
                    return false;
                }
                bench_sleep_s(0.2);
            }
    }
    atomic_store(&b->readable_users, atomic_load(&b->n_users));
    return true;
}

/* Wait until the last registered user is readable by id on both instances
 * (the users-by-id store is built through a repartition topic). */
static void settle(bench *b) {
    int n = atomic_load(&b->n_users);
    if (n == 0)
        return;
    char path[96];
    bench_fmt(path, sizeof(path), "/user/get/%s", b->users[n - 1].id);
    double deadline = bench_now_s() + 30;
    bool readable = true;
    for (int k = 0; k < INSTANCES; k++)
        while (readable && http_call(b->inst[k].port, "GET", path, NULL, NULL, NULL, 0) != 200)
            if (bench_now_s() > deadline || bench_stop_requested)
                readable = false;
            else
                bench_sleep_s(0.1);
    if (readable)
        atomic_store(&b->readable_users, n);
    else
        fprintf(stderr, "bench: user %d of %d not readable by id after 30 s\n", n, n);
}

static bool run_all(bench *b) {
    int clients = (int)b->opt.clients;
    int raw_threads = (int)b->opt.argon2_threads * INSTANCES;
    for (int i = 0; i < INSTANCES; i++)
        if (!start_instance(b, i) || !wait_ready(b, i + 1, READY_TIMEOUT_S))
            return false;
    /* The first one rebalanced when the second joined. */
    if (!wait_ready(b, INSTANCES, READY_TIMEOUT_S) || !warm_up(b))
        return false;
    bench_sleep_s(2); /* let the warm-up's traffic die down before the baseline */
    char name[96];
    bench_fmt(name, sizeof(name), "(1a) raw argon2id, %d threads, before", raw_threads);
    if (!run_raw(b, name, raw_threads))
        return false;
    if (!run_phase(b, "(2) POST /user/register", clients, op_register))
        return false;
    settle(b);
    if (b->opt.registrations_only)
        goto raw_after; /* A/B runs of the registration path: a third of the time */
    if (!run_phase(b, "(3) POST /login (e-mail)", clients, op_login) ||
        !run_phase(b, "(4a) GET /healthz (HTTP floor)", clients, op_healthz) ||
        !run_phase(b, "(4b) POST /auth/introspect", clients, op_introspect))
        return false;
    if (!run_reads(b, "(5a) GET /user/get/{id}, no load", false, NULL) ||
        !run_reads(b, "(5b) GET /user/get/{id}, registration storm", true, NULL))
        return false;
    settle(b);
    if (!run_reads(b, "(5c) GET /user/get/{id}, no load", false, NULL))
        return false;
raw_after:
    bench_fmt(name, sizeof(name), "(1b) raw argon2id, %d threads, after", raw_threads);
    return run_raw(b, name, raw_threads) != NULL && !bench_stop_requested;
}

int main(int argc, char **argv) {
    bench *b = calloc(1, sizeof(*b));
    if (!b) {
        fprintf(stderr, "bench: out of memory\n");
        return 1;
    }
    int status = parse_args(&b->opt, argc, argv);
    if (status == 0)
        status = prepare(b);
    if (status) {
        free(b);
        return status;
    }
    b->users = calloc(MAX_USERS, sizeof(bench_user));
    pthread_mutex_init(&b->users_lock, NULL);
    bench_fmt(b->run_tag, sizeof(b->run_tag), "%d-%lld", (int)getpid(), (long long)time(NULL));
    bench_fmt(b->app_id, sizeof(b->app_id), "idbench-%s", b->run_tag);
    bench_fmt(b->work_dir, sizeof(b->work_dir), "/tmp/sluice-idbench-XXXXXX");
    getloadavg(b->load_start, 3);
    bool work_dir_made = mkdtemp(b->work_dir) != NULL;
    char errstr[256] = "";
    bool ok = b->users && work_dir_made &&
              bench_fmt(b->key_path, sizeof(b->key_path), "%s/signing.pem", b->work_dir) &&
              sl_jwt_key_generate(b->key_path, SL_JWT_RS256, NULL, errstr, sizeof(errstr)) == SL_OK;
    if (!ok)
        fprintf(stderr, "bench: cannot start (work dir or signing key: %s)\n", errstr);
    ok = ok && run_all(b);
    for (int i = 0; i < INSTANCES; i++)
        if (b->inst[i].pid > 0 && child_stop(&b->inst[i].pid, 30) != 0)
            bench_dump_log(b->inst[i].log_path, 20);
    getloadavg(b->load_end, 3);
    report(b);
    if (b->opt.common.keep)
        fprintf(stderr, "bench: logs and state kept in %s (topics prefix %s.)\n", b->work_dir,
                b->app_id);
    else if (work_dir_made)
        bench_remove_tree(b->work_dir);
    if (bench_stop_requested)
        fprintf(stderr, "bench: stopped by a signal\n");
    if (b->users)
        explicit_bzero(b->users, MAX_USERS * sizeof(bench_user));
    free(b->users);
    pthread_mutex_destroy(&b->users_lock);
    free(b);
    return ok && !bench_stop_requested ? 0 : 1;
}
