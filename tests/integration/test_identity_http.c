/*
 * Integration tests: the identity HTTP routes (connectors/identity_http.c)
 * on two `sluice run` processes sharing the real broker and one signing
 * key: registration with tokens that work at once on either instance, the
 * 50-way race for one e-mail, idempotent retries, login by id and e-mail,
 * logout on one instance refused on the other (with the propagation delay
 * printed), refresh rotation and reuse detection, introspection, and bad
 * tokens and bad requests that must be refused without reaching a topic.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "connectors/http/auth/jwt.h"
#include "processor/kafka/client.h"
#include "tests/support/broker.h"
#include "tests/support/http_client.h"
#include "tests/support/instance.h"
#include "tests/support/testutil.h"

#define WAIT_MS 30000

#define REFRESH_GRACE_MS 3000

/* Let a refresh token's retry grace pass (time is the condition here). */
static void past_the_refresh_grace(void) {
    usleep((REFRESH_GRACE_MS + 1500) * 1000);
}

static test_cluster cluster; /* two sluice processes for the whole file */
static char users_commands[160], tokens_commands[160];
static int serial;

static int setup(void **state) {
    (void)state;
    if (!test_kafka_bootstrap())
        return 0;
    if (test_cluster_init(&cluster, "idhttp", 2) != 0 || test_cluster_sign(&cluster) != 0)
        return -1;
    snprintf(users_commands, sizeof(users_commands), "%susers.commands", cluster.prefix);
    snprintf(tokens_commands, sizeof(tokens_commands), "%stokens.commands", cluster.prefix);
    for (int i = 0; i < cluster.n; i++) {
        test_instance *inst = &cluster.instances[i];
        test_instance_set(inst, "reply.partitions=2");
        /* every client here is 127.0.0.1 and logs in often */
        test_instance_set(inst, "identity.throttle.ip.burst=10000");
        test_instance_set(inst, "identity.throttle.account.burst=100");
        /* short, so that the reuse tests wait past it */
        test_instance_set(inst, "identity.refresh.retry.grace.ms=%d", REFRESH_GRACE_MS);
    }
    return test_cluster_start(&cluster);
}

static int teardown(void **state) {
    (void)state;
    return test_cluster_stop(&cluster);
}

#define NEED_BROKER() test_skip_unless(cluster.started, TEST_NO_BROKER)

/* ------------------------------------------------------------------------ */
/* HTTP helpers                                                              */

static test_answer *call(int instance, const char *method, const char *path, const char *headers,
                         const char *body) {
    return test_http_call(cluster.instances[instance].http_port, method, path, headers, body,
                          body ? strlen(body) : 0);
}

/* `call` as a client that honours a 503 with Retry-After (an instance
 * that does not know the key's owner yet, right after the cluster
 * started) does: again, for up to WAIT_MS. */
static test_answer *call_retrying(int instance, const char *method, const char *path,
                                  const char *headers, const char *body) {
    int64_t deadline = test_now_ms() + WAIT_MS;
    test_answer *a = call(instance, method, path, headers, body);
    while (a->status == 503 && strstr(a->headers, "Retry-After: ") && test_now_ms() < deadline) {
        test_answer_free(a);
        usleep(200000);
        a = call(instance, method, path, headers, body);
    }
    return a;
}

static void email_for(char *out, size_t size, const char *what) {
    snprintf(out, size, "%s-%d-%d@Example.ORG", what, (int)getpid(), ++serial);
}

static char *register_body(const char *email, const char *password) {
    char *body = malloc(1024);
    assert_non_null(body);
    if (email)
        snprintf(body, 1024,
                 "{\"first_name\":\"Ada\",\"second_name\":\"Lovelace\",\"birthdate\":"
                 "\"1985-12-10\",\"biography\":\"Engines\",\"city\":\"London\",\"password\":\"%s\","
                 "\"email\":\"%s\"}",
                 password, email);
    else
        snprintf(body, 1024,
                 "{\"first_name\":\"Ada\",\"second_name\":\"Lovelace\",\"city\":\"London\","
                 "\"password\":\"%s\"}",
                 password);
    return body;
}

static test_answer *do_register(int instance, const char *email, const char *password,
                                const char *headers) {
    char *body = register_body(email, password);
    test_answer *a = call(instance, "POST", "/user/register", headers, body);
    free(body);
    return a;
}

static test_answer *do_login_email(int instance, const char *email, const char *password) {
    char body[512];
    snprintf(body, sizeof(body), "{\"email\":\"%s\",\"password\":\"%s\"}", email, password);
    return call(instance, "POST", "/login", NULL, body);
}

static void bearer(char *out, size_t size, const char *token) {
    snprintf(out, size, "Authorization: Bearer %s\r\n", token);
}

/* Introspect `token` on `instance`, authorized by `caller_token`. */
static test_answer *introspect(int instance, const char *caller_token, const char *token) {
    char headers[SL_JWT_MAX_TOKEN + 128], body[SL_JWT_MAX_TOKEN + 16];
    snprintf(headers, sizeof(headers),
             "Authorization: Bearer %s\r\nContent-Type: application/x-www-form-urlencoded\r\n",
             caller_token);
    snprintf(body, sizeof(body), "token=%s", token);
    return call(instance, "POST", "/auth/introspect", headers, body);
}

