/* Unit tests: the fixed-memory login throttle (token buckets, failure
 * lockouts with back-off, eviction under key spraying, thread safety). Time
 * is passed in, so nothing here sleeps. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "connectors/http/auth/throttle.h"

static char errstr[256];
static const int64_t T0 = 1000000; /* any monotonic start */
#define MINUTE (60 * 1000)

static sl_throttle *new_throttle(const sl_throttle_config *config) {
    sl_throttle *t = sl_throttle_new(config, errstr, sizeof(errstr));
    assert_non_null(t);
    return t;
}

static void a_key_is_allowed_its_burst_then_limited_until_a_token_is_back(void **state) {
    (void)state;
    sl_throttle *t = new_throttle(&sl_throttle_config_per_account); /* 5, then 1 per 12 s */
    int retry = -1;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(sl_throttle_check(t, "alice@example.com", T0, &retry),
                         SL_THROTTLE_ALLOWED);
        assert_int_equal(retry, 0);
    }
    assert_int_equal(sl_throttle_check(t, "alice@example.com", T0, &retry), SL_THROTTLE_LIMITED);
    assert_int_equal(retry, 12);
    assert_int_equal(sl_throttle_check(t, "alice@example.com", T0 + 6000, &retry),
                     SL_THROTTLE_LIMITED);
    assert_int_equal(retry, 6);
    assert_int_equal(sl_throttle_check(t, "alice@example.com", T0 + 12000, NULL),
                     SL_THROTTLE_ALLOWED);
    assert_int_equal(sl_throttle_check(t, "alice@example.com", T0 + 12000, &retry),
                     SL_THROTTLE_LIMITED);
    assert_int_equal(retry, 12);
    sl_throttle_destroy(t);
}

static void different_keys_are_independent(void **state) {
    (void)state;
    sl_throttle *t = new_throttle(&sl_throttle_config_per_account);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sl_throttle_check(t, "203.0.113.7", T0, NULL), SL_THROTTLE_ALLOWED);
    assert_int_equal(sl_throttle_check(t, "203.0.113.7", T0, NULL), SL_THROTTLE_LIMITED);
    assert_int_equal(sl_throttle_check(t, "203.0.113.8", T0, NULL), SL_THROTTLE_ALLOWED);
    for (int i = 0; i < 5; i++)
        sl_throttle_failure(t, "bob@example.com", T0);
    assert_int_equal(sl_throttle_check(t, "bob@example.com", T0, NULL), SL_THROTTLE_LIMITED);
    assert_int_equal(sl_throttle_check(t, "carol@example.com", T0, NULL), SL_THROTTLE_ALLOWED);
    sl_throttle_destroy(t);
}

static void failures_lock_an_account_and_back_off(void **state) {
    (void)state;
    sl_throttle *t = new_throttle(&sl_throttle_config_per_account); /* 5 per 15 min, 1 min.. */
    const char *key = "dave@example.com";
    int retry = -1;
    for (int i = 0; i < 4; i++) {
        sl_throttle_failure(t, key, T0);
        assert_int_equal(sl_throttle_check(t, key, T0, &retry), SL_THROTTLE_ALLOWED);
    }
    /* Four checks spent four tokens; the bucket has one left, but the fifth
     * failure locks regardless. */
    sl_throttle_failure(t, key, T0);
    assert_int_equal(sl_throttle_check(t, key, T0, &retry), SL_THROTTLE_LIMITED);
    assert_int_equal(retry, 60);
    /* Each further failure before the score leaks away doubles the lockout. */
    sl_throttle_failure(t, key, T0 + 1000);
    assert_int_equal(sl_throttle_check(t, key, T0 + 1000, &retry), SL_THROTTLE_LIMITED);
    assert_int_equal(retry, 120);
    sl_throttle_failure(t, key, T0 + 2000);
    assert_int_equal(sl_throttle_check(t, key, T0 + 2000, &retry), SL_THROTTLE_LIMITED);
    assert_int_equal(retry, 240);
    for (int i = 0; i < 40; i++)
        sl_throttle_failure(t, key, T0 + 3000);
    assert_int_equal(sl_throttle_check(t, key, T0 + 3000, &retry), SL_THROTTLE_LIMITED);
    assert_int_equal(retry, 15 * 60); /* capped */
    assert_int_equal(sl_throttle_check(t, key, T0 + 3000 + 15 * MINUTE, &retry),
                     SL_THROTTLE_ALLOWED);
    sl_throttle_destroy(t);
}

