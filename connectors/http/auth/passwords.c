/*
 * passwords.c: argon2id hashing and verification, and the bounded pool that
 * runs them off the HTTP threads.
 *
 * Design note: the pool.
 *
 * All memory is allocated by sl_password_pool_new: `max_queue + threads` job
 * slots (each with a SL_PASSWORD_MAX_LEN password buffer), a ring of
 * `max_queue` job pointers, the worker threads. One mutex (pool->lock)
 * guards every field of the pool and of every slot, except the password,
 * encoded and result fields of a RUNNING slot, which belong to the worker
 * that runs it.
 *
 * A slot's life (function that makes each transition in brackets):
 *
 *     FREE --[submit]--> QUEUED --[worker_main: take]--> RUNNING
 *                          |                               |
 *                          | stopping or abandoned         | [run_job]
 *                          v                               v
 *                        DONE (err = CANCELLED)          DONE
 *                                     \                  /
 *                                      [finish_job: callback, or signal
 *                                       the waiter]
 *                                            |
 *                     refs reach 0 [release_job]: wipe, back to FREE
 *
 * Invariants:
 *   - A slot holds one reference for the worker, plus one for a blocked
 *     *_wait caller. It returns to the free list, wiped, only when both are
 *     gone, so a waiter that timed out never has its buffers written after it
 *     returned (the worker writes into the slot, not into the caller's
 *     buffers; the waiter copies out under the lock).
 *   - Every slot that leaves FREE gets exactly one finish_job: a callback for
 *     an async job, a signal for a waited one. Queued slots are taken only
 *     by workers, and workers exit only when the queue is empty and the pool
 *     is stopping, so destroy (stop, join) reports every queued job.
 *   - The password is wiped (explicit_bzero) before the callback runs and
 *     before the slot is reused.
 */
#include "connectors/http/auth/passwords.h"

#include <argon2.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "processor/base/clock.h"

const sl_argon2_params sl_argon2_params_owasp = {
    .m_cost_kib = SL_ARGON2_M_MIN_KIB, .t_cost = SL_ARGON2_T_MIN, .parallelism = 1};

const sl_argon2_params sl_argon2_params_insecure_test_only = {
    .m_cost_kib = 64, .t_cost = 1, .parallelism = 1};

/* ---- Parameters ----------------------------------------------------------- */

/* The floors in force: production ones, unless the caller passed the one
 * test-only object (by address, so a weak struct cannot pass by accident).
 * The ceilings are never lifted. */
static sl_argon2_floors floors_for(const sl_argon2_params *policy) {
    if (policy == &sl_argon2_params_insecure_test_only)
        return (sl_argon2_floors){.m_min = 8, .t_min = 1, .p_min = 1};
    return sl_argon2_floors_production;
}

sl_err sl_argon2_params_check(const sl_argon2_params *params, char *errstr, size_t errstr_size) {
    const sl_argon2_params *p = params ? params : &sl_argon2_params_owasp;
    return sl_argon2_costs_check(p->m_cost_kib, p->t_cost, p->parallelism, floors_for(params),
                                 SL_ERR_CONFIG, errstr, errstr_size);
}

static sl_err check_password(const char *password, size_t len, char *errstr, size_t errstr_size) {
    if (!password || len == 0)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "empty password");
    if (len > SL_PASSWORD_MAX_LEN)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "password longer than %d bytes",
                       SL_PASSWORD_MAX_LEN);
    return SL_OK;
}

/* ---- Hash and verify ---------------------------------------------------- */

static sl_err fill_random(void *buf, size_t len, char *errstr, size_t errstr_size) {
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return sl_fail(errstr, errstr_size, SL_ERR_IO, "getrandom: %s", strerror(errno));
        }
        p += n;
        len -= (size_t)n;
    }
    return SL_OK;
}

static sl_err argon2_failure(int rc, char *errstr, size_t errstr_size) {
    sl_err err = rc == ARGON2_MEMORY_ALLOCATION_ERROR ? SL_ERR_NOMEM : SL_ERR_INVALID;
    return sl_fail(errstr, errstr_size, err, "argon2: %s", argon2_error_message(rc));
}

/* Hash without checking the password (shared by sl_password_hash and the
 * dummy, whose secret is binary). params already checked. */