static bool active(const test_answer *a) {
    json_t *v = a->json ? json_object_get(a->json, "active") : NULL;
    return a->status == 200 && json_is_true(v);
}

/* A fresh user registered through instance 0, with its first tokens. */
typedef struct user {
    char email[128];
    char id[64];
    char access[SL_JWT_MAX_TOKEN + 1], refresh[SL_JWT_MAX_TOKEN + 1];
} user;

static void new_user(user *u, const char *what) {
    email_for(u->email, sizeof(u->email), what);
    /* retried after a 503 (an instance restarted by the test before may
     * still be restoring), with an Idempotency-Key as a client would */
    char headers[192], *body = register_body(u->email, "correct horse battery");
    snprintf(headers, sizeof(headers), "Idempotency-Key: %s\r\n", u->email);
    test_answer *a = call_retrying(0, "POST", "/user/register", headers, body);
    free(body);
    if (a->status != 200)
        fail_msg("register: %d %s", a->status, a->body);
    snprintf(u->id, sizeof(u->id), "%s", test_answer_field(a, "user_id"));
    snprintf(u->access, sizeof(u->access), "%s", test_answer_field(a, "token"));
    snprintf(u->refresh, sizeof(u->refresh), "%s", test_answer_field(a, "refresh_token"));
    test_answer_free(a);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

static void registration_returns_tokens_that_work_at_once_on_both_instances(void **state) {
    (void)state;
    NEED_BROKER();
    user u;
    new_user(&u, "ada");
    assert_int_equal(strlen(u.id), 36);
    for (int i = 0; i < 2; i++) {
        test_answer *a = introspect(i, u.access, u.access);
        if (!active(a))
            fail_msg("instance %d: %d %s", i, a->status, a->body);
        assert_string_equal(test_answer_field(a, "sub"), u.id);
        assert_string_equal(test_answer_field(a, "token_type"), "access_token");
        test_answer_free(a);
    }
    char path[128];
    snprintf(path, sizeof(path), "/user/get/%s", u.id);
    char first[sizeof(((test_answer *)0)->body)] = "";
    for (int i = 0; i < 2; i++) {
        test_answer *a = NULL;
        /* users-by-id is fed through a repartition topic: it may lag the
         * reply by a commit interval. */
        int64_t deadline = test_now_ms() + WAIT_MS;
        do {
            test_answer_free(a);
            a = call(i, "GET", path, NULL, NULL);
        } while (a->status != 200 && test_now_ms() < deadline && usleep(100000) == 0);
        if (a->status != 200)
            fail_msg("instance %d: %d %s", i, a->status, a->body);
        assert_string_equal(test_answer_field(a, "id"), u.id);
        assert_string_equal(test_answer_field(a, "first_name"), "Ada");
        assert_string_equal(test_answer_field(a, "second_name"), "Lovelace");
        assert_string_equal(test_answer_field(a, "birthdate"), "1985-12-10");
        assert_string_equal(test_answer_field(a, "biography"), "Engines");
        assert_string_equal(test_answer_field(a, "city"), "London");
        assert_null(json_object_get(a->json, "password_hash"));
        assert_null(strstr(a->body, "argon2"));
        if (i == 0)
            snprintf(first, sizeof(first), "%s", a->body);
        else
            assert_string_equal(a->body, first);
        test_answer_free(a);
    }
    test_answer *missing =
        call_retrying(1, "GET", "/user/get/00000000-0000-4000-8000-000000000000", NULL, NULL);
    test_assert_error_shape(missing, 404);
    test_answer_free(missing);
    test_answer *bad = call(0, "GET", "/user/get/not-a-uuid", NULL, NULL);
    test_assert_error_shape(bad, 400);
    test_answer_free(bad);
}

typedef struct race_arg {
    int instance;
    const char *email;
    int index;
    int status;
} race_arg;

static void *race_register(void *opaque) {
    race_arg *r = opaque;
    char password[64];
    snprintf(password, sizeof(password), "password number %d", r->index);
    test_answer *a = do_register(r->instance, r->email, password, NULL);
    r->status = a->status;
    test_answer_free(a);
    return NULL;
}

static void fifty_concurrent_registrations_of_one_email_have_one_winner(void **state) {
    (void)state;
    NEED_BROKER();
    char email[128];
    email_for(email, sizeof(email), "race");
    enum { N = 50 };
    race_arg args[N];
    pthread_t threads[N];
    for (int i = 0; i < N; i++) {
        args[i] = (race_arg){.instance = i % 2, .email = email, .index = i};
        assert_int_equal(pthread_create(&threads[i], NULL, race_register, &args[i]), 0);
    }
    int ok = 0, conflict = 0, other = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        if (args[i].status == 200)
            ok++;
        else if (args[i].status == 409)
            conflict++;
        else
            other++;
    }
    fprintf(stderr, "# 50 registrations of one e-mail: %d x 200, %d x 409, %d other\n", ok,
            conflict, other);
    assert_int_equal(other, 0);
    assert_int_equal(ok, 1);
    assert_int_equal(conflict, N - 1);
}