/* A login by e-mail and a login by id of the same account spend one bucket:
 * 5 failures in all lock it, not 5 per identifier (ASVS 6.1.3). */
static void email_and_id_of_one_account_share_one_bucket(void **state) {
    (void)state;
    sl_throttle *t = new_throttle(&sl_throttle_config_per_account);
    char by_email[128], by_id[128], unknown[128];
    const char *user_id = "6f1c3f0e-6a51-4a4e-9d38-0b9f5a1c2d3e";
    sl_throttle_account_key(by_email, sizeof(by_email), user_id, "erin@example.com");
    sl_throttle_account_key(by_id, sizeof(by_id), user_id, user_id);
    assert_string_equal(by_email, by_id);
    sl_throttle_account_key(unknown, sizeof(unknown), NULL, "nobody@example.com");
    assert_string_equal(unknown, "acct:nobody@example.com");
    int retry = -1;
    for (int i = 0; i < 5; i++) {
        const char *key = i % 2 ? by_id : by_email;
        assert_int_equal(sl_throttle_check(t, key, T0, &retry), SL_THROTTLE_ALLOWED);
        sl_throttle_failure(t, key, T0);
    }
    assert_int_equal(sl_throttle_check(t, by_email, T0, &retry), SL_THROTTLE_LIMITED);
    assert_int_equal(sl_throttle_check(t, by_id, T0, &retry), SL_THROTTLE_LIMITED);
    sl_throttle_destroy(t);
}

static void failures_leak_away_at_the_configured_rate(void **state) {
    (void)state;
    sl_throttle *t = new_throttle(&sl_throttle_config_per_account);
    const char *key = "erin@example.com";
    /* 4 failures now, 4 more 15 minutes later: the first 4 have leaked away
     * (5 per 15 min), so no lockout. */
    for (int i = 0; i < 4; i++)
        sl_throttle_failure(t, key, T0);
    for (int i = 0; i < 4; i++)
        sl_throttle_failure(t, key, T0 + 15 * MINUTE);
    assert_int_equal(sl_throttle_check(t, key, T0 + 15 * MINUTE, NULL), SL_THROTTLE_ALLOWED);
    /* ...but the same 8 within 3 minutes lock. */
    const char *other = "frank@example.com";
    for (int i = 0; i < 4; i++)
        sl_throttle_failure(t, other, T0);
    for (int i = 0; i < 4; i++)
        sl_throttle_failure(t, other, T0 + 3 * MINUTE);
    assert_int_equal(sl_throttle_check(t, other, T0 + 3 * MINUTE, NULL), SL_THROTTLE_LIMITED);
    sl_throttle_destroy(t);
}

static void a_success_clears_failures_and_lockout(void **state) {
    (void)state;
    sl_throttle *t = new_throttle(&sl_throttle_config_per_account);
    for (int i = 0; i < 5; i++)
        sl_throttle_failure(t, "gina@example.com", T0);
    assert_int_equal(sl_throttle_check(t, "gina@example.com", T0, NULL), SL_THROTTLE_LIMITED);
    sl_throttle_success(t, "gina@example.com");
    assert_int_equal(sl_throttle_check(t, "gina@example.com", T0, NULL), SL_THROTTLE_ALLOWED);
    sl_throttle_success(t, "never-seen@example.com"); /* no-op */
    assert_int_equal(sl_throttle_tracked(t), 1);
    sl_throttle_destroy(t);
}

static void a_clock_that_steps_back_refills_nothing(void **state) {
    (void)state;
    sl_throttle *t = new_throttle(&sl_throttle_config_per_account);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sl_throttle_check(t, "k", T0, NULL), SL_THROTTLE_ALLOWED);
    assert_int_equal(sl_throttle_check(t, "k", T0 - 3600 * 1000, NULL), SL_THROTTLE_LIMITED);
    assert_int_equal(sl_throttle_check(t, "k", T0, NULL), SL_THROTTLE_LIMITED);
    sl_throttle_destroy(t);
}