static sl_err hash_raw(const void *pwd, size_t len, const sl_argon2_params *p, char *encoded,
                       size_t encoded_size, char *errstr, size_t errstr_size) {
    size_t need = argon2_encodedlen(p->t_cost, p->m_cost_kib, p->parallelism, SL_PASSWORD_SALT_LEN,
                                    SL_PASSWORD_TAG_LEN, Argon2_id);
    if (!encoded || encoded_size < need)
        return sl_fail(errstr, errstr_size, SL_ERR_FULL, "encoded hash needs %zu bytes", need);
    unsigned char salt[SL_PASSWORD_SALT_LEN];
    sl_err err = fill_random(salt, sizeof(salt), errstr, errstr_size);
    if (err)
        return err;
    int rc = argon2id_hash_encoded(p->t_cost, p->m_cost_kib, p->parallelism, pwd, len, salt,
                                   sizeof(salt), SL_PASSWORD_TAG_LEN, encoded, encoded_size);
    if (rc != ARGON2_OK) {
        encoded[0] = '\0';
        return argon2_failure(rc, errstr, errstr_size);
    }
    return SL_OK;
}

sl_err sl_password_hash(const char *password, size_t len, const sl_argon2_params *params,
                        char *encoded, size_t encoded_size, char *errstr, size_t errstr_size) {
    if (encoded && encoded_size > 0)
        encoded[0] = '\0';
    sl_err err = check_password(password, len, errstr, errstr_size);
    if (!err)
        err = sl_argon2_params_check(params, errstr, errstr_size);
    if (err)
        return err;
    return hash_raw(password, len, params ? params : &sl_argon2_params_owasp, encoded, encoded_size,
                    errstr, errstr_size);
}

sl_err sl_password_verify(const char *password, size_t len, const char *encoded,
                          const sl_argon2_params *params, bool *match, char *errstr,
                          size_t errstr_size) {
    *match = false;
    sl_err err = check_password(password, len, errstr, errstr_size);
    if (err)
        return err;
    sl_phc parsed;
    err = sl_phc_parse(encoded, floors_for(params), &parsed, errstr, errstr_size);
    if (err)
        return err;
    int rc = argon2id_verify(encoded, password, len);
    if (rc == ARGON2_OK) {
        *match = true;
        return SL_OK;
    }
    if (rc == ARGON2_VERIFY_MISMATCH)
        return SL_OK;
    return argon2_failure(rc, errstr, errstr_size);
}

sl_err sl_password_dummy_new(const sl_argon2_params *params, char *encoded, size_t encoded_size,
                             char *errstr, size_t errstr_size) {
    if (encoded && encoded_size > 0)
        encoded[0] = '\0';
    sl_err err = sl_argon2_params_check(params, errstr, errstr_size);
    if (err)
        return err;
    unsigned char secret[32];
    err = fill_random(secret, sizeof(secret), errstr, errstr_size);
    if (!err)
        err = hash_raw(secret, sizeof(secret), params ? params : &sl_argon2_params_owasp, encoded,
                       encoded_size, errstr, errstr_size);
    explicit_bzero(secret, sizeof(secret));
    return err;
}

sl_err sl_password_verify_dummy(const char *password, size_t len, const char *dummy_encoded,
                                const sl_argon2_params *params, char *errstr, size_t errstr_size) {
    bool match;
    /* The same path as a real verification, so the same checks and work; a
     * match is impossible in practice (32 random bytes) and ignored anyway. */
    return sl_password_verify(password, len, dummy_encoded, params, &match, errstr, errstr_size);
}

bool sl_password_needs_rehash(const char *encoded, const sl_argon2_params *params) {
    const sl_argon2_params *want = params ? params : &sl_argon2_params_owasp;
    sl_phc parsed;
    if (sl_phc_parse(encoded, floors_for(params), &parsed, NULL, 0))
        return true;
    return parsed.m != want->m_cost_kib || parsed.t != want->t_cost ||
           parsed.p != want->parallelism || parsed.salt_len != SL_PASSWORD_SALT_LEN ||
           parsed.tag_len != SL_PASSWORD_TAG_LEN;
}

/* ---- The pool ------------------------------------------------------------ */

typedef enum job_kind { JOB_HASH, JOB_VERIFY } job_kind;
typedef enum job_state { JOB_FREE, JOB_QUEUED, JOB_RUNNING, JOB_DONE } job_state;