static void a_retry_with_the_same_idempotency_key_registers_once(void **state) {
    (void)state;
    NEED_BROKER();
    char headers[128];
    snprintf(headers, sizeof(headers), "Idempotency-Key: retry-%d-%d\r\n", (int)getpid(), ++serial);
    test_answer *first = do_register(0, NULL, "correct horse battery", headers);
    test_answer *again = do_register(1, NULL, "correct horse battery", headers);
    assert_int_equal(first->status, 200);
    assert_int_equal(again->status, 200);
    assert_string_equal(test_answer_field(first, "user_id"), test_answer_field(again, "user_id"));
    /* Without the key the same body is a new user. */
    test_answer *fresh = do_register(0, NULL, "correct horse battery", NULL);
    assert_int_equal(fresh->status, 200);
    assert_string_not_equal(test_answer_field(first, "user_id"),
                            test_answer_field(fresh, "user_id"));
    test_answer_free(first);
    test_answer_free(again);
    test_answer_free(fresh);
}

/* users-by-id lags the registration reply by a repartition hop: wait until
 * both instances answer for the user (a failed login would count against
 * the account's throttle). */
static void wait_user_visible(const char *id) {
    char path[128];
    snprintf(path, sizeof(path), "/user/get/%s", id);
    for (int i = 0; i < 2; i++) {
        test_answer *a = NULL;
        int64_t deadline = test_now_ms() + WAIT_MS;
        do {
            test_answer_free(a);
            a = call(i, "GET", path, NULL, NULL);
        } while (a->status != 200 && test_now_ms() < deadline && usleep(50000) == 0);
        if (a->status != 200)
            fail_msg("user %s on instance %d: %d %s", id, i, a->status, a->body);
        test_answer_free(a);
    }
}

static void login_by_id_and_by_email_and_unknown_users_look_alike(void **state) {
    (void)state;
    NEED_BROKER();
    user u;
    new_user(&u, "login");
    wait_user_visible(u.id);
    char body[512];
    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"password\":\"correct horse battery\"}", u.id);
    for (int i = 0; i < 2; i++) {
        test_answer *a = call(i, "POST", "/login", NULL, body);
        if (a->status != 200)
            fail_msg("login by id on %d: %d %s", i, a->status, a->body);
        assert_non_null(test_answer_field(a, "token"));
        assert_non_null(test_answer_field(a, "refresh_token"));
        test_answer_free(a);
        a = do_login_email(i, u.email, "correct horse battery");
        if (a->status != 200)
            fail_msg("login by e-mail on %d: %d %s", i, a->status, a->body);
        test_answer_free(a);
    }
    test_answer *wrong = do_login_email(1, u.email, "wrong password");
    char nobody[128];
    email_for(nobody, sizeof(nobody), "nobody");
    test_answer *unknown = do_login_email(1, nobody, "wrong password");
    test_assert_error_shape(wrong, 401);
    test_assert_error_shape(unknown, 401);
    assert_string_equal(test_answer_field(wrong, "message"), test_answer_field(unknown, "message"));
    test_answer_free(wrong);
    test_answer_free(unknown);
}