static void memory_stays_bounded_under_a_million_distinct_keys(void **state) {
    (void)state;
    sl_throttle_config config = sl_throttle_config_per_account;
    config.capacity = 1024;
    sl_throttle *t = new_throttle(&config);
    assert_int_equal(sl_throttle_capacity(t), 1024);
    for (int i = 0; i < 5; i++)
        sl_throttle_failure(t, "victim@example.com", T0);
    char key[64];
    for (int i = 0; i < 1000000; i++) {
        snprintf(key, sizeof(key), "spray-%d@example.com", i);
        sl_throttle_check(t, key, T0 + i / 1000, NULL);
    }
    assert_true(sl_throttle_tracked(t) <= sl_throttle_capacity(t));
    assert_true(sl_throttle_tracked(t) > 1024 / 2);
    /* Fresh sprayed keys evict each other, not the locked account. */
    int retry = 0;
    assert_int_equal(sl_throttle_check(t, "victim@example.com", T0 + 1000, &retry),
                     SL_THROTTLE_LIMITED);
    assert_true(retry > 0 && retry <= 60);
    sl_throttle_destroy(t);
}

typedef struct hammer {
    pthread_t thread;
    sl_throttle *throttle;
    int id;
    int allowed_shared;
} hammer;

static void *hammer_main(void *arg) {
    hammer *h = arg;
    char key[64];
    for (int i = 0; i < 20000; i++) {
        if (sl_throttle_check(h->throttle, "shared", T0, NULL) == SL_THROTTLE_ALLOWED)
            h->allowed_shared++;
        snprintf(key, sizeof(key), "t%d-%d", h->id, i % 1000);
        if (sl_throttle_check(h->throttle, key, T0 + i, NULL) == SL_THROTTLE_LIMITED)
            sl_throttle_failure(h->throttle, key, T0 + i);
        if (i % 100 == 0)
            sl_throttle_success(h->throttle, key);
    }
    return NULL;
}

static void concurrent_checks_spend_exactly_the_burst(void **state) {
    (void)state;
    /* burst 20; 65536 slots, so the 4000 other keys leave "shared" alone */
    sl_throttle *t = new_throttle(&sl_throttle_config_per_ip);
    hammer hammers[4];
    for (int i = 0; i < 4; i++) {
        hammers[i] = (hammer){.throttle = t, .id = i};
        assert_int_equal(pthread_create(&hammers[i].thread, NULL, hammer_main, &hammers[i]), 0);
    }
    int allowed = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(hammers[i].thread, NULL);
        allowed += hammers[i].allowed_shared;
    }
    /* The shared key's 80000 checks all happen at T0: exactly the burst
     * gets in, however the threads interleave. */
    assert_int_equal(allowed, 20);
    assert_true(sl_throttle_tracked(t) <= sl_throttle_capacity(t));
    sl_throttle_destroy(t);
}

static void bad_configurations_are_refused(void **state) {
    (void)state;
    sl_throttle_config c = sl_throttle_config_per_ip;
    c.capacity = 0;
    assert_null(sl_throttle_new(&c, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "capacity"));
    c = sl_throttle_config_per_ip;
    c.burst = 0;
    assert_null(sl_throttle_new(&c, errstr, sizeof(errstr)));
    c = sl_throttle_config_per_ip;
    c.refill_ms = 0;
    assert_null(sl_throttle_new(&c, errstr, sizeof(errstr)));
    c = sl_throttle_config_per_ip;
    c.lockout_max_ms = c.lockout_ms - 1;
    assert_null(sl_throttle_new(&c, errstr, sizeof(errstr)));
    assert_null(sl_throttle_new(NULL, errstr, sizeof(errstr)));
    sl_throttle_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_key_is_allowed_its_burst_then_limited_until_a_token_is_back),
        cmocka_unit_test(different_keys_are_independent),
        cmocka_unit_test(failures_lock_an_account_and_back_off),
        cmocka_unit_test(email_and_id_of_one_account_share_one_bucket),
        cmocka_unit_test(failures_leak_away_at_the_configured_rate),
        cmocka_unit_test(a_success_clears_failures_and_lockout),
        cmocka_unit_test(a_clock_that_steps_back_refills_nothing),
        cmocka_unit_test(memory_stays_bounded_under_a_million_distinct_keys),
        cmocka_unit_test(concurrent_checks_spend_exactly_the_burst),
        cmocka_unit_test(bad_configurations_are_refused),
    };
    return cmocka_run_group_tests_name("throttle", tests, NULL, NULL);
}