typedef struct job {
    job_kind kind;
    job_state state;
    int refs;            /* 1 for the worker, +1 while a *_wait caller holds it */
    bool waited;         /* result goes to a waiter through `done_cond`, not `done` */
    bool abandoned;      /* the waiter timed out: do not start the work */
    bool use_dummy;      /* verify: unknown user, or the stored hash was refused */
    bool stored_refused; /* verify: report SL_ERR_INVALID after the dummy work */
    sl_password_done_fn *done;
    void *opaque;
    pthread_cond_t done_cond; /* state became DONE (waited jobs only) */
    sl_err err;
    bool match;
    size_t password_len;
    char password[SL_PASSWORD_MAX_LEN];
    char encoded[SL_PASSWORD_ENCODED_MAX]; /* verify: stored hash in; hash: result out */
    struct job *next_free;
} job;

struct sl_password_pool {
    pthread_mutex_t lock;
    pthread_cond_t work_cond; /* the queue is not empty, or stopping */
    pthread_cond_t idle_cond; /* a slot went back to the free list */
    sl_argon2_params params;
    const sl_argon2_params *policy; /* &params, or the test-only object */
    char dummy[SL_PASSWORD_ENCODED_MAX];
    job *jobs;
    int n_jobs, jobs_in_use, job_conds_ready;
    job *free_list;
    job **queue; /* ring of max_queue */
    int queue_cap, queue_head, queue_len;
    pthread_t *threads;
    int n_threads;
    bool stopping;
};

/* pool->lock held. */
static void release_job(sl_password_pool *pool, job *j) {
    if (--j->refs > 0)
        return;
    explicit_bzero(j->password, sizeof(j->password));
    explicit_bzero(j->encoded, sizeof(j->encoded));
    j->state = JOB_FREE;
    j->done = NULL;
    j->opaque = NULL;
    j->next_free = pool->free_list;
    pool->free_list = j;
    pool->jobs_in_use--;
    pthread_cond_broadcast(&pool->idle_cond);
}

/* Worker thread, without the lock: the slot is RUNNING and ours. */
static void run_job(sl_password_pool *pool, job *j) {
    j->match = false;
    if (j->kind == JOB_HASH) {
        j->err = hash_raw(j->password, j->password_len, pool->policy, j->encoded,
                          sizeof(j->encoded), NULL, 0);
    } else {
        const char *against = j->use_dummy ? pool->dummy : j->encoded;
        bool match = false;
        j->err = sl_password_verify(j->password, j->password_len, against, pool->policy, &match,
                                    NULL, 0);
        j->match = match && !j->use_dummy;
        if (!j->err && j->stored_refused)
            j->err = SL_ERR_INVALID;
    }
}

/* Worker thread, lock held (released around the callback). */
static void finish_job(sl_password_pool *pool, job *j) {
    explicit_bzero(j->password, j->password_len);
    j->state = JOB_DONE;
    if (j->waited) {
        pthread_cond_signal(&j->done_cond);
    } else {
        const char *encoded = j->kind == JOB_HASH && j->err == SL_OK ? j->encoded : NULL;
        pthread_mutex_unlock(&pool->lock);
        j->done(j->opaque, j->err, j->match, encoded);
        pthread_mutex_lock(&pool->lock);
    }
    release_job(pool, j);
}

static void *worker_main(void *arg) {
    sl_password_pool *pool = arg;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->queue_len == 0 && !pool->stopping)
            pthread_cond_wait(&pool->work_cond, &pool->lock);
        if (pool->queue_len == 0)
            break; /* stopping, and nothing left to report */
        job *j = pool->queue[pool->queue_head];
        pool->queue_head = (pool->queue_head + 1) % pool->queue_cap;
        pool->queue_len--;
        if (pool->stopping || j->abandoned) {
            j->err = SL_ERR_CANCELLED;
            j->match = false;
        } else {
            j->state = JOB_RUNNING;
            pthread_mutex_unlock(&pool->lock);
            run_job(pool, j);
            pthread_mutex_lock(&pool->lock);
        }
        finish_job(pool, j);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* Validate, take a slot, fill it and queue it. On SL_OK *out is the slot
 * (only meaningful to a waiter, which then holds a reference). */