static void repeated_wrong_passwords_are_throttled(void **state) {
    (void)state;
    NEED_BROKER();
    user u;
    new_user(&u, "throttle");
    int status = 0, attempts = 0;
    for (; attempts < 10 && status != 429; attempts++) {
        test_answer *a = do_login_email(attempts % 2, u.email, "wrong password");
        status = a->status;
        if (status == 429)
            assert_non_null(strstr(a->headers, "Retry-After: "));
        test_answer_free(a);
    }
    fprintf(stderr, "# 429 after %d wrong passwords\n", attempts);
    assert_int_equal(status, 429);
    /* the right password is refused too while the account is locked */
    test_answer *a = do_login_email(0, u.email, "correct horse battery");
    assert_int_equal(a->status, 429);
    test_answer_free(a);
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void logout_on_one_instance_is_refused_on_the_other(void **state) {
    (void)state;
    NEED_BROKER();
    user u;
    new_user(&u, "logout");
    enum { ROUNDS = 10 };
    long long delays[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        test_answer *login = do_login_email(r % 2, u.email, "correct horse battery");
        assert_int_equal(login->status, 200);
        char token[SL_JWT_MAX_TOKEN + 1], headers[SL_JWT_MAX_TOKEN + 64];
        snprintf(token, sizeof(token), "%s", test_answer_field(login, "token"));
        test_answer_free(login);
        int from = r % 2, to = 1 - from;
        test_answer *before = introspect(to, token, token);
        assert_true(active(before));
        test_answer_free(before);
        bearer(headers, sizeof(headers), token);
        test_answer *out = call(from, "POST", "/auth/logout", headers, NULL);
        if (out->status != 204)
            fail_msg("logout: %d %s", out->status, out->body);
        test_answer_free(out);
        int64_t t0 = test_now_ms();
        /* the instance that logged out refuses it at once (its reply came
         * after the commit; its own blacklist may still lag a little) */
        test_answer *after = NULL;
        int64_t deadline = t0 + WAIT_MS;
        do {
            test_answer_free(after);
            after = introspect(to, token, token);
        } while (after->status == 200 && test_now_ms() < deadline && usleep(2000) == 0);
        delays[r] = test_now_ms() - t0;
        test_assert_error_shape(after, 401);
        test_answer_free(after);
    }
    qsort(delays, ROUNDS, sizeof(delays[0]), cmp_ll);
    fprintf(stderr,
            "# logout propagation to the other instance over %d logouts: p50 %lld ms, p99 "
            "(max) %lld ms\n",
            ROUNDS, delays[ROUNDS / 2], delays[ROUNDS - 1]);
}

/* A refresh on one instance right after a logout on the other must not
 * issue tokens: the rotation's owner looks the session up in its global
 * blacklist, which catches up to what tokens.revoked held when the refresh
 * was sent (before, the other instance's blacklist lag let it answer 200
 * with a new pair, refused only afterwards). */
static void a_refresh_right_after_a_logout_elsewhere_is_refused(void **state) {
    (void)state;
    NEED_BROKER();
    user u;
    new_user(&u, "logout-refresh");
    enum { ROUNDS = 10 };
    int issued = 0;
    for (int r = 0; r < ROUNDS; r++) {
        test_answer *login = do_login_email(r % 2, u.email, "correct horse battery");
        assert_int_equal(login->status, 200);
        char access[SL_JWT_MAX_TOKEN + 1], refresh[SL_JWT_MAX_TOKEN + 1];
        char headers[SL_JWT_MAX_TOKEN + 64], body[SL_JWT_MAX_TOKEN + 64];
        snprintf(access, sizeof(access), "%s", test_answer_field(login, "token"));
        snprintf(refresh, sizeof(refresh), "%s", test_answer_field(login, "refresh_token"));
        test_answer_free(login);
        int from = r % 2, to = 1 - from;
        bearer(headers, sizeof(headers), access);
        test_answer *out = call(from, "POST", "/auth/logout", headers, NULL);
        if (out->status != 204)
            fail_msg("logout: %d %s", out->status, out->body);
        test_answer_free(out);
        snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", refresh);
        test_answer *again = call(to, "POST", "/auth/refresh", NULL, body);
        if (again->status == 200)
            issued++;
        else
            test_assert_error_shape(again, 401);
        test_answer_free(again);
    }
    print_message("# refreshes answered 200 right after a logout on the other instance: %d of %d\n",
                  issued, ROUNDS);
    assert_int_equal(issued, 0);
}

/* Introspect `token` on `instance` until it is inactive (revoked: the
 * instance's blacklist caught up), or fail after WAIT_MS. */
static void wait_inactive(int instance, const char *caller, const char *token) {
    test_answer *a = NULL;
    int64_t deadline = test_now_ms() + WAIT_MS;
    do {
        test_answer_free(a);
        a = introspect(instance, caller, token);
    } while (active(a) && test_now_ms() < deadline && usleep(20000) == 0);
    assert_int_equal(a->status, 200);
    assert_false(active(a)); /* RFC 7662: revoked is inactive */
    test_answer_free(a);
}

static test_answer *change_password(int instance, const char *access, const char *current,
                                    const char *next) {
    char headers[SL_JWT_MAX_TOKEN + 64], body[512];
    bearer(headers, sizeof(headers), access);
    snprintf(body, sizeof(body), "{\"current_password\":\"%s\",\"new_password\":\"%s\"}",
             current, next);
    return call(instance, "POST", "/user/password", headers, body);
}

static test_answer *login_by_id(int instance, const char *id, const char *password) {
    char body[512];
    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"password\":\"%s\"}", id, password);
    return call(instance, "POST", "/login", NULL, body);
}

/* POST /user/password: the current password is checked, the new one works
 * at once on the other instance, every other session ends (its access
 * tokens inactive, its refresh tokens refused) and the caller goes on with
 * the fresh pair it got. */
static void a_password_change_ends_the_other_sessions_and_is_seen_everywhere(void **state) {
    (void)state;
    NEED_BROKER();
    user u;
    new_user(&u, "password");
    test_answer *other = do_login_email(1, u.email, "correct horse battery");
    assert_int_equal(other->status, 200);
    char other_access[SL_JWT_MAX_TOKEN + 1], other_refresh[SL_JWT_MAX_TOKEN + 1];
    snprintf(other_access, sizeof(other_access), "%s", test_answer_field(other, "token"));
    snprintf(other_refresh, sizeof(other_refresh), "%s", test_answer_field(other, "refresh_token"));
    test_answer_free(other);

    test_answer *a = change_password(0, u.access, "not the password", "new horse battery");
    test_assert_error_shape(a, 403);
    test_answer_free(a);
    a = change_password(0, u.access, "correct horse battery", "short");
    test_assert_error_shape(a, 400);
    test_answer_free(a);
    a = call(0, "POST", "/user/password", NULL,
             "{\"current_password\":\"correct horse battery\",\"new_password\":\"x\"}");
    test_assert_error_shape(a, 401); /* no token */
    test_answer_free(a);

    a = change_password(0, u.access, "correct horse battery", "new horse battery");
    if (a->status != 200)
        fail_msg("password change: %d %s", a->status, a->body);
    char access[SL_JWT_MAX_TOKEN + 1], refresh[SL_JWT_MAX_TOKEN + 1];
    snprintf(access, sizeof(access), "%s", test_answer_field(a, "token"));
    snprintf(refresh, sizeof(refresh), "%s", test_answer_field(a, "refresh_token"));
    test_answer_free(a);

    /* At once on the other instance: the new password logs in, the old one
     * does not. */
    a = login_by_id(1, u.id, "new horse battery");
    if (a->status != 200)
        fail_msg("login with the new password on the other instance: %d %s", a->status, a->body);
    test_answer_free(a);
    a = login_by_id(1, u.id, "correct horse battery");
    test_assert_error_shape(a, 401);
    test_answer_free(a);

    /* The other sessions end: refresh tokens refused at once anywhere,
     * access tokens inactive on both instances. */
    char body[SL_JWT_MAX_TOKEN + 64];
    snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", other_refresh);
    a = call(0, "POST", "/auth/refresh", NULL, body);
    test_assert_error_shape(a, 401);
    test_answer_free(a);
    snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", u.refresh);
    a = call(1, "POST", "/auth/refresh", NULL, body);
    test_assert_error_shape(a, 401);
    test_answer_free(a);
    for (int i = 0; i < 2; i++) {
        wait_inactive(i, access, u.access);
        wait_inactive(i, access, other_access);
        a = introspect(i, access, access);
        assert_true(active(a)); /* the caller's new session goes on */
        test_answer_free(a);
    }
    snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", refresh);
    a = call(1, "POST", "/auth/refresh", NULL, body);
    if (a->status != 200)
        fail_msg("refresh of the new session: %d %s", a->status, a->body);
    test_answer_free(a);
}

