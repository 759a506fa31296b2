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
 * round; the report gives every round and the median.
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

#include "connectors/passwords.h"

static const char PASSWORD[] = "correct horse battery staple";

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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
    int count;
    int failed;
} raw_worker;

static void *raw_main(void *arg) {
    raw_worker *w = arg;
    char encoded[SL_PASSWORD_ENCODED_MAX], errstr[256];
    for (int i = 0; i < w->count; i++)
        if (sl_password_hash(PASSWORD, strlen(PASSWORD), NULL, encoded, sizeof(encoded), errstr,
                             sizeof(errstr)))
            w->failed++;
    return NULL;
}

/* `total` hashes split over `threads` threads; hashes per second. */
static double raw_rate(int threads, int total) {
    raw_worker workers[2];
    double start = now_s();
    for (int i = 0; i < threads; i++) {
        workers[i] = (raw_worker){.count = total / threads};
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
    return (double)(total / threads * threads) / (now_s() - start);
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

/* `total` hashes through a pool of `threads` workers; hashes per second.
 * The pool (and its dummy hash) is made before the clock starts. */
static double pool_rate(int threads, int total) {
    char errstr[256];
    sl_password_pool *pool = sl_password_pool_new(threads, 64, NULL, errstr, sizeof(errstr));
    if (!pool) {
        fprintf(stderr, "pool: %s\n", errstr);
        exit(1);
    }
    feed f = {.done = 0};
    pthread_mutex_init(&f.lock, NULL);
    pthread_cond_init(&f.cond, NULL);
    double start = now_s();
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
    double rate = (double)total / (now_s() - start);
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

    double rate[PHASES][MAX_ROUNDS], p99[PHASES][MAX_ROUNDS];
    double ratio1[MAX_ROUNDS], ratio2[MAX_ROUNDS];
    for (int round = 0; round < rounds; round++) {
        for (int phase = 0; phase < PHASES; phase++) {
            reader_start(&r);
            switch (phase) {
            case RAW1:
                rate[phase][round] = raw_rate(1, total);
                break;
            case RAW2:
                rate[phase][round] = raw_rate(2, total);
                break;
            case POOL1:
                rate[phase][round] = pool_rate(1, total);
                break;
            default:
                rate[phase][round] = pool_rate(2, total);
                break;
            }
            latency l = reader_stop(&r);
            p99[phase][round] = l.p99;
            printf("round %d  %-7s %6.1f hashes/s   reader p50 %.3f  p99 %.3f  max %.3f ms\n",
                   round + 1, phase_names[phase], rate[phase][round], l.p50, l.p99, l.max);
        }
        ratio1[round] = rate[POOL1][round] / rate[RAW1][round];
        ratio2[round] = rate[POOL2][round] / rate[RAW2][round];
        printf("round %d  pool-1/raw-1 %.3f   pool-2/raw-2 %.3f\n", round + 1, ratio1[round],
               ratio2[round]);
    }
    printf("median   ");
    for (int phase = 0; phase < PHASES; phase++)
        printf("%s %.1f/s  ", phase_names[phase], median(rate[phase], rounds));
    printf("\nmedian   pool-1/raw-1 %.3f   pool-2/raw-2 %.3f\n", median(ratio1, rounds),
           median(ratio2, rounds));
    printf("median   reader p99: ");
    for (int phase = 0; phase < PHASES; phase++)
        printf("%s %.3f ms  ", phase_names[phase], median(p99[phase], rounds));
    printf("\n");
    getloadavg(load, 3);
    printf("load average at end %.2f %.2f %.2f\n", load[0], load[1], load[2]);
    return 0;
}
