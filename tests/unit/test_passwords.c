/*
 * Unit tests: argon2id hashing and verification, the dummy verification for
 * unknown users, and the bounded hashing pool.
 *
 * Real-cost (OWASP) hashes take ~30 ms each even under ASan (libargon2 itself
 * is not instrumented); the group setup makes the two every test shares, and
 * only a handful of tests make more. Everything else uses
 * sl_argon2_params_insecure_test_only. No test asserts on the timing of real
 * hashing except the factor-of-3 comparison of dummy and real verification.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "connectors/http/auth/passwords.h"
#include "tests/support/testutil.h"

static const char PASSWORD[] = "correct horse battery staple";
#define PW          PASSWORD, strlen(PASSWORD)
#define TEST_PARAMS (&sl_argon2_params_insecure_test_only)

static char errstr[256];

/* Made once by the group setup, at production cost. */
static char owasp_hash[SL_PASSWORD_ENCODED_MAX];
static char owasp_dummy[SL_PASSWORD_ENCODED_MAX];

static int group_setup(void **state) {
    (void)state;
    if (sl_password_hash(PW, NULL, owasp_hash, sizeof(owasp_hash), errstr, sizeof(errstr)))
        return -1;
    return sl_password_dummy_new(NULL, owasp_dummy, sizeof(owasp_dummy), errstr, sizeof(errstr))
               ? -1
               : 0;
}

/* ---- Hash and verify ------------------------------------------------------ */

static void a_hash_verifies_with_its_password(void **state) {
    (void)state;
    bool match = false;
    assert_int_equal(sl_password_verify(PW, owasp_hash, NULL, &match, errstr, sizeof(errstr)),
                     SL_OK);
    assert_true(match);
}

static void a_wrong_password_does_not_verify(void **state) {
    (void)state;
    bool match = true;
    const char wrong[] = "correct horse battery stapler";
    assert_int_equal(
        sl_password_verify(wrong, strlen(wrong), owasp_hash, NULL, &match, errstr, sizeof(errstr)),
        SL_OK);
    assert_false(match);
}

static void the_hash_is_argon2id_v19_with_owasp_parameters(void **state) {
    (void)state;
    const char prefix[] = "$argon2id$v=19$m=19456,t=2,p=1$";
    assert_memory_equal(owasp_hash, prefix, strlen(prefix));
    /* 16-byte salt and 32-byte tag, unpadded base64: 22 and 43 characters */
    const char *salt = owasp_hash + strlen(prefix);
    const char *tag = strchr(salt, '$');
    assert_non_null(tag);
    assert_int_equal(tag - salt, 22);
    assert_int_equal(strlen(tag + 1), 43);
    assert_false(sl_password_needs_rehash(owasp_hash, NULL));
    assert_int_equal(sl_argon2_params_owasp.m_cost_kib, 19456);
    assert_int_equal(sl_argon2_params_owasp.t_cost, 2);
    assert_int_equal(sl_argon2_params_owasp.parallelism, 1);
}

static void two_hashes_of_one_password_differ_by_their_salt(void **state) {
    (void)state;
    char a[SL_PASSWORD_ENCODED_MAX], b[SL_PASSWORD_ENCODED_MAX];
    assert_int_equal(sl_password_hash(PW, TEST_PARAMS, a, sizeof(a), errstr, sizeof(errstr)),
                     SL_OK);
    assert_int_equal(sl_password_hash(PW, TEST_PARAMS, b, sizeof(b), errstr, sizeof(errstr)),
                     SL_OK);
    assert_string_not_equal(a, b);
    bool match = false;
    assert_int_equal(sl_password_verify(PW, b, TEST_PARAMS, &match, errstr, sizeof(errstr)), SL_OK);
    assert_true(match);
}