static void refresh_rotates_and_reuse_revokes_the_session(void **state) {
    (void)state;
    NEED_BROKER();
    user u, observer;
    new_user(&u, "refresh");
    new_user(&observer, "observer");
    char body[SL_JWT_MAX_TOKEN + 64];
    snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", u.refresh);
    test_answer *rotated = call(1, "POST", "/auth/refresh", NULL, body);
    if (rotated->status != 200)
        fail_msg("refresh: %d %s", rotated->status, rotated->body);
    char access2[SL_JWT_MAX_TOKEN + 1], refresh2[SL_JWT_MAX_TOKEN + 1];
    snprintf(access2, sizeof(access2), "%s", test_answer_field(rotated, "token"));
    snprintf(refresh2, sizeof(refresh2), "%s", test_answer_field(rotated, "refresh_token"));
    assert_string_not_equal(refresh2, u.refresh);
    test_answer_free(rotated);
    /* an access token is not a refresh token */
    char as_refresh[SL_JWT_MAX_TOKEN + 64];
    snprintf(as_refresh, sizeof(as_refresh), "{\"refresh_token\":\"%s\"}", access2);
    test_answer *wrong_type = call(0, "POST", "/auth/refresh", NULL, as_refresh);
    test_assert_error_shape(wrong_type, 401);
    test_answer_free(wrong_type);
    /* the old refresh token again, after the retry grace: reuse, the
     * whole session goes */
    past_the_refresh_grace();
    test_answer *reuse = call(0, "POST", "/auth/refresh", NULL, body);
    test_assert_error_shape(reuse, 401);
    test_answer_free(reuse);
    char body2[SL_JWT_MAX_TOKEN + 64];
    snprintf(body2, sizeof(body2), "{\"refresh_token\":\"%s\"}", refresh2);
    for (int i = 0; i < 2; i++) {
        wait_inactive(i, observer.access, access2);
        test_answer *a = call(i, "POST", "/auth/refresh", NULL, body2);
        test_assert_error_shape(a, 401);
        test_answer_free(a);
    }
}

/* The issue's retried refresh: the same refresh token twice within the
 * grace (a client retrying after a timeout, here on the other instance)
 * gets the same pair both times and the session lives on; the same token
 * after the grace is reuse, as before. */
static void a_retried_refresh_within_the_grace_gets_the_same_pair(void **state) {
    (void)state;
    NEED_BROKER();
    user u, observer;
    new_user(&u, "retry");
    new_user(&observer, "retry-observer");
    char body[SL_JWT_MAX_TOKEN + 64];
    snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", u.refresh);
    char access[2][SL_JWT_MAX_TOKEN + 1], refresh[2][SL_JWT_MAX_TOKEN + 1];
    for (int i = 0; i < 2; i++) {
        test_answer *a = call(i, "POST", "/auth/refresh", NULL, body);
        if (a->status != 200)
            fail_msg("refresh %d: %d %s", i, a->status, a->body);
        snprintf(access[i], sizeof(access[i]), "%s", test_answer_field(a, "token"));
        snprintf(refresh[i], sizeof(refresh[i]), "%s", test_answer_field(a, "refresh_token"));
        test_answer_free(a);
    }
    assert_string_equal(access[0], access[1]); /* RS256: the same bytes */
    assert_string_equal(refresh[0], refresh[1]);
    assert_string_not_equal(refresh[0], u.refresh);
    /* the session still works: the access token is active on both
     * instances, and the new refresh token rotates */
    for (int i = 0; i < 2; i++) {
        test_answer *a = introspect(i, observer.access, access[0]);
        assert_true(active(a));
        test_answer_free(a);
    }
    char body2[SL_JWT_MAX_TOKEN + 64];
    snprintf(body2, sizeof(body2), "{\"refresh_token\":\"%s\"}", refresh[0]);
    test_answer *next = call(1, "POST", "/auth/refresh", NULL, body2);
    if (next->status != 200)
        fail_msg("refresh of the retried pair: %d %s", next->status, next->body);
    char access3[SL_JWT_MAX_TOKEN + 1];
    snprintf(access3, sizeof(access3), "%s", test_answer_field(next, "token"));
    test_answer_free(next);
    /* the first token once more, after the grace: reuse revokes the session */
    past_the_refresh_grace();
    test_answer *reuse = call(0, "POST", "/auth/refresh", NULL, body);
    test_assert_error_shape(reuse, 401);
    test_answer_free(reuse);
    wait_inactive(1, observer.access, access3);
}

