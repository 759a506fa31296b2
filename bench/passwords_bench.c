/*
 * passwords_bench.c: argon2id throughput, raw and through the hashing pool,
 * and what a hashing storm does to a latency-sensitive thread.
 *
 *   build/release/bench/passwords_bench [hashes_per_phase [rounds]]
 *                                        (defaults: 100 and 3)
 *
 * Phases, at production cost (OWASP: m=19456, t=2, p=1), each hashing the
 * same number of passwords:
 *   raw-1    sl_password_hash in a loop on 1 thread
 *   raw-2    the same on 2 threads at once
 *   pool-1   the pool with 1 worker, fed by one submitter that keeps its
 *            queue (64) topped up: submit until SL_ERR_FULL, wait for a
 *            completion, as a gateway under a registration storm would
 *   pool-2   the same with 2 workers
 * The machine is shared and noisy, so the four phases run back to back in
 * each of several rounds and the ratio pool-N / raw-N (the fraction of the
 * raw argon2id rate the pool delivers on the same cores) is taken within a
 * round; the report gives every round and the median. Hashes per CPU second
 * of the process are reported too: other processes stealing a core change
 * the wall-clock rates, much less the CPU-time ones, so the CPU ratio shows
 * the pool's own overhead. Last, the pool's fixed cost per job is measured
 * directly with near-free (test-only, 64 KiB) hashes.
 *
 * In every phase (and an idle baseline) a "reader" thread sleeps 1 ms and
 * notes how late it wakes up: the p50 / p99 / max of that delay is what an
 * HTTP thread serving a read would wait for a core while passwords hash.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "connectors/http/auth/passwords.h"

static const char PASSWORD[] = "correct horse battery staple";

static double clock_s(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void) {
    return clock_s(CLOCK_MONOTONIC);
}

/* CPU time of the whole process (hashing threads, submitter, reader). */
static double cpu_s(void) {
    return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

/* One phase's result: hashes per wall-clock second and per CPU second. */
typedef struct rates {
    double wall, cpu;
} rates;

/* ---- reader latency ---------------------------------------------------- */

#define MAX_SAMPLES 200000

typedef struct reader {
    pthread_t thread;
    atomic_int stop;
    int n;
    double late_ms[MAX_SAMPLES];
} reader;

static void *reader_main(void *arg) {
    reader *r = arg;
    while (!atomic_load(&r->stop) && r->n < MAX_SAMPLES) {
        double before = now_s();
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
        r->late_ms[r->n++] = (now_s() - before) * 1000.0 - 1.0;
    }
    return NULL;
}

static void reader_start(reader *r) {
    atomic_store(&r->stop, 0);
    r->n = 0;
    pthread_create(&r->thread, NULL, reader_main, r);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct latency {
    double p50, p99, max;
} latency;

static latency reader_stop(reader *r) {
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    if (r->n == 0)
        return (latency){0, 0, 0};
    qsort(r->late_ms, (size_t)r->n, sizeof(double), cmp_double);
    return (latency){r->late_ms[r->n / 2], r->late_ms[(int)(r->n * 0.99)], r->late_ms[r->n - 1]};
}

/* ---- raw ------------------------------------------------------------------- */

typedef struct raw_worker {
    pthread_t thread;
    const sl_argon2_params *params;
    int count;
    int failed;
} raw_worker;

static void *raw_main(void *arg) {
    raw_worker *w = arg;
    char encoded[SL_PASSWORD_ENCODED_MAX], errstr[256];
    for (int i = 0; i < w->count; i++)
        if (sl_password_hash(PASSWORD, strlen(PASSWORD), w->params, encoded, sizeof(encoded),
                             errstr, sizeof(errstr)))
            w->failed++;
    return NULL;
}

/* `total` hashes with `params` split over `threads` threads. */
static rates raw_rate(int threads, int total, const sl_argon2_params *params) {
    raw_worker workers[2];
    double start = now_s(), cpu_start = cpu_s();
    for (int i = 0; i < threads; i++) {
        workers[i] = (raw_worker){.params = params, .count = total / threads};
        pthread_create(&workers[i].thread, NULL, raw_main, &workers[i]);
    }
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        failed += workers[i].failed;
    }
    if (failed) {
        fprintf(stderr, "raw-%d: %d hashes failed\n", threads, failed);
        exit(1);
    }
    double hashes = (double)(total / threads * threads);
    return (rates){hashes / (now_s() - start), hashes / (cpu_s() - cpu_start)};
}

/* ---- pool ------------------------------------------------------------------- */

typedef struct feed {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done, failed;
} feed;

static void feed_done(void *opaque, sl_err err, bool match, const char *encoded) {
    (void)match;
    (void)encoded;
    feed *f = opaque;
    pthread_mutex_lock(&f->lock);
    f->done++;
    f->failed += err != SL_OK;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

/* `total` hashes through a pool of `threads` workers. The pool (and its
 * dummy hash) is made before the clocks start. */
static rates pool_rate(int threads, int total, const sl_argon2_params *params) {
    char errstr[256];
    sl_password_pool *pool = sl_password_pool_new(threads, 64, params, errstr, sizeof(errstr));
    if (!pool) {
        fprintf(stderr, "pool: %s\n", errstr);
        exit(1);
    }
    feed f = {.done = 0};
    pthread_mutex_init(&f.lock, NULL);
    pthread_cond_init(&f.cond, NULL);
    double start = now_s(), cpu_start = cpu_s();
    int submitted = 0;
    while (submitted < total) {
        sl_err err = sl_password_pool_submit_hash(pool, PASSWORD, strlen(PASSWORD), feed_done, &f);
        if (err == SL_OK) {
            submitted++;
            continue;
        }
        if (err != SL_ERR_FULL) {
            fprintf(stderr, "submit: %s\n", sl_err_msg(err));
            exit(1);
        }
        pthread_mutex_lock(&f.lock);
        int seen = f.done;
        while (f.done == seen)
            pthread_cond_wait(&f.cond, &f.lock);
        pthread_mutex_unlock(&f.lock);
    }
    pthread_mutex_lock(&f.lock);
    while (f.done < total)
        pthread_cond_wait(&f.cond, &f.lock);
    pthread_mutex_unlock(&f.lock);
    rates rate = {(double)total / (now_s() - start), (double)total / (cpu_s() - cpu_start)};
    sl_password_pool_destroy(pool);
    if (f.failed) {
        fprintf(stderr, "pool-%d: %d hashes failed\n", threads, f.failed);
        exit(1);
    }
    pthread_cond_destroy(&f.cond);
    pthread_mutex_destroy(&f.lock);
    return rate;
}

/* ---- main ------------------------------------------------------------------- */

#define MAX_ROUNDS 20

enum { RAW1, RAW2, POOL1, POOL2, PHASES };
static const char *const phase_names[PHASES] = {"raw-1", "raw-2", "pool-1", "pool-2"};

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
    int total = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 100;
    int rounds = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 3;
    if (total < 2 || total > 100000 || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: %s [hashes_per_phase: 2..100000 [rounds: 1..%d]]\n", argv[0],
                MAX_ROUNDS);
        return 2;
    }
    static reader r;
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    printf("load average at start %.2f %.2f %.2f (other processes share these cores)\n", load[0],
           load[1], load[2]);
    printf("argon2id m=%u KiB t=%u p=%u; %d hashes per phase, %d rounds\n",
           sl_argon2_params_owasp.m_cost_kib, sl_argon2_params_owasp.t_cost,
           sl_argon2_params_owasp.parallelism, total, rounds);

    reader_start(&r);
    nanosleep(&(struct timespec){.tv_sec = 2}, NULL);
    latency idle = reader_stop(&r);
    printf("idle     reader wake-up delay p50 %.3f  p99 %.3f  max %.3f ms\n", idle.p50, idle.p99,
           idle.max);

    double wall[PHASES][MAX_ROUNDS], cpu[PHASES][MAX_ROUNDS], p99[PHASES][MAX_ROUNDS];
    double ratio1[MAX_ROUNDS], ratio2[MAX_ROUNDS], cpu_ratio1[MAX_ROUNDS], cpu_ratio2[MAX_ROUNDS];
    for (int round = 0; round < rounds; round++) {
        for (int phase = 0; phase < PHASES; phase++) {
            reader_start(&r);
            rates got = phase == RAW1    ? raw_rate(1, total, NULL)
                        : phase == RAW2  ? raw_rate(2, total, NULL)
                        : phase == POOL1 ? pool_rate(1, total, NULL)
                                         : pool_rate(2, total, NULL);
            latency l = reader_stop(&r);
            wall[phase][round] = got.wall;
            cpu[phase][round] = got.cpu;
            p99[phase][round] = l.p99;
            printf("round %d  %-7s %6.1f hashes/s  %5.1f per CPU-s   reader p50 %.3f  p99 %.3f  "
                   "max %.3f ms\n",
                   round + 1, phase_names[phase], got.wall, got.cpu, l.p50, l.p99, l.max);
        }
        ratio1[round] = wall[POOL1][round] / wall[RAW1][round];
        ratio2[round] = wall[POOL2][round] / wall[RAW2][round];
        cpu_ratio1[round] = cpu[POOL1][round] / cpu[RAW1][round];
        cpu_ratio2[round] = cpu[POOL2][round] / cpu[RAW2][round];
        printf("round %d  pool-1/raw-1 %.3f (CPU %.3f)   pool-2/raw-2 %.3f (CPU %.3f)\n", round + 1,
               ratio1[round], cpu_ratio1[round], ratio2[round], cpu_ratio2[round]);
    }
    printf("median   hashes/s:");
    for (int phase = 0; phase < PHASES; phase++)
        printf("  %s %.1f", phase_names[phase], median(wall[phase], rounds));
    printf("\nmedian   per CPU-s:");
    for (int phase = 0; phase < PHASES; phase++)
        printf("  %s %.1f", phase_names[phase], median(cpu[phase], rounds));
    printf("\nmedian   pool-1/raw-1 %.3f (CPU %.3f)   pool-2/raw-2 %.3f (CPU %.3f)\n",
           median(ratio1, rounds), median(cpu_ratio1, rounds), median(ratio2, rounds),
           median(cpu_ratio2, rounds));
    printf("median   reader p99:");
    for (int phase = 0; phase < PHASES; phase++)
        printf("  %s %.3f ms", phase_names[phase], median(p99[phase], rounds));
    printf("\n");

    /* The pool's own cost per job, measured where it is not lost in the
     * noise: near-free hashes (the test-only 64 KiB parameters), raw vs.
     * through a 1-worker pool, best of 3. */
    const int tiny = 20000;
    double raw_us = 1e9, pool_us = 1e9;
    for (int i = 0; i < 3; i++) {
        double a = 1e6 / raw_rate(1, tiny, &sl_argon2_params_insecure_test_only).wall;
        double b = 1e6 / pool_rate(1, tiny, &sl_argon2_params_insecure_test_only).wall;
        raw_us = a < raw_us ? a : raw_us;
        pool_us = b < pool_us ? b : pool_us;
    }
    printf("overhead 64 KiB hashes: raw-1 %.1f us, pool-1 %.1f us per hash: the pool adds "
           "%.1f us per job (%.4f%% of a %.0f ms OWASP hash)\n",
           raw_us, pool_us, pool_us - raw_us,
           (pool_us - raw_us) / (1e6 / median(wall[RAW1], rounds)) * 100.0,
           1e3 / median(wall[RAW1], rounds));
    getloadavg(load, 3);
    printf("load average at end %.2f %.2f %.2f\n", load[0], load[1], load[2]);
    return 0;
}