static void weak_or_absurd_parameters_are_refused_for_hashing(void **state) {
    (void)state;
    const sl_argon2_params bad[] = {
        {19455, 2, 1},  /* memory below OWASP */
        {19456, 1, 1},  /* one pass */
        {19456, 2, 0},  /* no lanes */
        {262145, 2, 1}, /* more than 256 MiB */
        {19456, 11, 1}, /* too many passes */
        {19456, 2, 5},  /* too many lanes */
        {64, 1, 1},     /* the test-only values, but not the test-only object */
    };
    char out[SL_PASSWORD_ENCODED_MAX] = "x";
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(sl_argon2_params_check(&bad[i], errstr, sizeof(errstr)), SL_ERR_CONFIG);
        assert_int_equal(sl_password_hash(PW, &bad[i], out, sizeof(out), errstr, sizeof(errstr)),
                         SL_ERR_CONFIG);
        assert_string_equal(out, "");
        assert_null(sl_password_pool_new(1, 1, &bad[i], errstr, sizeof(errstr)));
    }
    assert_int_equal(sl_argon2_params_check(NULL, errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(sl_argon2_params_check(TEST_PARAMS, errstr, sizeof(errstr)), SL_OK);
}

static void stored_hashes_with_absurd_parameters_are_refused_without_running(void **state) {
    (void)state;
    static const char salt_tag[] =
        "c29tZXNhbHRzb21lc2FsdA$T0tUT2tVT0tUT2tVT0tUT2tVT0tUT2tVT0tUT2tVT0s";
    static const char *const heads[] = {
        "$argon2id$v=19$m=4194304,t=2,p=1$", /* 4 GiB */
        "$argon2id$v=19$m=4294967295,t=2,p=1$",
        "$argon2id$v=19$m=4294967296,t=2,p=1$", /* overflows uint32 */
        "$argon2id$v=19$m=19456,t=1000000,p=1$",
        "$argon2id$v=19$m=19456,t=2,p=255$",
        "$argon2id$v=19$m=64,t=1,p=1$", /* weak: refused outside tests */
        "$argon2id$v=19$m=019456,t=2,p=1$",
        "$argon2id$v=19$m=-19456,t=2,p=1$",
        "$argon2i$v=19$m=19456,t=2,p=1$",
        "$argon2d$v=19$m=19456,t=2,p=1$",
        "$argon2id$v=16$m=19456,t=2,p=1$",
        "$argon2id$m=19456,t=2,p=1$",
        "$argon2id$v=19$t=2,m=19456,p=1$",
    };
    char stored[2 * SL_PASSWORD_ENCODED_MAX];
    int64_t start = test_now_ms();
    for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        snprintf(stored, sizeof(stored), "%s%s", heads[i], salt_tag);
        bool match = true;
        assert_int_equal(sl_password_verify(PW, stored, NULL, &match, errstr, sizeof(errstr)),
                         SL_ERR_INVALID);
        assert_false(match);
        assert_null(strstr(errstr, PASSWORD));
    }
    /* Empty; a 4-byte salt; a 3-byte tag; padding; a trailing '$'; no tag. */
    static const char *const malformed[] = {
        "",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$T0tUT2tVT0tUT2tVT0tUT2tVT0tUT2tVT0tUT2tVT0s",
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$T0tU",
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$"
        "T0tUT2tVT0tUT2tVT0tUT2tVT0tUT2tVT0tUT2tVT0s=",
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$"
        "T0tUT2tVT0tUT2tVT0tUT2tVT0tUT2tVT0tUT2tVT0s$",
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA",
    };
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        bool match = true;
        assert_int_equal(sl_password_verify(PW, malformed[i], NULL, &match, errstr, sizeof(errstr)),
                         SL_ERR_INVALID);
    }
    char huge[SL_PASSWORD_ENCODED_MAX + 64];
    memset(huge, 'A', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    bool match = true;
    assert_int_equal(sl_password_verify(PW, huge, NULL, &match, errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    /* Running any of them would take tens of ms (or seconds, or 4 GiB). */
    assert_true(test_now_ms() - start < 50);
    assert_true(sl_password_needs_rehash(huge, NULL));
}

static void empty_and_over_long_passwords_are_refused(void **state) {
    (void)state;
    char out[SL_PASSWORD_ENCODED_MAX];
    static char longest[SL_PASSWORD_MAX_LEN + 1];
    memset(longest, 'p', sizeof(longest));
    bool match = true;
    assert_int_equal(sl_password_hash("", 0, TEST_PARAMS, out, sizeof(out), errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    assert_int_equal(
        sl_password_hash(NULL, 5, TEST_PARAMS, out, sizeof(out), errstr, sizeof(errstr)),
        SL_ERR_INVALID);
    assert_int_equal(sl_password_hash(longest, sizeof(longest), TEST_PARAMS, out, sizeof(out),
                                      errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    assert_int_equal(sl_password_verify("", 0, owasp_hash, NULL, &match, errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    assert_int_equal(sl_password_verify(longest, sizeof(longest), owasp_hash, NULL, &match, errstr,
                                        sizeof(errstr)),
                     SL_ERR_INVALID);
    assert_int_equal(sl_password_verify_dummy("", 0, owasp_dummy, NULL, errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    assert_false(match);
    /* The limit itself is fine. */
    assert_int_equal(sl_password_hash(longest, SL_PASSWORD_MAX_LEN, TEST_PARAMS, out, sizeof(out),
                                      errstr, sizeof(errstr)),
                     SL_OK);
    assert_int_equal(sl_password_verify(longest, SL_PASSWORD_MAX_LEN, out, TEST_PARAMS, &match,
                                        errstr, sizeof(errstr)),
                     SL_OK);
    assert_true(match);
}

static void a_too_small_output_buffer_is_full_not_truncated(void **state) {
    (void)state;
    char out[40];
    assert_int_equal(sl_password_hash(PW, TEST_PARAMS, out, sizeof(out), errstr, sizeof(errstr)),
                     SL_ERR_FULL);
    assert_string_equal(out, "");
}

static int64_t time_ms(void (*fn)(void)) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    fn();
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
}

static void real_verify(void) {
    bool match;
    assert_int_equal(sl_password_verify(PW, owasp_hash, NULL, &match, errstr, sizeof(errstr)),
                     SL_OK);
    assert_true(match);
}

static void dummy_verify(void) {
    assert_int_equal(sl_password_verify_dummy(PW, owasp_dummy, NULL, errstr, sizeof(errstr)),
                     SL_OK);
}

static int64_t median3(int64_t a, int64_t b, int64_t c) {
    return a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
}

static void an_unknown_user_costs_about_as_much_as_a_real_one(void **state) {
    (void)state;
    real_verify(); /* warm up: first touch of 19 MiB */
    int64_t real[3], dummy[3];
    for (int i = 0; i < 3; i++) {
        real[i] = time_ms(real_verify);
        dummy[i] = time_ms(dummy_verify);
    }
    int64_t r = median3(real[0], real[1], real[2]) + 1;
    int64_t d = median3(dummy[0], dummy[1], dummy[2]) + 1;
    print_message("# real verify %lld ms, dummy verify %lld ms (medians of 3)\n", (long long)r - 1,
                  (long long)d - 1);
    assert_true(d < 3 * r);
    assert_true(r < 3 * d);
    /* And it is built with the configured parameters. */
    assert_false(sl_password_needs_rehash(owasp_dummy, NULL));
}

static void needs_rehash_spots_other_parameters(void **state) {
    (void)state;
    const sl_argon2_params stronger = {.m_cost_kib = 19456, .t_cost = 3, .parallelism = 1};
    assert_true(sl_password_needs_rehash(owasp_hash, &stronger));
    assert_false(sl_password_needs_rehash(owasp_hash, NULL));
    assert_true(sl_password_needs_rehash("$argon2i$v=19$m=19456,t=2,p=1$x$y", NULL));
}

static void acceptable_hashes_are_argon2id_within_the_production_bounds(void **state) {
    (void)state;
    assert_true(sl_password_hash_acceptable(owasp_hash));
    assert_false(sl_password_hash_acceptable(NULL));
    assert_false(sl_password_hash_acceptable(""));
    assert_false(sl_password_hash_acceptable("$argon2i$v=19$m=19456,t=2,p=1$x$y"));
    /* a weak (test) cost, and an absurd one, are refused */
    char weak[SL_PASSWORD_ENCODED_MAX];
    assert_int_equal(sl_password_hash("password1", 9, &sl_argon2_params_insecure_test_only, weak,
                                      sizeof(weak), errstr, sizeof(errstr)),
                     SL_OK);
    assert_false(sl_password_hash_acceptable(weak));
    char huge[SL_PASSWORD_ENCODED_MAX];
    snprintf(huge, sizeof(huge), "%s", owasp_hash);
    char *m = strstr(huge, "m=19456");
    assert_non_null(m);
    memcpy(m, "m=99999999", 10); /* overwrites ",t" too: malformed either way */
    assert_false(sl_password_hash_acceptable(huge));
}

/* ---- The pool --------------------------------------------------------- */

/* Counts callbacks by outcome. */
typedef struct tally {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int ok, matches, cancelled, invalid, other;
    char last_encoded[SL_PASSWORD_ENCODED_MAX];
} tally;

static void tally_init(tally *t) {
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
}

static void tally_destroy(tally *t) {
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
}

static void tally_done(void *opaque, sl_err err, bool match, const char *encoded) {
    tally *t = opaque;
    pthread_mutex_lock(&t->lock);
    if (err == SL_OK) {
        t->ok++;
        t->matches += match;
        if (encoded)
            snprintf(t->last_encoded, sizeof(t->last_encoded), "%s", encoded);
    } else if (err == SL_ERR_CANCELLED) {
        t->cancelled++;
    } else if (err == SL_ERR_INVALID) {
        t->invalid++;
    } else {
        t->other++;
    }
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

static int tally_total(tally *t) {
    return t->ok + t->cancelled + t->invalid + t->other;
}

/* Wait (bounded) until `n` callbacks arrived; true if they did. */
static bool tally_await(tally *t, int n, int timeout_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000 + 1;
    pthread_mutex_lock(&t->lock);
    while (tally_total(t) < n)
        if (pthread_cond_timedwait(&t->cond, &t->lock, &deadline))
            break;
    bool reached = tally_total(t) >= n;
    pthread_mutex_unlock(&t->lock);
    return reached;
}

/* A callback that holds its worker until the test opens the gate: makes
 * "the worker is busy, jobs are queued" a state the test controls. */
typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool entered, open;
    sl_err err;
} gate;

static void gate_init(gate *g) {
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
}

static void gate_destroy(gate *g) {
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

static void gate_done(void *opaque, sl_err err, bool match, const char *encoded) {
    (void)match;
    (void)encoded;
    gate *g = opaque;
    pthread_mutex_lock(&g->lock);
    g->err = err;
    g->entered = true;
    pthread_cond_broadcast(&g->cond);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_await_entered(gate *g) {
    pthread_mutex_lock(&g->lock);
    while (!g->entered)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_open(gate *g) {
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* Occupy the pool's only worker with a job held at the gate. */
static void block_worker(sl_password_pool *pool, gate *g) {
    gate_init(g);
    assert_int_equal(sl_password_pool_submit_hash(pool, PW, gate_done, g), SL_OK);
    gate_await_entered(g);
}

static void the_pool_calls_back_once_for_every_submission(void **state) {
    (void)state;
    sl_password_pool *pool = sl_password_pool_new(2, 64, TEST_PARAMS, errstr, sizeof(errstr));
    assert_non_null(pool);
    char stored[SL_PASSWORD_ENCODED_MAX];
    assert_int_equal(
        sl_password_hash(PW, TEST_PARAMS, stored, sizeof(stored), errstr, sizeof(errstr)), SL_OK);
    tally hashes, verifies;
    tally_init(&hashes);
    tally_init(&verifies);
    const int n = 30;
    for (int i = 0; i < n; i++) {
        assert_int_equal(sl_password_pool_submit_hash(pool, PW, tally_done, &hashes), SL_OK);
        assert_int_equal(
            sl_password_pool_submit_verify(pool, PW, i % 2 ? stored : NULL, tally_done, &verifies),
            SL_OK);
    }
    assert_true(tally_await(&hashes, n, 10000));
    assert_true(tally_await(&verifies, n, 10000));
    sl_password_pool_destroy(pool);
    assert_int_equal(hashes.ok, n);
    assert_int_equal(verifies.ok, n);
    assert_int_equal(verifies.matches, n / 2); /* the unknown-user half never matches */
    bool match = false;
    assert_int_equal(
        sl_password_verify(PW, hashes.last_encoded, TEST_PARAMS, &match, errstr, sizeof(errstr)),
        SL_OK);
    assert_true(match);
    tally_destroy(&hashes);
    tally_destroy(&verifies);
}

static void a_full_queue_refuses_at_once(void **state) {
    (void)state;
    sl_password_pool *pool = sl_password_pool_new(1, 2, TEST_PARAMS, errstr, sizeof(errstr));
    assert_non_null(pool);
    gate g;
    block_worker(pool, &g);
    tally t;
    tally_init(&t);
    assert_int_equal(sl_password_pool_submit_hash(pool, PW, tally_done, &t), SL_OK);
    assert_int_equal(sl_password_pool_submit_verify(pool, PW, NULL, tally_done, &t), SL_OK);
    assert_int_equal(sl_password_pool_submit_hash(pool, PW, tally_done, &t), SL_ERR_FULL);
    assert_int_equal(sl_password_pool_submit_verify(pool, PW, NULL, tally_done, &t), SL_ERR_FULL);
    bool match = true;
    assert_int_equal(sl_password_pool_verify_wait(pool, PW, NULL, 1000, &match), SL_ERR_FULL);
    assert_int_equal(sl_password_pool_queued(pool), 2);
    gate_open(&g);
    assert_true(tally_await(&t, 2, 10000));
    sl_password_pool_destroy(pool);
    assert_int_equal(t.ok, 2); /* the refused ones never call back */
    assert_int_equal(g.err, SL_OK);
    tally_destroy(&t);
    gate_destroy(&g);
}

static void submissions_are_validated_before_queueing(void **state) {
    (void)state;
    sl_password_pool *pool = sl_password_pool_new(1, 4, TEST_PARAMS, errstr, sizeof(errstr));
    assert_non_null(pool);
    tally t;
    tally_init(&t);
    static char longest[SL_PASSWORD_MAX_LEN + 1];
    assert_int_equal(sl_password_pool_submit_hash(pool, "", 0, tally_done, &t), SL_ERR_INVALID);
    assert_int_equal(sl_password_pool_submit_hash(pool, longest, sizeof(longest), tally_done, &t),
                     SL_ERR_INVALID);
    assert_int_equal(sl_password_pool_submit_verify(pool, "", 0, NULL, tally_done, &t),
                     SL_ERR_INVALID);
    /* A refused stored hash still costs the dummy work, then says INVALID. */
    bool match = true;
    assert_int_equal(sl_password_pool_verify_wait(
                         pool, PW, "$argon2id$v=19$m=4194304,t=2,p=1$AAAA$BBBB", 10000, &match),
                     SL_ERR_INVALID);
    assert_false(match);
    sl_password_pool_destroy(pool);
    assert_int_equal(tally_total(&t), 0);
    tally_destroy(&t);
}

typedef struct destroyer {
    pthread_t thread;
    sl_password_pool *pool;
} destroyer;

static void *destroy_main(void *arg) {
    destroyer *d = arg;
    sl_password_pool_destroy(d->pool);
    return NULL;
}

static void shutdown_cancels_queued_jobs_and_reports_each(void **state) {
    (void)state;
    sl_password_pool *pool = sl_password_pool_new(1, 8, TEST_PARAMS, errstr, sizeof(errstr));
    assert_non_null(pool);
    gate g;
    block_worker(pool, &g);
    tally t;
    tally_init(&t);
    int queued = 0;
    for (; queued < 5; queued++)
        assert_int_equal(sl_password_pool_submit_hash(pool, PW, tally_done, &t), SL_OK);

    /* Destroy runs in another thread: it cannot finish while the worker is
     * held at the gate. Wait until submissions say the pool is stopping. */
    destroyer d = {.pool = pool};
    assert_int_equal(pthread_create(&d.thread, NULL, destroy_main, &d), 0);
    int64_t deadline = test_now_ms() + 10000;
    for (;;) {
        sl_err err = sl_password_pool_submit_hash(pool, PW, tally_done, &t);
        if (err == SL_ERR_CANCELLED)
            break;
        if (err == SL_OK)
            queued++; /* raced in before the stop: must be cancelled too */
        else
            assert_int_equal(err, SL_ERR_FULL);
        assert_true(test_now_ms() < deadline);
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    gate_open(&g);
    pthread_join(d.thread, NULL);

    /* When destroy returned, every queued job had reported, cancelled. */
    assert_int_equal(t.cancelled, queued);
    assert_int_equal(t.ok, 0);
    assert_int_equal(tally_total(&t), queued);
    assert_int_equal(g.err, SL_OK); /* the running job finished normally */
    tally_destroy(&t);
    gate_destroy(&g);
}

static void a_blocking_wait_times_out_and_never_writes_late(void **state) {
    (void)state;
    sl_password_pool *pool = sl_password_pool_new(1, 4, TEST_PARAMS, errstr, sizeof(errstr));
    assert_non_null(pool);
    gate g;
    block_worker(pool, &g);

    char out[SL_PASSWORD_ENCODED_MAX];
    memset(out, 'x', sizeof(out));
    int64_t start = test_now_ms();
    assert_int_equal(sl_password_pool_hash_wait(pool, PW, 50, out, sizeof(out)), SL_ERR_TIMEOUT);
    int64_t waited = test_now_ms() - start;
    assert_true(waited >= 45);
    assert_true(waited < 5000);
    bool match = true;
    assert_int_equal(sl_password_pool_verify_wait(pool, PW, NULL, 0, &match), SL_ERR_TIMEOUT);
    assert_false(match);

    gate_open(&g);
    /* The pool is healthy again, and the abandoned jobs were dropped. */
    char fresh[SL_PASSWORD_ENCODED_MAX];
    assert_int_equal(sl_password_pool_hash_wait(pool, PW, 10000, fresh, sizeof(fresh)), SL_OK);
    assert_int_equal(sl_password_pool_verify_wait(pool, PW, fresh, 10000, &match), SL_OK);
    assert_true(match);
    sl_password_pool_destroy(pool);
    assert_int_equal(out[0], '\0'); /* emptied at the call, never written after */
    for (size_t i = 1; i < sizeof(out); i++)
        assert_int_equal(out[i], 'x');
    gate_destroy(&g);
}

static void blocking_waits_return_hashes_and_answers(void **state) {
    (void)state;
    sl_password_pool *pool = sl_password_pool_new(2, 4, TEST_PARAMS, errstr, sizeof(errstr));
    assert_non_null(pool);
    char stored[SL_PASSWORD_ENCODED_MAX];
    assert_int_equal(sl_password_pool_hash_wait(pool, PW, 10000, stored, sizeof(stored)), SL_OK);
    assert_non_null(strstr(stored, "$argon2id$v=19$"));
    bool match = false;
    assert_int_equal(sl_password_pool_verify_wait(pool, PW, stored, 10000, &match), SL_OK);
    assert_true(match);
    assert_int_equal(sl_password_pool_verify_wait(pool, "nope", 4, stored, 10000, &match), SL_OK);
    assert_false(match);
    /* Unknown user: the dummy, never a match. */
    assert_int_equal(sl_password_pool_verify_wait(pool, PW, NULL, 10000, &match), SL_OK);
    assert_false(match);
    char small[16];
    assert_int_equal(sl_password_pool_hash_wait(pool, PW, 10000, small, sizeof(small)),
                     SL_ERR_FULL);
    sl_password_pool_destroy(pool);
}

static void a_production_pool_hashes_with_owasp_parameters(void **state) {
    (void)state;
    sl_password_pool *pool = sl_password_pool_new(1, 1, NULL, errstr, sizeof(errstr));
    assert_non_null(pool);
    char stored[SL_PASSWORD_ENCODED_MAX];
    assert_int_equal(sl_password_pool_hash_wait(pool, PW, 30000, stored, sizeof(stored)), SL_OK);
    assert_false(sl_password_needs_rehash(stored, NULL));
    /* A production pool refuses hashes made with test parameters. */
    char weak[SL_PASSWORD_ENCODED_MAX];
    assert_int_equal(sl_password_hash(PW, TEST_PARAMS, weak, sizeof(weak), errstr, sizeof(errstr)),
                     SL_OK);
    bool match = true;
    assert_int_equal(sl_password_pool_verify_wait(pool, PW, weak, 30000, &match), SL_ERR_INVALID);
    assert_false(match);
    sl_password_pool_destroy(pool);
}

static void pool_bounds_are_checked(void **state) {
    (void)state;
    assert_null(sl_password_pool_new(0, 4, TEST_PARAMS, errstr, sizeof(errstr)));
    assert_null(sl_password_pool_new(65, 4, TEST_PARAMS, errstr, sizeof(errstr)));
    assert_null(sl_password_pool_new(1, 0, TEST_PARAMS, errstr, sizeof(errstr)));
    assert_null(sl_password_pool_new(1, 65537, TEST_PARAMS, errstr, sizeof(errstr)));
    sl_password_pool_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_hash_verifies_with_its_password),
        cmocka_unit_test(a_wrong_password_does_not_verify),
        cmocka_unit_test(the_hash_is_argon2id_v19_with_owasp_parameters),
        cmocka_unit_test(two_hashes_of_one_password_differ_by_their_salt),
        cmocka_unit_test(weak_or_absurd_parameters_are_refused_for_hashing),
        cmocka_unit_test(stored_hashes_with_absurd_parameters_are_refused_without_running),
        cmocka_unit_test(empty_and_over_long_passwords_are_refused),
        cmocka_unit_test(a_too_small_output_buffer_is_full_not_truncated),
        cmocka_unit_test(an_unknown_user_costs_about_as_much_as_a_real_one),
        cmocka_unit_test(needs_rehash_spots_other_parameters),
        cmocka_unit_test(acceptable_hashes_are_argon2id_within_the_production_bounds),
        cmocka_unit_test(the_pool_calls_back_once_for_every_submission),
        cmocka_unit_test(a_full_queue_refuses_at_once),
        cmocka_unit_test(submissions_are_validated_before_queueing),
        cmocka_unit_test(shutdown_cancels_queued_jobs_and_reports_each),
        cmocka_unit_test(a_blocking_wait_times_out_and_never_writes_late),
        cmocka_unit_test(blocking_waits_return_hashes_and_answers),
        cmocka_unit_test(a_production_pool_hashes_with_owasp_parameters),
        cmocka_unit_test(pool_bounds_are_checked),
    };
    return cmocka_run_group_tests_name("passwords", tests, group_setup, NULL);
}