static sl_err submit(sl_password_pool *pool, job_kind kind, const char *password, size_t len,
                     const char *encoded, sl_password_done_fn *done, void *opaque, bool waited,
                     job **out) {
    if (!pool || (!waited && !done))
        return SL_ERR_INVALID;
    sl_err err = check_password(password, len, NULL, 0);
    if (err)
        return err;
    /* Refuse a bad stored hash here, cheaply, but still queue the dummy work
     * so the answer takes the usual time. */
    bool use_dummy = kind == JOB_VERIFY && !encoded;
    bool refused = false;
    sl_phc parsed;
    if (kind == JOB_VERIFY && encoded &&
        sl_phc_parse(encoded, floors_for(pool->policy), &parsed, NULL, 0)) {
        use_dummy = true;
        refused = true;
    }

    pthread_mutex_lock(&pool->lock);
    if (pool->stopping) {
        pthread_mutex_unlock(&pool->lock);
        return SL_ERR_CANCELLED;
    }
    if (pool->queue_len >= pool->queue_cap || !pool->free_list) {
        pthread_mutex_unlock(&pool->lock);
        return SL_ERR_FULL;
    }
    job *j = pool->free_list;
    pool->free_list = j->next_free;
    pool->jobs_in_use++;
    j->next_free = NULL;
    j->kind = kind;
    j->state = JOB_QUEUED;
    j->refs = waited ? 2 : 1;
    j->waited = waited;
    j->abandoned = false;
    j->use_dummy = use_dummy;
    j->stored_refused = refused;
    j->done = done;
    j->opaque = opaque;
    j->err = SL_OK;
    j->match = false;
    j->password_len = len;
    memcpy(j->password, password, len);
    j->encoded[0] = '\0';
    if (kind == JOB_VERIFY && !use_dummy)
        memcpy(j->encoded, encoded, strlen(encoded) + 1); /* < ENCODED_MAX: sl_phc_parse checked */
    pool->queue[(pool->queue_head + pool->queue_len) % pool->queue_cap] = j;
    pool->queue_len++;
    pthread_cond_signal(&pool->work_cond);
    pthread_mutex_unlock(&pool->lock);
    *out = j;
    return SL_OK;
}

sl_err sl_password_pool_submit_hash(sl_password_pool *pool, const char *password, size_t len,
                                    sl_password_done_fn *done, void *opaque) {
    job *j;
    return submit(pool, JOB_HASH, password, len, NULL, done, opaque, false, &j);
}

sl_err sl_password_pool_submit_verify(sl_password_pool *pool, const char *password, size_t len,
                                      const char *encoded, sl_password_done_fn *done,
                                      void *opaque) {
    job *j;
    return submit(pool, JOB_VERIFY, password, len, encoded, done, opaque, false, &j);
}

/* Wait for a slot we hold a reference to; copy the result out under the
 * lock; drop our reference. */
static sl_err wait_job(sl_password_pool *pool, job *j, int timeout_ms, char *encoded,
                       size_t encoded_size, bool *match) {
    struct timespec deadline = sl_clock_mono_deadline(timeout_ms < 0 ? 0 : timeout_ms);
    sl_err err;
    pthread_mutex_lock(&pool->lock);
    while (j->state != JOB_DONE) {
        if (pthread_cond_timedwait(&j->done_cond, &pool->lock, &deadline) == ETIMEDOUT &&
            j->state != JOB_DONE) {
            j->abandoned = true; /* not started: the worker skips it */
            release_job(pool, j);
            pthread_mutex_unlock(&pool->lock);
            return SL_ERR_TIMEOUT;
        }
    }
    err = j->err;
    if (match)
        *match = j->match;
    if (encoded && !err) {
        size_t n = strlen(j->encoded) + 1;
        if (n > encoded_size)
            err = SL_ERR_FULL;
        else
            memcpy(encoded, j->encoded, n);
    }
    release_job(pool, j);
    pthread_mutex_unlock(&pool->lock);
    return err;
}