/* A logout retried with the same access token (its first answer lost) is
 * answered 204 again, on either instance, and the token is refused. */
static void a_retried_logout_is_answered_the_same(void **state) {
    (void)state;
    NEED_BROKER();
    user u, observer;
    new_user(&u, "logout-retry");
    new_user(&observer, "logout-retry-observer");
    char headers[SL_JWT_MAX_TOKEN + 64];
    bearer(headers, sizeof(headers), u.access);
    for (int i = 0; i < 2; i++) {
        test_answer *out = call(i, "POST", "/auth/logout", headers, NULL);
        if (out->status != 204)
            fail_msg("logout %d: %d %s", i, out->status, out->body);
        test_answer_free(out);
    }
    for (int i = 0; i < 2; i++)
        wait_inactive(i, observer.access, u.access);
}

/* High watermarks of every partition of `topic`, summed. */
static long long topic_size(const char *topic) {
    rd_kafka_t *rk = test_producer(test_kafka_bootstrap(), NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    assert_int_equal(rd_kafka_metadata(rk, 0, t, &md, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    long long sum = 0;
    for (int p = 0; p < md->topics[0].partition_cnt; p++) {
        int64_t low, high;
        assert_int_equal(rd_kafka_query_watermark_offsets(rk, topic, p, &low, &high, 10000),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        sum += high;
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(rk);
    return sum;
}

static void issue(const sl_jwt_keys *with, const char *sub, const char *aud, int64_t iat,
                  int64_t ttl, char *out) {
    sl_jwt_claims c;
    char errstr[256];
    size_t len;
    assert_int_equal(sl_jwt_claims_init(&c, SL_JWT_ACCESS, sub, "forged-session", "sluice", aud,
                                        iat, ttl, errstr, sizeof(errstr)),
                     SL_OK);
    assert_int_equal(
        sl_jwt_issue(with, &c, out, SL_JWT_MAX_TOKEN + 1, &len, errstr, sizeof(errstr)), SL_OK);
}

static void bad_tokens_and_bad_requests_are_refused_and_reach_no_topic(void **state) {
    (void)state;
    NEED_BROKER();
    user u;
    new_user(&u, "victim");
    long long users_before = topic_size(users_commands);
    long long tokens_before = topic_size(tokens_commands);
    int64_t now = (int64_t)time(NULL);
    char good[SL_JWT_MAX_TOKEN + 1], forged[SL_JWT_MAX_TOKEN + 1], expired[SL_JWT_MAX_TOKEN + 1],
        wrong_aud[SL_JWT_MAX_TOKEN + 1], tampered[SL_JWT_MAX_TOKEN + 1],
        alg_none[SL_JWT_MAX_TOKEN + 1];
    issue(cluster.keys, u.id, "sluice", now, 600, good); /* the control: accepted */
    issue(cluster.other_keys, u.id, "sluice", now, 600, forged);
    issue(cluster.keys, u.id, "sluice", now - 7200, 600, expired);
    issue(cluster.keys, u.id, "another-service", now, 600, wrong_aud);
    snprintf(tampered, sizeof(tampered), "%s", good);
    char *payload = strchr(tampered, '.') + 1;
    payload[3] = payload[3] == 'A' ? 'B' : 'A';
    /* {"alg":"none","typ":"at+jwt"} with the good payload and no signature */
    const char *dot = strchr(good, '.');
    const char *dot2 = strchr(dot + 1, '.');
    snprintf(alg_none, sizeof(alg_none), "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.%.*s.",
             (int)(dot2 - dot - 1), dot + 1);
    const char *bad[] = {forged, expired, wrong_aud, tampered, alg_none, "not.a.token"};
    char headers[SL_JWT_MAX_TOKEN + 64];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bearer(headers, sizeof(headers), bad[i]);
        test_answer *a = call((int)i % 2, "POST", "/auth/logout", headers, NULL);
        if (a->status != 401)
            fail_msg("bad token %zu: %d %s", i, a->status, a->body);
        test_assert_error_shape(a, 401);
        test_answer_free(a);
        char body[SL_JWT_MAX_TOKEN + 64];
        snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", bad[i]);
        a = call((int)i % 2, "POST", "/auth/refresh", NULL, body);
        test_assert_error_shape(a, 401);
        test_answer_free(a);
    }
    test_answer *none = call(0, "POST", "/auth/logout", NULL, NULL);
    test_assert_error_shape(none, 401);
    test_answer_free(none);
    /* malformed JSON, wrong types, a 10 MB body */
    const char *malformed[] = {"{", "[]", "{\"first_name\":1}", "{\"a\":[[[[[[1]]]]]]}"};
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        test_answer *a = call(0, "POST", "/user/register", NULL, malformed[i]);
        test_assert_error_shape(a, 400);
        test_answer_free(a);
        a = call(1, "POST", "/login", NULL, malformed[i]);
        test_assert_error_shape(a, 400);
        test_answer_free(a);
    }
    size_t big_len = 10u << 20;
    char *big = malloc(big_len + 1);
    assert_non_null(big);
    memset(big, 'a', big_len);
    big[big_len] = '\0';
    test_answer *a = call(1, "POST", "/user/register", NULL, big);
    assert_int_equal(a->status, 413);
    test_answer_free(a);
    free(big);
    /* nothing of the above reached a topic; the control token still works */
    assert_int_equal(topic_size(users_commands), users_before);
    assert_int_equal(topic_size(tokens_commands), tokens_before);
    a = introspect(0, good, good);
    assert_true(active(a));
    test_answer_free(a);
    /* both instances still serve */
    for (int i = 0; i < 2; i++) {
        a = call(i, "GET", "/healthz", NULL, NULL);
        assert_int_equal(a->status, 200);
        test_answer_free(a);
    }
}

#define SESSION_MAX_S 2592000 /* identity.session.max.s's default */

/* A token of user `sub` in session `sid` signed with the cluster's key:
 * issued at `iat` for `ttl` seconds, the session begun at `auth_time`
 * (0: no auth_time claim, as tokens issued before it existed). */
static void issue_session(sl_jwt_typ typ, const char *sub, const char *sid, int64_t iat,
                          int64_t ttl, int64_t auth_time, char *out) {
    sl_jwt_claims c;
    char errstr[256];
    assert_int_equal(
        sl_jwt_claims_init(&c, typ, sub, sid, "sluice", "sluice", iat, ttl, errstr, sizeof(errstr)),
        SL_OK);
    c.auth_time = auth_time;
    assert_int_equal(
        sl_jwt_issue(cluster.keys, &c, out, SL_JWT_MAX_TOKEN + 1, NULL, errstr, sizeof(errstr)),
        SL_OK);
}

static void claims_of(const char *token, sl_jwt_typ typ, sl_jwt_claims *out) {
    sl_jwt_expect e = {.iss = "sluice", .aud = "sluice", .typ = typ, .now = (int64_t)time(NULL)};
    char errstr[256];
    if (sl_jwt_verify(cluster.keys, token, strlen(token), &e, out, errstr, sizeof(errstr)))
        fail_msg("an issued token does not verify: %s", errstr);
}

/* ASVS 7.3.2: however often its refresh token rotates, a session ends
 * identity.session.max.s after the login that began it. Tokens are signed
 * here with the cluster's key to stand 30 days in the past. Before the
 * limit, a rotation at 2 minutes from the end gave tokens for 14 days. */
static void a_session_ends_at_its_absolute_lifetime_whatever_the_rotation(void **state) {
    (void)state;
    NEED_BROKER();
    user u;
    new_user(&u, "lifetime");
    int64_t now = (int64_t)time(NULL);
    /* a login's tokens carry auth_time = iat */
    sl_jwt_claims got;
    claims_of(u.access, SL_JWT_ACCESS, &got);
    assert_int_equal(got.auth_time, got.iat);
    claims_of(u.refresh, SL_JWT_REFRESH, &got);
    assert_int_equal(got.auth_time, got.iat);
    assert_true(got.auth_time >= now - 60 && got.auth_time <= now + 1);

    /* 2 minutes left: the rotation keeps auth_time and ends with the session */
    char token[SL_JWT_MAX_TOKEN + 1], body[SL_JWT_MAX_TOKEN + 64];
    char sid[64];
    snprintf(sid, sizeof(sid), "old-session-%d-%d", (int)getpid(), ++serial);
    int64_t began = now - SESSION_MAX_S + 120;
    issue_session(SL_JWT_REFRESH, u.id, sid, now - 60, 1209600, began, token);
    snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", token);
    test_answer *a = call(1, "POST", "/auth/refresh", NULL, body);
    if (a->status != 200)
        fail_msg("refresh 2 minutes before the end: %d %s", a->status, a->body);
    claims_of(test_answer_field(a, "refresh_token"), SL_JWT_REFRESH, &got);
    assert_int_equal(got.auth_time, began);
    assert_true(got.exp <= began + SESSION_MAX_S);
    assert_string_equal(got.sid, sid);
    claims_of(test_answer_field(a, "token"), SL_JWT_ACCESS, &got);
    assert_int_equal(got.auth_time, began);
    assert_true(got.exp <= began + SESSION_MAX_S);
    test_answer_free(a);

    /* past the end (beyond the 30 s leeway): refresh and access refused */
    snprintf(sid, sizeof(sid), "ended-session-%d-%d", (int)getpid(), ++serial);
    began = now - SESSION_MAX_S - 100;
    issue_session(SL_JWT_REFRESH, u.id, sid, now - 60, 1209600, began, token);
    snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", token);
    for (int i = 0; i < 2; i++) {
        a = call(i, "POST", "/auth/refresh", NULL, body);
        test_assert_error_shape(a, 401);
        if (!strstr(a->body, "maximum lifetime"))
            fail_msg("refresh past the session's end: %s", a->body);
        test_answer_free(a);
    }
    char headers[SL_JWT_MAX_TOKEN + 64];
    issue_session(SL_JWT_ACCESS, u.id, sid, now - 60, 900, began, token);
    bearer(headers, sizeof(headers), token);
    a = call(0, "POST", "/auth/logout", headers, NULL);
    test_assert_error_shape(a, 401);
    test_answer_free(a);

    /* a token without auth_time counts from its iat */
    issue_session(SL_JWT_REFRESH, u.id, sid, now - SESSION_MAX_S - 100, SESSION_MAX_S + 1000, 0,
                  token);
    snprintf(body, sizeof(body), "{\"refresh_token\":\"%s\"}", token);
    a = call(0, "POST", "/auth/refresh", NULL, body);
    test_assert_error_shape(a, 401);
    test_answer_free(a);
}

/* The blacklist is a global store rebuilt from tokens.revoked: an instance
 * that restarts (here on a wiped state dir, the harder case) refuses a
 * token revoked before, and answers nothing until it has caught up. */
static void a_revoked_token_stays_refused_after_a_restart(void **state) {
    (void)state;
    NEED_BROKER();
    user u, observer;
    new_user(&u, "restart");
    new_user(&observer, "observer2");
    char headers[SL_JWT_MAX_TOKEN + 64];
    bearer(headers, sizeof(headers), u.access);
    test_answer *out = call(0, "POST", "/auth/logout", headers, NULL);
    assert_int_equal(out->status, 204);
    test_answer_free(out);
    assert_int_equal(test_instance_stop(&cluster.instances[1], 60000), 0);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cluster.instances[1].state_dir);
    assert_int_equal(system(cmd), 0);
    test_instance_start(&cluster.instances[1]);
    assert_true(test_instance_wait_ready(&cluster.instances[1], 120000));
    test_answer *a = introspect(1, observer.access, u.access);
    assert_int_equal(a->status, 200);
    assert_false(active(a));
    test_answer_free(a);
    /* the revoked token authenticates nothing (logout, idempotent, would
     * answer 204 to it again) */
    a = introspect(1, u.access, observer.access);
    test_assert_error_shape(a, 401);
    test_answer_free(a);
}

/* GET /v1/await (an instance asks the owner of a key to wait for it) is for
 * instances only: a client gets 403, a forged hop header 401. */
static void the_await_route_is_for_instances_only(void **state) {
    (void)state;
    NEED_BROKER();
    user u;
    new_user(&u, "await");
    char path[256], hex[2 * 64 + 1] = "";
    for (size_t i = 0; i < strlen(u.id); i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)u.id[i]);
    snprintf(path, sizeof(path), "/v1/await/users-by-id/%s/100", hex);
    for (int i = 0; i < 2; i++) {
        test_answer *a = call(i, "GET", path, NULL, NULL);
        test_assert_error_shape(a, 403);
        test_answer_free(a);
        a = call(i, "GET", path, "X-Sluice-Hop: 1.2.3\r\n", NULL);
        test_assert_error_shape(a, 401);
        test_answer_free(a);
    }
}

static void jwks_publishes_the_signing_key(void **state) {
    (void)state;
    NEED_BROKER();
    test_answer *a = call(1, "GET", "/.well-known/jwks.json", NULL, NULL);
    assert_int_equal(a->status, 200);
    json_t *list = json_object_get(a->json, "keys");
    assert_true(json_is_array(list));
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "kid")),
                        sl_jwt_keys_current_kid(cluster.keys));
    assert_null(json_object_get(json_array_get(list, 0), "d")); /* no private part */
    test_answer_free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(registration_returns_tokens_that_work_at_once_on_both_instances),
        cmocka_unit_test(fifty_concurrent_registrations_of_one_email_have_one_winner),
        cmocka_unit_test(a_retry_with_the_same_idempotency_key_registers_once),
        cmocka_unit_test(login_by_id_and_by_email_and_unknown_users_look_alike),
        cmocka_unit_test(repeated_wrong_passwords_are_throttled),
        cmocka_unit_test(logout_on_one_instance_is_refused_on_the_other),
        cmocka_unit_test(a_refresh_right_after_a_logout_elsewhere_is_refused),
        cmocka_unit_test(refresh_rotates_and_reuse_revokes_the_session),
        cmocka_unit_test(a_password_change_ends_the_other_sessions_and_is_seen_everywhere),
        cmocka_unit_test(a_retried_refresh_within_the_grace_gets_the_same_pair),
        cmocka_unit_test(a_retried_logout_is_answered_the_same),
        cmocka_unit_test(a_session_ends_at_its_absolute_lifetime_whatever_the_rotation),
        cmocka_unit_test(bad_tokens_and_bad_requests_are_refused_and_reach_no_topic),
        cmocka_unit_test(a_revoked_token_stays_refused_after_a_restart),
        cmocka_unit_test(jwks_publishes_the_signing_key),
        cmocka_unit_test(the_await_route_is_for_instances_only),
    };
    return cmocka_run_group_tests_name("identity_http", tests, setup, teardown);
}