sl_err sl_password_pool_hash_wait(sl_password_pool *pool, const char *password, size_t len,
                                  int timeout_ms, char *encoded, size_t encoded_size) {
    if (!encoded || encoded_size == 0)
        return SL_ERR_INVALID;
    encoded[0] = '\0';
    job *j;
    sl_err err = submit(pool, JOB_HASH, password, len, NULL, NULL, NULL, true, &j);
    if (err)
        return err;
    return wait_job(pool, j, timeout_ms, encoded, encoded_size, NULL);
}

sl_err sl_password_pool_verify_wait(sl_password_pool *pool, const char *password, size_t len,
                                    const char *encoded, int timeout_ms, bool *match) {
    if (!match)
        return SL_ERR_INVALID;
    *match = false;
    job *j;
    sl_err err = submit(pool, JOB_VERIFY, password, len, encoded, NULL, NULL, true, &j);
    if (err)
        return err;
    return wait_job(pool, j, timeout_ms, NULL, 0, match);
}

int sl_password_pool_queued(sl_password_pool *pool) {
    pthread_mutex_lock(&pool->lock);
    int n = pool->queue_len;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

/* Free what sl_password_pool_new built; threads already joined. */
static void pool_free(sl_password_pool *pool) {
    for (int i = 0; i < pool->job_conds_ready; i++)
        pthread_cond_destroy(&pool->jobs[i].done_cond);
    if (pool->jobs)
        explicit_bzero(pool->jobs, (size_t)pool->n_jobs * sizeof(job));
    free(pool->jobs);
    free(pool->queue);
    free(pool->threads);
    pthread_cond_destroy(&pool->idle_cond);
    pthread_cond_destroy(&pool->work_cond);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

/* Stop and join the first n_threads workers. */
static void pool_stop(sl_password_pool *pool) {
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    pool->n_threads = 0;
}

sl_password_pool *sl_password_pool_new(int threads, int max_queue, const sl_argon2_params *params,
                                       char *errstr, size_t errstr_size) {
    if (threads < 1 || threads > 64) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "password pool threads %d outside [1, 64]",
                threads);
        return NULL;
    }
    if (max_queue < 1 || max_queue > 65536) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "password pool queue %d outside [1, 65536]",
                max_queue);
        return NULL;
    }
    if (sl_argon2_params_check(params, errstr, errstr_size))
        return NULL;
    sl_password_pool *pool = calloc(1, sizeof(*pool));
    if (!pool) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "password pool: out of memory");
        return NULL;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work_cond, NULL);
    pthread_cond_init(&pool->idle_cond, NULL);
    pool->params = params ? *params : sl_argon2_params_owasp;
    pool->policy = params == &sl_argon2_params_insecure_test_only ? params : &pool->params;
    pool->n_jobs = max_queue + threads;
    pool->queue_cap = max_queue;
    pool->jobs = calloc((size_t)pool->n_jobs, sizeof(job));
    pool->queue = calloc((size_t)max_queue, sizeof(job *));
    pool->threads = calloc((size_t)threads, sizeof(pthread_t));
    if (!pool->jobs || !pool->queue || !pool->threads) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "password pool: out of memory");
        goto fail;
    }
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    for (int i = pool->n_jobs - 1; i >= 0; i--) {
        job *j = &pool->jobs[i];
        pthread_cond_init(&j->done_cond, &attr);
        j->next_free = pool->free_list;
        pool->free_list = j;
    }
    pool->job_conds_ready = pool->n_jobs;
    pthread_condattr_destroy(&attr);
    if (sl_password_dummy_new(pool->policy, pool->dummy, sizeof(pool->dummy), errstr, errstr_size))
        goto fail;
    for (int i = 0; i < threads; i++) {
        int rc = pthread_create(&pool->threads[i], NULL, worker_main, pool);
        if (rc) {
            sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "password pool: pthread_create: %s",
                    strerror(rc));
            goto fail;
        }
        pool->n_threads++;
    }
    return pool;
fail:
    pool_stop(pool);
    pool_free(pool);
    return NULL;
}

void sl_password_pool_destroy(sl_password_pool *pool) {
    if (!pool)
        return;
    pool_stop(pool); /* workers report every queued job, then exit */
    /* Waiters still hold references to finished slots: let them copy out
     * and let go before the slots (and the lock they sleep on) are freed. */
    pthread_mutex_lock(&pool->lock);
    while (pool->jobs_in_use > 0)
        pthread_cond_wait(&pool->idle_cond, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
    pool_free(pool);
}
