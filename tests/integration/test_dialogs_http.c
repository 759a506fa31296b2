/*
 * Integration tests: the dialogs topology and routes (topology/dialogs.c,
 * connectors/dialogs_http.c) on three `sluice run` processes sharing the
 * real broker and one signing key. Every request goes to a random
 * instance: a conversation listed exactly and in order with paging, who
 * may read and write a dialog, invalid texts, idempotent retries (HTTP and
 * Kafka), the Lady Gaga load (one user writing to many partners, direct
 * Kafka commands) with the record cache's coalescing, and kill -9 of the
 * instance owning a dialog in the middle of a conversation.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <ctype.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "connectors/http/auth/jwt.h"
#include "processor/kafka/client.h"
#include "sluice/v1/dialogs.pb-c.h"
#include "sluice/v1/identity.pb-c.h"
#include "tests/support/broker.h"
#include "tests/support/http_client.h"
#include "tests/support/instance.h"
#include "tests/support/postgres.h"
#include "tests/support/testutil.h"
#include "topology/dialogs/dialogs.h"

#define WAIT_MS    60000
#define N          3
#define PARTITIONS 6

static test_cluster cluster; /* N sluice processes for the whole file */
static char dialogs_commands[160], dialogs_events[160], users_events[160], by_user_topic[200];
static int serial;

static int setup(void **state) {
    (void)state;
    if (!test_kafka_bootstrap())
        return 0;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    if (test_cluster_init(&cluster, "dialogs", N) != 0 || test_cluster_sign(&cluster) != 0)
        return -1;
    const char *prefix = cluster.prefix;
    snprintf(dialogs_commands, sizeof(dialogs_commands), "%sdialogs.commands", prefix);
    snprintf(dialogs_events, sizeof(dialogs_events), "%sdialogs.events", prefix);
    snprintf(users_events, sizeof(users_events), "%susers.events", prefix);
    snprintf(by_user_topic, sizeof(by_user_topic), "%s-dialogs-by-user-repartition",
             cluster.app_id);
    for (int i = 0; i < N; i++) {
        test_instance *inst = &cluster.instances[i];
        test_instance_set(inst, "dialogs.topic.prefix=%s", prefix);
        test_instance_set(inst, "dialogs.topic.partitions=%d", PARTITIONS);
        test_instance_set(inst, "identity.topic.partitions=3");
        test_instance_set(inst, "reply.partitions=3");
        test_instance_set(inst, "dialogs.list.limit.max=50");
        test_instance_set(inst, "identity.throttle.ip.burst=10000");
        test_instance_set(inst, "gateway.members.interval.ms=500");
        test_instance_set(inst, "gateway.members.expiry.ms=3000");
        test_instance_set(inst, "gateway.forward.timeout.ms=3000");
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

static int random_live_instance(void) {
    for (;;) {
        int i = rand() % N;
        if (cluster.instances[i].pid)
            return i;
    }
}

static test_answer *call(int instance, const char *method, const char *path, const char *headers,
                         const char *body, size_t body_len) {
    if (instance < 0)
        instance = random_live_instance();
    return test_http_call(cluster.instances[instance].http_port, method, path, headers, body,
                          body_len);
}

typedef struct user {
    char id[64];
    char token[SL_JWT_MAX_TOKEN + 1];
    char auth[SL_JWT_MAX_TOKEN + 64]; /* "Authorization: Bearer ...\r\n" */
} user;

static void set_token(user *u, const char *token) {
    snprintf(u->token, sizeof(u->token), "%s", token);
    snprintf(u->auth, sizeof(u->auth), "Authorization: Bearer %s\r\n", token);
}

/* A user registered through the HTTP API of a random instance. */
static void register_user(user *u, const char *what) {
    char body[512];
    snprintf(body, sizeof(body),
             "{\"first_name\":\"T\",\"second_name\":\"U\",\"city\":\"X\",\"password\":"
             "\"correct horse battery\",\"email\":\"%s-%d-%d@example.org\"}",
             what, (int)getpid(), ++serial);
    test_answer *a = call(-1, "POST", "/user/register", NULL, body, strlen(body));
    if (a->status != 200)
        fail_msg("register: %d %s", a->status, a->body);
    snprintf(u->id, sizeof(u->id), "%s", test_answer_field(a, "user_id"));
    set_token(u, test_answer_field(a, "token"));
    test_answer_free(a);
}

/* An access token for `sub` signed with `with` (the instances' key or
 * another), as identity would issue it. */
static void mint_token(user *u, const char *sub, sl_jwt_keys *with) {
    sl_jwt_claims claims;
    char errstr[256], sid[SL_JWT_RANDOM_ID_LEN + 1], token[SL_JWT_MAX_TOKEN + 1];
    assert_int_equal(sl_jwt_random_id(sid, sizeof(sid)), SL_OK);
    assert_int_equal(sl_jwt_claims_init(&claims, SL_JWT_ACCESS, sub, sid, "sluice", "sluice",
                                        (int64_t)time(NULL), 900, errstr, sizeof(errstr)),
                     SL_OK);
    assert_int_equal(
        sl_jwt_issue(with, &claims, token, sizeof(token), NULL, errstr, sizeof(errstr)), SL_OK);
    snprintf(u->id, sizeof(u->id), "%s", sub);
    set_token(u, token);
}

static test_answer *send_text(int instance, const user *from, const char *to_id, const char *text,
                              const char *idempotency_key) {
    char path[128], headers[SL_JWT_MAX_TOKEN + 256];
    snprintf(path, sizeof(path), "/dialog/%s/send", to_id);
    snprintf(headers, sizeof(headers), "%sContent-Type: application/json\r\n", from->auth);
    if (idempotency_key)
        snprintf(headers + strlen(headers), sizeof(headers) - strlen(headers),
                 "Idempotency-Key: %s\r\n", idempotency_key);
    json_t *body = json_pack("{s:s}", "text", text);
    char *raw = json_dumps(body, JSON_COMPACT);
    test_answer *a = call(instance, "POST", path, headers, raw, strlen(raw));
    free(raw);
    json_decref(body);
    return a;
}

/* Send, retrying while the recipient's registration has not reached the
 * dialogs copy yet (400 "not a registered user") or the answer is a 503:
 * with the same Idempotency-Key, so the message is stored once. */
static void send_ok(const user *from, const char *to_id, const char *text, const char *key) {
    test_answer *a = NULL;
    int64_t deadline = test_now_ms() + WAIT_MS;
    for (;;) {
        test_answer_free(a);
        a = send_text(-1, from, to_id, text, key);
        bool unknown = a->status == 400 && strstr(a->body, "not a registered user");
        if ((a->status != 503 && !unknown) || test_now_ms() > deadline)
            break;
        usleep(100000);
    }
    if (a->status != 200)
        fail_msg("send: %d %s", a->status, a->body);
    assert_non_null(strstr(a->headers, "X-Sluice-Position: "));
    test_answer_free(a);
}

static test_answer *list(int instance, const user *who, const char *partner, const char *query) {
    char path[256];
    snprintf(path, sizeof(path), "/dialog/%s/list%s", partner, query ? query : "");
    return call(instance, "GET", path, who->auth, NULL, 0);
}

/* The list answered 200 and equals texts[first..first+count) in order,
 * with from/to alternating as `senders` says. */
static void assert_list(const test_answer *a, char texts[][64], const char (*senders)[64],
                        const char (*recipients)[64], size_t first, size_t count) {
    if (a->status != 200)
        fail_msg("list: %d %s", a->status, a->body);
    assert_true(json_is_array(a->json));
    if (json_array_size(a->json) != count)
        fail_msg("list has %zu messages, expected %zu: %s", json_array_size(a->json), count,
                 a->body);
    for (size_t i = 0; i < count; i++) {
        json_t *m = json_array_get(a->json, i);
        assert_int_equal(json_object_size(m), 3); /* the spec's DialogMessage */
        assert_string_equal(json_string_value(json_object_get(m, "text")), texts[first + i]);
        assert_string_equal(json_string_value(json_object_get(m, "from")), senders[first + i]);
        assert_string_equal(json_string_value(json_object_get(m, "to")), recipients[first + i]);
    }
}

/* Which instance owns `key` of `store` (by its advertised port), or -1. */
static int owner_of(const char *store, const char *key) {
    char path[256];
    snprintf(path, sizeof(path), "/v1/metadata/%s/%s", store, key);
    test_answer *a = test_http_call(cluster.instances[random_live_instance()].admin_port, "GET",
                                    path, NULL, NULL, 0);
    int owner = -1;
    json_t *o = a->json ? json_object_get(a->json, "owner") : NULL;
    const char *address = o ? json_string_value(json_object_get(o, "address")) : NULL;
    const char *colon = address ? strrchr(address, ':') : NULL;
    for (int i = 0; colon && i < N; i++)
        if (atoi(colon + 1) == cluster.instances[i].http_port)
            owner = i;
    test_answer_free(a);
    return owner;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

/* ------------------------------------------------------------------------ */
/* Read-your-writes of a registration across instances                       */

typedef struct ryw_run {
    int thread, count;
    const user *sender;
    pthread_mutex_t *lock;
    int registered, not_registered, get_missed, login_missed, send_refused, other;
} ryw_run;

static void *register_then_use_elsewhere(void *opaque) {
    ryw_run *r = opaque;
    for (int i = 0; i < r->count; i++) {
        int at = (r->thread + i) % N;
        char body[512];
        pthread_mutex_lock(r->lock);
        int n = ++serial;
        pthread_mutex_unlock(r->lock);
        snprintf(body, sizeof(body),
                 "{\"first_name\":\"R\",\"second_name\":\"W\",\"city\":\"X\",\"password\":"
                 "\"correct horse battery\",\"email\":\"ryw-%d-%d@example.org\"}",
                 (int)getpid(), n);
        test_answer *a = call(at, "POST", "/user/register", NULL, body, strlen(body));
        if (a->status != 200) {
            fprintf(stderr, "# register on %d: %d %s\n", at, a->status, a->body);
            r->not_registered++;
            test_answer_free(a);
            continue;
        }
        r->registered++;
        char id[64], path[128];
        snprintf(id, sizeof(id), "%s", test_answer_field(a, "user_id"));
        test_answer_free(a);
        /* At once, on the next instance: get, log in by id. */
        int other = (at + 1) % N;
        snprintf(path, sizeof(path), "/user/get/%s", id);
        a = call(other, "GET", path, NULL, NULL, 0);
        if (a->status == 404)
            r->get_missed++;
        else if (a->status != 200)
            r->other++;
        test_answer_free(a);
        snprintf(body, sizeof(body), "{\"id\":\"%s\",\"password\":\"correct horse battery\"}", id);
        a = call(other, "POST", "/login", NULL, body, strlen(body));
        if (a->status == 401)
            r->login_missed++;
        else if (a->status != 200)
            r->other++;
        test_answer_free(a);
        /* And a message to the new user, through the third instance. */
        a = send_text((at + 2) % N, r->sender, id, "welcome", NULL);
        if (a->status == 400 && strstr(a->body, "not a registered user"))
            r->send_refused++;
        else if (a->status != 200)
            r->other++;
        if (a->status != 200)
            fprintf(stderr, "# send to %s: %d %s\n", id, a->status, a->body);
        test_answer_free(a);
    }
    return NULL;
}

/* The OTUS flow with no pause: register on one instance, then get and log
 * in by id on another and receive a message through a third. Before the
 * registration waited for users-by-id and the dialogs' copy, the get was a
 * 404 and the login a 401 (users-by-id lags one repartition hop), and the
 * send could be refused as an unknown recipient. */
static void a_registration_is_readable_and_writable_at_once_on_every_instance(void **state) {
    (void)state;
    NEED_BROKER();
    user sender;
    register_user(&sender, "ryw-sender");
    enum { THREADS = 8, EACH = 25 };
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    ryw_run runs[THREADS];
    pthread_t threads[THREADS];
    int64_t started = test_now_ms();
    for (int t = 0; t < THREADS; t++) {
        runs[t] = (ryw_run){.thread = t, .count = EACH, .sender = &sender, .lock = &lock};
        pthread_create(&threads[t], NULL, register_then_use_elsewhere, &runs[t]);
    }
    ryw_run total = {0};
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        total.registered += runs[t].registered;
        total.not_registered += runs[t].not_registered;
        total.get_missed += runs[t].get_missed;
        total.login_missed += runs[t].login_missed;
        total.send_refused += runs[t].send_refused;
        total.other += runs[t].other;
    }
    print_message("# %d registrations in %lld ms (%d not answered 200); on another instance at "
                  "once: %d gets 404, %d logins 401, %d sends refused, %d other answers\n",
                  total.registered, (long long)(test_now_ms() - started), total.not_registered,
                  total.get_missed, total.login_missed, total.send_refused, total.other);
    assert_int_equal(total.registered, THREADS * EACH);
    assert_int_equal(total.get_missed, 0);
    assert_int_equal(total.login_missed, 0);
    assert_int_equal(total.send_refused, 0);
    assert_int_equal(total.other, 0);
}

static user alice, bob, carol;

static void a_conversation_lists_exactly_what_was_sent_in_order_with_paging(void **state) {
    (void)state;
    NEED_BROKER();
    register_user(&alice, "alice");
    register_user(&bob, "bob");
    register_user(&carol, "carol");
    enum { M = 24 };
    char texts[M][64], from[M][64], to[M][64];
    for (int i = 0; i < M; i++) {
        const user *s = (i % 3 == 2) ? &bob : &alice;
        const user *r = s == &alice ? &bob : &alice;
        snprintf(texts[i], sizeof(texts[i]), "message %d \xd0\xbf\xd1\x80\xd0\xb8 %s", i,
                 s == &alice ? "from alice" : "from bob");
        snprintf(from[i], sizeof(from[i]), "%s", s->id);
        snprintf(to[i], sizeof(to[i]), "%s", r->id);
        send_ok(s, r->id, texts[i], NULL);
        /* read-your-writes: a list right after the 200, on any instance */
        test_answer *a = list(-1, s, r->id, NULL);
        assert_list(a, texts, (const char (*)[64])from, (const char (*)[64])to, 0, (size_t)i + 1);
        test_answer_free(a);
    }
    /* Both participants see the same dialog, from every instance. */
    for (int i = 0; i < N; i++) {
        test_answer *a = list(i, &bob, alice.id, NULL);
        assert_list(a, texts, (const char (*)[64])from, (const char (*)[64])to, 0, M);
        test_answer_free(a);
    }
    /* Paging: offset/limit windows, a capped limit, the end. */
    test_answer *page = list(-1, &alice, bob.id, "?offset=5&limit=7");
    assert_list(page, texts, (const char (*)[64])from, (const char (*)[64])to, 5, 7);
    test_answer_free(page);
    page = list(-1, &alice, bob.id, "?offset=20&limit=10");
    assert_list(page, texts, (const char (*)[64])from, (const char (*)[64])to, 20, 4);
    test_answer_free(page);
    page = list(-1, &alice, bob.id, "?offset=24");
    assert_list(page, texts, (const char (*)[64])from, (const char (*)[64])to, 24, 0);
    test_answer_free(page);
    page = list(-1, &alice, bob.id, "?limit=100000"); /* capped at 50, all 24 fit */
    assert_list(page, texts, (const char (*)[64])from, (const char (*)[64])to, 0, M);
    test_answer_free(page);
    page = list(-1, &alice, bob.id, "?limit=0");
    test_assert_error_shape(page, 400);
    test_answer_free(page);
    page = list(-1, &alice, bob.id, "?offset=-1");
    test_assert_error_shape(page, 400);
    test_answer_free(page);
    /* The position token: after=<last sequence> answers with it. */
    page = list(-1, &alice, bob.id, "?after=24&offset=23");
    assert_list(page, texts, (const char (*)[64])from, (const char (*)[64])to, 23, 1);
    test_answer_free(page);
    /* The per-user index converges to the dialog's last message. */
    test_answer *d = NULL;
    int64_t deadline = test_now_ms() + WAIT_MS;
    for (;;) {
        test_answer_free(d);
        d = call(-1, "GET", "/dialogs", bob.auth, NULL, 0);
        json_t *first = d->status == 200 ? json_array_get(d->json, 0) : NULL;
        if ((first && json_integer_value(json_object_get(first, "last_sequence")) == M) ||
            test_now_ms() > deadline)
            break;
        usleep(100000);
    }
    assert_int_equal(d->status, 200);
    assert_int_equal(json_array_size(d->json), 1);
    json_t *entry = json_array_get(d->json, 0);
    assert_string_equal(json_string_value(json_object_get(entry, "partner_id")), alice.id);
    assert_int_equal(json_integer_value(json_object_get(entry, "last_sequence")), M);
    /* the last message is alice's (23 % 3 == 2 is bob's: index 23 -> bob) */
    assert_string_equal(json_string_value(json_object_get(entry, "last_sender_id")), from[M - 1]);
    assert_string_equal(json_string_value(json_object_get(entry, "last_text")), texts[M - 1]);
    test_answer_free(d);
}

static void only_the_two_participants_can_read_or_write_their_dialog(void **state) {
    (void)state;
    NEED_BROKER();
    /* carol names alice: she gets her own (empty) dialog with alice, never
     * alice and bob's. */
    test_answer *a = list(-1, &carol, alice.id, NULL);
    assert_int_equal(a->status, 200);
    assert_int_equal(json_array_size(a->json), 0);
    test_answer_free(a);
    send_ok(&carol, alice.id, "hello from carol", NULL);
    a = list(-1, &alice, bob.id, NULL);
    assert_int_equal(a->status, 200);
    assert_null(strstr(a->body, "hello from carol"));
    assert_null(strstr(a->body, carol.id));
    test_answer_free(a);
    a = list(-1, &alice, carol.id, NULL);
    assert_int_equal(a->status, 200);
    assert_int_equal(json_array_size(a->json), 1);
    test_answer_free(a);
    /* no token, a token of another issuer key, garbage: 401 */
    char path[128];
    snprintf(path, sizeof(path), "/dialog/%s/list", bob.id);
    a = call(-1, "GET", path, NULL, NULL, 0);
    test_assert_error_shape(a, 401);
    test_answer_free(a);
    snprintf(path, sizeof(path), "/dialog/%s/send", bob.id);
    a = call(-1, "POST", path, "Content-Type: application/json\r\n", "{\"text\":\"x\"}", 12);
    test_assert_error_shape(a, 401);
    test_answer_free(a);
    user forged;
    mint_token(&forged, alice.id, cluster.other_keys);
    a = list(-1, &forged, bob.id, NULL);
    test_assert_error_shape(a, 401);
    test_answer_free(a);
    a = send_text(-1, &forged, bob.id, "forged", NULL);
    test_assert_error_shape(a, 401);
    test_answer_free(a);
    a = call(-1, "GET", "/dialogs", "Authorization: Bearer not.a.token\r\n", NULL, 0);
    test_assert_error_shape(a, 401);
    test_answer_free(a);
    /* a revoked token (logout) is refused everywhere once revoked */
    char body[256];
    snprintf(body, sizeof(body), "{\"email\":\"x\"}");
    user again;
    snprintf(again.id, sizeof(again.id), "%s", carol.id);
    set_token(&again, carol.token);
    a = call(-1, "POST", "/auth/logout", again.auth, NULL, 0);
    if (a->status != 204)
        fail_msg("logout: %d %s", a->status, a->body);
    test_answer_free(a);
    for (int i = 0; i < N; i++) {
        test_answer *r = NULL;
        int64_t deadline = test_now_ms() + WAIT_MS;
        do {
            test_answer_free(r);
            r = list(i, &again, alice.id, NULL);
        } while (r->status == 200 && test_now_ms() < deadline && usleep(20000) == 0);
        test_assert_error_shape(r, 401);
        test_answer_free(r);
        r = send_text(i, &again, alice.id, "after logout", NULL);
        test_assert_error_shape(r, 401);
        test_answer_free(r);
    }
    a = list(-1, &alice, carol.id, NULL);
    assert_int_equal(json_array_size(a->json), 1); /* nothing after the logout */
    test_answer_free(a);
}

static void invalid_texts_and_ids_are_400_and_store_nothing(void **state) {
    (void)state;
    NEED_BROKER();
    test_answer *before = list(-1, &alice, bob.id, NULL);
    assert_int_equal(before->status, 200);
    size_t count = json_array_size(before->json);
    test_answer_free(before);
    char path[128], headers[SL_JWT_MAX_TOKEN + 128];
    snprintf(path, sizeof(path), "/dialog/%s/send", bob.id);
    snprintf(headers, sizeof(headers), "%sContent-Type: application/json\r\n", alice.auth);
    static char big[4200];
    memcpy(big, "{\"text\":\"", 9);
    memset(big + 9, 'a', 4097);
    memcpy(big + 9 + 4097, "\"}", 3);
    const char *bodies[] = {
        "{\"text\":\"\"}",             /* empty */
        big,                           /* 4097 bytes */
        "{\"text\":\"bad \xc3\x28\"}", /* invalid UTF-8 */
        "{\"text\":\"\xed\xa0\x80\"}", /* a surrogate */
        "{\"text\":\"nul \\u0000\"}",  /* NUL */
        "{\"text\":42}",
        "{}",
        "not json",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        test_answer *a = call(-1, "POST", path, headers, bodies[i], strlen(bodies[i]));
        if (a->status != 400)
            fail_msg("body %zu: %d %s", i, a->status, a->body);
        test_assert_error_shape(a, 400);
        test_answer_free(a);
    }
    /* exactly 4096 bytes is fine */
    memset(big, 'b', 4096);
    big[4096] = '\0';
    send_ok(&alice, bob.id, big, NULL);
    /* self-dialog, malformed and unknown user ids */
    test_answer *a = send_text(-1, &alice, alice.id, "me", NULL);
    test_assert_error_shape(a, 400);
    test_answer_free(a);
    a = send_text(-1, &alice, "not-a-user", "x", NULL);
    test_assert_error_shape(a, 400);
    test_answer_free(a);
    a = send_text(-1, &alice, "00000000-0000-4000-8000-000000000000", "x", NULL);
    test_assert_error_shape(a, 400);
    test_answer_free(a);
    test_answer *after = list(-1, &alice, bob.id, "?offset=0&limit=50");
    assert_int_equal(json_array_size(after->json), count + 1);
    test_answer_free(after);
}

static int count_texts(const test_answer *a, const char *text) {
    int n = 0;
    for (size_t i = 0; a->json && i < json_array_size(a->json); i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(a->json, i), "text")), text) ==
            0)
            n++;
    return n;
}

static void produce_send(rd_kafka_t *producer, const char *command_id, const char *sender,
                         const char *recipient, const char *text) {
    char dialog_id[SL_DIALOGS_ID_LEN + 1];
    assert_true(sl_dialogs_id(sender, recipient, dialog_id));
    Sluice__V1__CommandMeta meta = SLUICE__V1__COMMAND_META__INIT;
    meta.command_id = (char *)command_id;
    Sluice__V1__SendMessage send = SLUICE__V1__SEND_MESSAGE__INIT;
    send.meta = &meta;
    send.dialog_id = dialog_id;
    send.sender_id = (char *)sender;
    send.recipient_id = (char *)recipient;
    send.text = (char *)text;
    Sluice__V1__DialogsCommand command = SLUICE__V1__DIALOGS_COMMAND__INIT;
    command.command_case = SLUICE__V1__DIALOGS_COMMAND__COMMAND_SEND_MESSAGE;
    command.send_message = &send;
    uint8_t buf[8192];
    size_t len = sluice__v1__dialogs_command__pack(&command, buf);
    assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(dialogs_commands),
                                       RD_KAFKA_V_KEY(dialog_id, strlen(dialog_id)),
                                       RD_KAFKA_V_VALUE(buf, len),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
}

static void a_repeated_command_id_stores_one_message(void **state) {
    (void)state;
    NEED_BROKER();
    /* HTTP: the same Idempotency-Key three times, to different instances */
    char key[64];
    snprintf(key, sizeof(key), "retry-%d", (int)getpid());
    for (int i = 0; i < 3; i++) {
        test_answer *a = send_text(i, &bob, alice.id, "sent three times", key);
        if (a->status != 200)
            fail_msg("send %d: %d %s", i, a->status, a->body);
        test_answer_free(a);
    }
    /* Kafka: a trusted producer repeats a command id */
    rd_kafka_t *producer = test_producer(test_kafka_bootstrap(), NULL);
    for (int i = 0; i < 3; i++)
        produce_send(producer, "kafka-repeat-1", alice.id, bob.id, "kafka sent three times");
    assert_int_equal(rd_kafka_flush(producer, 10000), 0);
    rd_kafka_destroy(producer);
    test_answer *a = NULL;
    int64_t deadline = test_now_ms() + WAIT_MS;
    do {
        test_answer_free(a);
        a = list(-1, &alice, bob.id, "?limit=50");
    } while (count_texts(a, "kafka sent three times") == 0 && test_now_ms() < deadline &&
             usleep(100000) == 0);
    assert_int_equal(count_texts(a, "sent three times"), 1);
    assert_int_equal(count_texts(a, "kafka sent three times"), 1);
    test_answer_free(a);
}

/* ---- Lady Gaga ------------------------------------------------------------------ */

typedef struct gaga_scan {
    char prefix[32];
    long sent_per_partition[PARTITIONS];
    long hot_per_partition[PARTITIONS];
    long sent, rejected_unknown;
    const char *hot;
    char (*unknown_ids)[64];
    long n_unknown_ids;
} gaga_scan;

static void visit_event(const rd_kafka_message_t *m, void *opaque) {
    gaga_scan *s = opaque;
    Sluice__V1__DialogsEvent *e = sluice__v1__dialogs_event__unpack(NULL, m->len, m->payload);
    if (!e)
        return;
    if (e->event_case == SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT && e->message_sent->meta &&
        strncmp(e->message_sent->meta->command_id, s->prefix, strlen(s->prefix)) == 0) {
        s->sent++;
        s->sent_per_partition[m->partition]++;
        if (strcmp(e->message_sent->sender_id, s->hot) == 0)
            s->hot_per_partition[m->partition]++;
    }
    sluice__v1__dialogs_event__free_unpacked(e, NULL);
}

typedef struct index_scan {
    const char *hot;
    long hot_updates;
} index_scan;

static void visit_index(const rd_kafka_message_t *m, void *opaque) {
    index_scan *s = opaque;
    if (m->key_len == strlen(s->hot) && memcmp(m->key, s->hot, m->key_len) == 0)
        s->hot_updates++;
}

static void random_uuid(char out[37]) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 36; i++)
        out[i] = (i == 8 || i == 13 || i == 18 || i == 23) ? '-' : hex[rand() % 16];
    out[14] = '4';
    out[36] = '\0';
}

static void register_by_event(rd_kafka_t *producer, const char *user_id) {
    Sluice__V1__UserRegistered registered = SLUICE__V1__USER_REGISTERED__INIT;
    registered.user_id = (char *)user_id;
    registered.registered_at_ms = 1;
    Sluice__V1__UsersEvent event = SLUICE__V1__USERS_EVENT__INIT;
    event.event_case = SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED;
    event.user_registered = &registered;
    uint8_t buf[512];
    size_t len = sluice__v1__users_event__pack(&event, buf);
    assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(users_events),
                                       RD_KAFKA_V_KEY(user_id, strlen(user_id)),
                                       RD_KAFKA_V_VALUE(buf, len),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
}

static long long metric_sum(const char *name) {
    long long total = 0;
    for (int i = 0; i < N; i++) {
        if (!cluster.instances[i].pid)
            continue;
        test_answer *a =
            test_http_call(cluster.instances[i].admin_port, "GET", "/metrics", NULL, NULL, 0);
        const char *line = strstr(a->body, name);
        while (line && line > a->body && line[-1] != '\n')
            line = strstr(line + 1, name);
        if (line)
            total += atoll(strchr(line, ' ') + 1);
        test_answer_free(a);
    }
    return total;
}

enum { PARTNERS = 200, PER_PARTNER = 3, PAIRS = 40, PER_PAIR = 5 };

static void produce_gaga(rd_kafka_t *producer, const char *id_prefix, const char *hot,
                         char partners[][37], char pair_a[][37], char pair_b[][37]) {
    char command_id[96], text[64];
    for (int round = 0; round < PER_PAIR; round++) {
        for (int i = 0; round < PER_PARTNER && i < PARTNERS; i++) {
            snprintf(command_id, sizeof(command_id), "%shot-%d-%d", id_prefix, i, round);
            snprintf(text, sizeof(text), "hot %d/%d", i, round);
            produce_send(producer, command_id, hot, partners[i], text);
        }
        for (int i = 0; i < PAIRS; i++) {
            snprintf(command_id, sizeof(command_id), "%spair-%d-%d", id_prefix, i, round);
            produce_send(producer, command_id, round % 2 ? pair_a[i] : pair_b[i],
                         round % 2 ? pair_b[i] : pair_a[i], "pair message");
        }
    }
    assert_int_equal(rd_kafka_flush(producer, 10000), 0);
}

static void lady_gaga_spreads_over_partitions_and_her_index_updates_coalesce(void **state) {
    (void)state;
    NEED_BROKER();
    static char hot[37], partners[PARTNERS][37], pair_a[PAIRS][37], pair_b[PAIRS][37];
    random_uuid(hot);
    rd_kafka_t *producer = test_producer(test_kafka_bootstrap(), NULL);
    register_by_event(producer, hot);
    for (int i = 0; i < PARTNERS; i++) {
        random_uuid(partners[i]);
        register_by_event(producer, partners[i]);
    }
    for (int i = 0; i < PAIRS; i++) {
        random_uuid(pair_a[i]);
        random_uuid(pair_b[i]);
        register_by_event(producer, pair_a[i]);
        register_by_event(producer, pair_b[i]);
    }
    assert_int_equal(rd_kafka_flush(producer, 10000), 0);
    /* Wait until every instance's copy knows the last partner: a send from
     * each instance's... the owner decides, so probe all partners' owners
     * by sending the first hot message of the last partner over HTTP. */
    user hot_user;
    mint_token(&hot_user, hot, cluster.keys);
    send_ok(&hot_user, partners[PARTNERS - 1], "gaga probe", NULL);
    long long emitted0 = metric_sum("sluice_record_cache_emitted_total");
    long long coalesced0 = metric_sum("sluice_record_cache_coalesced_total");
    gaga_scan scan = {.hot = hot};
    snprintf(scan.prefix, sizeof(scan.prefix), "gaga-%d-", (int)getpid());
    int64_t burst_started = test_now_ms();
    produce_gaga(producer, scan.prefix, hot, partners, pair_a, pair_b);
    const long expected = PARTNERS * PER_PARTNER + PAIRS * PER_PAIR;
    /* A recipient whose registration had not reached the owner's copy yet
     * was refused (UNKNOWN_RECIPIENT is not remembered): without progress
     * for 3 s, produce everything again; the command ids make the repeats
     * of what was stored no-ops. */
    int64_t deadline = test_now_ms() + WAIT_MS, progress_ms = test_now_ms();
    int resends = 0;
    long last_sent = 0;
    for (;;) {
        gaga_scan fresh = {.hot = hot};
        snprintf(fresh.prefix, sizeof(fresh.prefix), "%s", scan.prefix);
        test_scan_topic(test_kafka_bootstrap(), dialogs_events, "read_committed", visit_event,
                        &fresh, 30000);
        scan = fresh;
        if (scan.sent >= expected || test_now_ms() > deadline)
            break;
        if (scan.sent != last_sent) {
            last_sent = scan.sent;
            progress_ms = test_now_ms();
        } else if (test_now_ms() - progress_ms > 3000) {
            produce_gaga(producer, scan.prefix, hot, partners, pair_a, pair_b);
            resends++;
            progress_ms = test_now_ms();
        }
        usleep(200000);
    }
    rd_kafka_destroy(producer);
    int64_t took = test_now_ms() - burst_started;
    fprintf(stderr, "# lady gaga: commands produced %d time(s)\n", resends + 1);
    if (scan.sent != expected)
        fail_msg("%ld MessageSent events, expected %ld", scan.sent, expected);
    /* The hot user's index: every partner's entry ends at sequence
     * PER_PARTNER + (1 for the probe's partner), unread 0 for her. */
    deadline = test_now_ms() + WAIT_MS;
    long complete = 0;
    do {
        complete = 0;
        char path[64];
        for (int offset = 0; offset < PARTNERS; offset += 50) {
            snprintf(path, sizeof(path), "/dialogs?offset=%d&limit=50", offset);
            test_answer *page = call(-1, "GET", path, hot_user.auth, NULL, 0);
            for (size_t i = 0; page->status == 200 && i < json_array_size(page->json); i++) {
                json_t *e = json_array_get(page->json, i);
                json_int_t seq = json_integer_value(json_object_get(e, "last_sequence"));
                const char *partner = json_string_value(json_object_get(e, "partner_id"));
                json_int_t want = PER_PARTNER + (strcmp(partner, partners[PARTNERS - 1]) == 0);
                if (seq == want && json_integer_value(json_object_get(e, "unread")) == 0)
                    complete++;
            }
            test_answer_free(page);
        }
    } while (complete < PARTNERS && test_now_ms() < deadline && usleep(200000) == 0);
    assert_int_equal(complete, PARTNERS);
    /* A partner's view: three unread messages from her. */
    user partner_user;
    mint_token(&partner_user, partners[0], cluster.keys);
    test_answer *p = call(-1, "GET", "/dialogs", partner_user.auth, NULL, 0);
    assert_int_equal(p->status, 200);
    assert_int_equal(json_array_size(p->json), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(p->json, 0), "unread")),
                     PER_PARTNER);
    test_answer_free(p);
    index_scan index = {.hot = hot};
    test_scan_topic(test_kafka_bootstrap(), by_user_topic, "read_committed", visit_index, &index,
                    30000);
    long long emitted = metric_sum("sluice_record_cache_emitted_total") - emitted0;
    long long coalesced = metric_sum("sluice_record_cache_coalesced_total") - coalesced0;
    long max = 0, hot_messages = PARTNERS * PER_PARTNER + 1;
    fprintf(stderr, "# lady gaga: %d partners x %d + %d pairs x %d = %ld messages in %lld ms\n",
            PARTNERS, PER_PARTNER, PAIRS, PER_PAIR, expected, (long long)took);
    for (int i = 0; i < PARTITIONS; i++) {
        fprintf(stderr, "#   partition %d: %ld messages (%ld of them the hot user's)\n", i,
                scan.sent_per_partition[i], scan.hot_per_partition[i]);
        if (scan.sent_per_partition[i] > max)
            max = scan.sent_per_partition[i];
    }
    double mean = (double)expected / PARTITIONS;
    fprintf(stderr, "#   max/mean partition load: %.2f\n", (double)max / mean);
    fprintf(stderr,
            "#   hot user's index updates: %ld for %ld messages; record cache: %lld emitted, "
            "%lld coalesced\n",
            index.hot_updates, hot_messages, emitted, coalesced);
    /* No partition holds the hot user: every partition got some of her
     * dialogs (200 dialog ids over 6 partitions). */
    for (int i = 0; i < PARTITIONS; i++)
        assert_true(scan.hot_per_partition[i] > 0);
    /* At most one index update per (user, dialog) per commit, never more
     * than one per message; her entries above are complete. */
    assert_true(index.hot_updates >= PARTNERS);
    assert_true(index.hot_updates <= hot_messages);
    assert_true(emitted > 0);
}

/* ---- kill -9 ------------------------------------------------------------------- */

/* ?allow_stale=true: an instance keeping a standby of the dialog's
 * partition answers the list itself from it, saying how far behind it is
 * (X-Sluice-Stale-Lag), instead of forwarding to the owner; the owner's
 * own answer is never marked stale; another value is a 400. */
static void a_standby_answers_a_stale_list_when_the_client_allows_it(void **state) {
    (void)state;
    NEED_BROKER();
    user dave, erin;
    register_user(&dave, "stale-dave");
    register_user(&erin, "stale-erin");
    send_ok(&dave, erin.id, "read me from a standby", "stale-1");
    char dialog_id[SL_DIALOGS_ID_LEN + 1];
    assert_true(sl_dialogs_id(dave.id, erin.id, dialog_id));
    int owner = -1;
    for (int64_t deadline = test_now_ms() + WAIT_MS; owner < 0 && test_now_ms() < deadline;
         usleep(100000))
        owner = owner_of(SL_DIALOGS_STORE_MESSAGES, dialog_id);
    assert_true(owner >= 0);
    int stale_from = -1;
    for (int64_t deadline = test_now_ms() + WAIT_MS; stale_from < 0 && test_now_ms() < deadline;
         usleep(200000))
        for (int i = 0; i < N && stale_from < 0; i++) {
            if (i == owner)
                continue;
            test_answer *a = list(i, &dave, erin.id, "?allow_stale=true");
            if (a->status == 200 && strstr(a->headers, "X-Sluice-Stale-Lag: ") &&
                !strstr(a->headers, "X-Sluice-Forwarded-To") &&
                strstr(a->body, "read me from a standby"))
                stale_from = i;
            test_answer_free(a);
        }
    print_message("# the dialog's owner is instance %d; instance %d answered from its standby\n",
                  owner, stale_from);
    assert_true(stale_from >= 0);
    test_answer *fresh = list(owner, &dave, erin.id, "?allow_stale=true");
    assert_int_equal(fresh->status, 200);
    assert_null(strstr(fresh->headers, "X-Sluice-Stale-Lag"));
    test_answer_free(fresh);
    /* Without the parameter a non-owner forwards: the owner answers. */
    test_answer *routed = list(stale_from, &dave, erin.id, NULL);
    assert_int_equal(routed->status, 200);
    assert_null(strstr(routed->headers, "X-Sluice-Stale-Lag"));
    assert_non_null(strstr(routed->headers, "X-Sluice-Forwarded-To"));
    test_answer_free(routed);
    test_answer *bad = list(owner, &dave, erin.id, "?allow_stale=yes");
    assert_int_equal(bad->status, 400);
    test_answer_free(bad);
}

/* ---- the state endpoint ------------------------------------------------------ */

/* The value of header `name` in a raw header block, or "" . */
static void header_of(const char *headers, const char *name, char *out, size_t size) {
    out[0] = '\0';
    size_t n = strlen(name);
    for (const char *line = headers; line && *line; line = strstr(line, "\r\n")) {
        while (*line == '\r' || *line == '\n')
            line++;
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            size_t len = strcspn(v, "\r\n");
            snprintf(out, size, "%.*s", (int)len, v);
            return;
        }
    }
}

static test_answer *admin_get(int instance, const char *path) {
    return test_http_call(cluster.instances[instance].admin_port, "GET", path, NULL, NULL, 0);
}

/* Issue 17: any store, any key, through any instance's admin listener: the
 * owner's value (task stores, forwarded through the signed instance route)
 * or the local copy (global stores), rendered from the value's protobuf
 * type with the password hash redacted; a scan over every partition in
 * key order across pages; none of it on the public port. */
static void the_state_endpoint_reads_every_store_from_any_instance(void **state) {
    (void)state;
    NEED_BROKER();
    enum { USERS = 9 };
    user users[USERS];
    for (int u = 0; u < USERS; u++)
        register_user(&users[u], "state");
    /* the listing: kinds, value types, an owner for every partition */
    test_answer *a = admin_get(random_live_instance(), "/v1/stores");
    assert_int_equal(a->status, 200);
    json_t *stores = json_object_get(a->json, "stores");
    json_t *owners_of_users = NULL; /* users-by-id's owners and standbys */
    bool saw_task = false, saw_global = false;
    size_t i;
    json_t *st;
    json_array_foreach(stores, i, st) {
        const char *name = json_string_value(json_object_get(st, "name"));
        if (strcmp(name, "users-by-id") == 0) {
            saw_task = true;
            assert_string_equal(json_string_value(json_object_get(st, "kind")), "task");
            assert_string_equal(json_string_value(json_object_get(st, "value_type")),
                                "sluice.v1.UserRecord");
            json_t *owners = json_object_get(st, "owners");
            assert_int_equal(json_array_size(owners), 3);
            owners_of_users = json_incref(owners);
            size_t k;
            json_t *o;
            json_array_foreach(owners, k, o) {
                const char *owner = json_string_value(json_object_get(o, "instance"));
                assert_non_null(owner);
                /* num.standby.replicas=1 on three instances: one, not the owner */
                json_t *standbys = json_object_get(o, "standbys");
                assert_int_equal(json_array_size(standbys), 1);
                const char *standby = json_string_value(json_array_get(standbys, 0));
                assert_non_null(standby);
                assert_string_not_equal(standby, owner);
            }
        }
        if (strcmp(name, "dialogs-users") == 0) {
            saw_global = true;
            assert_string_equal(json_string_value(json_object_get(st, "kind")), "global");
        }
    }
    test_answer_free(a);
    assert_true(saw_task && saw_global);

    /* every key through every instance: the same answer */
    char path[1024];
    static char first[sizeof(((test_answer *)0)->body)];
    for (int u = 0; u < USERS; u++) {
        first[0] = '\0';
        for (int inst = 0; inst < N; inst++) {
            snprintf(path, sizeof(path), "/v1/stores/users-by-id/keys/%.64s", users[u].id);
            a = admin_get(inst, path);
            if (a->status != 200)
                fail_msg("instance %d, %s: %d %s", inst, path, a->status, a->body);
            json_t *value = json_object_get(a->json, "value");
            assert_string_equal(json_string_value(json_object_get(value, "user_id")), users[u].id);
            assert_string_equal(json_string_value(json_object_get(value, "password_hash")),
                                "[redacted]");
            assert_null(strstr(a->body, "argon2"));
            if (inst == 0)
                snprintf(first, sizeof(first), "%s", a->body);
            else
                assert_string_equal(a->body, first);
            test_answer_free(a);
            snprintf(path, sizeof(path), "/v1/stores/dialogs-users/keys/%.64s", users[u].id);
            a = admin_get(inst, path);
            assert_int_equal(a->status, 200);
            test_answer_free(a);
        }
    }
    /* a scan over all partitions, in pages of 4: every key once, in order */
    for (int inst = 0; inst < N; inst++) {
        char cursor[512] = "", previous[256] = "";
        int found = 0, total = 0;
        for (int page = 0; page < 1000; page++) {
            snprintf(path, sizeof(path), "/v1/stores/users-by-id?limit=4%s%s",
                     cursor[0] ? "&cursor=" : "", cursor);
            a = admin_get(inst, path);
            if (a->status != 200)
                fail_msg("scan page %d on %d: %d %s", page, inst, a->status, a->body);
            json_t *entries = json_object_get(a->json, "entries");
            assert_true(json_array_size(entries) <= 4);
            size_t k;
            json_t *e;
            json_array_foreach(entries, k, e) {
                const char *key = json_string_value(json_object_get(e, "key"));
                assert_true(strcmp(key, previous) > 0); /* ascending, never twice */
                snprintf(previous, sizeof(previous), "%s", key);
                total++;
                for (int u = 0; u < USERS; u++)
                    found += strcmp(key, users[u].id) == 0;
            }
            json_t *next = json_object_get(a->json, "next_cursor");
            if (json_is_string(next)) {
                /* base64 has '+', '/' and '=': escape them for the query */
                cursor[0] = '\0';
                for (const char *c = json_string_value(next); *c; c++) {
                    size_t used = strlen(cursor);
                    if (isalnum((unsigned char)*c) || *c == ':' || *c == '-')
                        snprintf(cursor + used, sizeof(cursor) - used, "%c", *c);
                    else
                        snprintf(cursor + used, sizeof(cursor) - used, "%%%02X", (unsigned char)*c);
                }
            }
            bool more = json_is_string(next);
            test_answer_free(a);
            if (!more)
                break;
        }
        assert_int_equal(found, USERS);
        assert_true(total >= USERS);
    }
    /* a global store's local copy, by prefix, on each instance */
    for (int inst = 0; inst < N; inst++) {
        snprintf(path, sizeof(path), "/v1/stores/dialogs-users?prefix=%s", users[0].id);
        a = admin_get(inst, path);
        assert_int_equal(a->status, 200);
        json_t *entries = json_object_get(a->json, "entries");
        assert_int_equal(json_array_size(entries), 1);
        json_t *value = json_object_get(json_array_get(entries, 0), "value");
        assert_string_equal(json_string_value(json_object_get(value, "user_id")), users[0].id);
        assert_true(json_is_null(json_object_get(a->json, "next_cursor")));
        test_answer_free(a);
    }
    /* allow_stale=true on every instance: the owner answers itself or is
     * asked, or a standby here answers (and says how far behind it is):
     * the one the listing names. Until standbys catch up, retry. */
    bool standby_answered = false;
    for (int64_t deadline = test_now_ms() + WAIT_MS; !standby_answered; usleep(200000)) {
        assert_true(test_now_ms() < deadline);
        for (int inst = 0; inst < N; inst++) {
            for (int u = 0; u < USERS; u++) {
                snprintf(path, sizeof(path), "/v1/stores/users-by-id/keys/%.64s?allow_stale=true",
                         users[u].id);
                a = admin_get(inst, path);
                if (a->status != 200)
                    fail_msg("stale read on %d, %s: %d %s", inst, path, a->status, a->body);
                json_t *value = json_object_get(a->json, "value");
                assert_string_equal(json_string_value(json_object_get(value, "user_id")),
                                    users[u].id);
                char served_by[128], partition[16], lag[32];
                header_of(a->headers, "X-Sluice-Served-By", served_by, sizeof(served_by));
                header_of(a->headers, "X-Sluice-Partition", partition, sizeof(partition));
                header_of(a->headers, "X-Sluice-Stale-Lag", lag, sizeof(lag));
                json_t *placed = json_array_get(owners_of_users, (size_t)atoi(partition));
                const char *owner = json_string_value(json_object_get(placed, "instance"));
                const char *standby =
                    json_string_value(json_array_get(json_object_get(placed, "standbys"), 0));
                if (lag[0]) {
                    assert_string_equal(served_by, standby);
                    standby_answered = true;
                } else {
                    assert_string_equal(served_by, owner);
                }
                test_answer_free(a);
            }
        }
    }
    for (int inst = 0; inst < N; inst++) {
        /* other tests' users too: one prefix scan (every partition) each */
        for (int u = 0; u < USERS; u++) {
            snprintf(path, sizeof(path), "/v1/stores/users-by-id?prefix=%.64s&allow_stale=true",
                     users[u].id);
            a = admin_get(inst, path);
            if (a->status != 200)
                fail_msg("stale scan on %d: %d %s", inst, a->status, a->body);
            json_t *entries = json_object_get(a->json, "entries");
            assert_int_equal(json_array_size(entries), 1);
            assert_string_equal(
                json_string_value(json_object_get(json_array_get(entries, 0), "key")), users[u].id);
            test_answer_free(a);
        }
    }
    json_decref(owners_of_users);
    /* errors: 404s, a malformed key, and nothing of it on the public port */
    a = admin_get(0, "/v1/stores/no-such-store/keys/x");
    test_assert_error_shape(a, 404);
    test_answer_free(a);
    a = admin_get(1, "/v1/stores/users-by-id/keys/00000000-0000-4000-8000-000000000000");
    test_assert_error_shape(a, 404);
    test_answer_free(a);
    a = admin_get(2, "/v1/stores/users-by-id/keys/base64:%21%21");
    test_assert_error_shape(a, 400);
    test_answer_free(a);
    a = call(0, "GET", "/v1/stores", NULL, NULL, 0);
    test_assert_error_shape(a, 404);
    test_answer_free(a);
    snprintf(path, sizeof(path), "/v1/read/users-by-id/%s", "00");
    a = call(1, "GET", path, NULL, NULL, 0);
    test_assert_error_shape(a, 403);
    test_answer_free(a);
}

/* ---- trace context ------------------------------------------------------- */

static void random_trace_id(char out[33]) {
    for (int i = 0; i < 32; i++)
        out[i] = "0123456789abcdef"[rand() % 16];
    out[0] = 'a'; /* never all zero */
    out[32] = '\0';
}

/* Whether a record's traceparent header is a span of trace `trace_id`. */
static bool in_trace(const rd_kafka_message_t *m, const char *trace_id, char *span, size_t size) {
    rd_kafka_headers_t *headers = NULL;
    const void *value = NULL;
    size_t len = 0;
    if (rd_kafka_message_headers(m, &headers) || !headers ||
        rd_kafka_header_get_last(headers, "traceparent", &value, &len) || len != 55 ||
        memcmp(value, "00-", 3) != 0 || memcmp((const char *)value + 3, trace_id, 32) != 0)
        return false;
    if (span)
        snprintf(span, size, "%.*s", (int)len, (const char *)value);
    return true;
}

typedef struct trace_find {
    const char *trace_id, *user_id; /* the registration's user, or NULL */
    int found;
    char span[64];
    char meta_traceparent[64];
} trace_find;

static void find_register_command(const rd_kafka_message_t *m, void *opaque) {
    trace_find *f = opaque;
    Sluice__V1__UsersCommand *cmd = sluice__v1__users_command__unpack(NULL, m->len, m->payload);
    if (cmd && cmd->command_case == SLUICE__V1__USERS_COMMAND__COMMAND_REGISTER_USER &&
        strcmp(cmd->register_user->user_id, f->user_id) == 0) {
        f->found++;
        if (!in_trace(m, f->trace_id, f->span, sizeof(f->span)))
            f->span[0] = '\0';
        snprintf(f->meta_traceparent, sizeof(f->meta_traceparent), "%s",
                 cmd->register_user->meta ? cmd->register_user->meta->traceparent : "");
    }
    sluice__v1__users_command__free_unpacked(cmd, NULL);
}

static void find_registered(const rd_kafka_message_t *m, void *opaque) {
    trace_find *f = opaque;
    Sluice__V1__UsersEvent *ev = sluice__v1__users_event__unpack(NULL, m->len, m->payload);
    if (ev && ev->event_case == SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED &&
        strcmp(ev->user_registered->user_id, f->user_id) == 0 &&
        in_trace(m, f->trace_id, f->span, sizeof(f->span)))
        f->found++;
    sluice__v1__users_event__free_unpacked(ev, NULL);
}

static void find_in_trace(const rd_kafka_message_t *m, void *opaque) {
    trace_find *f = opaque;
    if (in_trace(m, f->trace_id, f->span, sizeof(f->span)))
        f->found++;
}

static bool log_names_trace(const char *trace_id) {
    char needle[48];
    snprintf(needle, sizeof(needle), "trace=%s", trace_id);
    for (int i = 0; i < N; i++) {
        FILE *f = fopen(cluster.instances[i].log_path, "r");
        char line[2048];
        bool found = false;
        while (f && !found && fgets(line, sizeof(line), f))
            found = strstr(line, needle) != NULL;
        if (f)
            fclose(f);
        if (found)
            return true;
    }
    return false;
}

/* Issue 13: a W3C traceparent sent with a request goes into the command's
 * CommandMeta and Kafka header, the events, the reply, the sink's rows and
 * the log lines, each hop a span of the same trace; a request without one
 * (or with a malformed or repeated one) starts a trace of its own. */
static void a_trace_crosses_http_kafka_the_sink_and_the_logs(void **state) {
    (void)state;
    NEED_BROKER();
    test_skip_unless(test_pg_dsn() != NULL, TEST_NO_BROKER_OR_PG);
    const char *bootstrap = test_kafka_bootstrap();
    char reg_trace[33], send_trace[33], dlq_trace[33], header[160], got[128];
    random_trace_id(reg_trace);
    random_trace_id(send_trace);
    random_trace_id(dlq_trace);

    /* a registration in a trace: the answer names our span of it */
    char body[512];
    snprintf(body, sizeof(body),
             "{\"first_name\":\"T\",\"second_name\":\"U\",\"city\":\"X\",\"password\":"
             "\"correct horse battery\",\"email\":\"traced-%d-%d@example.org\"}",
             (int)getpid(), ++serial);
    snprintf(header, sizeof(header), "traceparent: 00-%s-00f067aa0ba902b7-01\r\n", reg_trace);
    test_answer *a = call(0, "POST", "/user/register", header, body, strlen(body));
    if (a->status != 200)
        fail_msg("register: %d %s", a->status, a->body);
    user traced, untraced;
    snprintf(traced.id, sizeof(traced.id), "%s", test_answer_field(a, "user_id"));
    set_token(&traced, test_answer_field(a, "token"));
    header_of(a->headers, "traceresponse", got, sizeof(got));
    test_answer_free(a);
    assert_int_equal(strlen(got), 55);
    assert_memory_equal(got + 3, reg_trace, 32);
    assert_string_not_equal(got + 36, "00f067aa0ba902b7-01"); /* our own span */
    assert_string_equal(got + 53, "01");                      /* sampled passes on */

    /* none, malformed (upper case, all-zero ids, ff) or repeated: a new trace */
    register_user(&untraced, "untraced");
    char bad[4][256];
    snprintf(bad[0], sizeof(bad[0]), "traceparent: 00-%s-00F067AA0BA902B7-01\r\n", reg_trace);
    snprintf(bad[1], sizeof(bad[1]),
             "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\n");
    snprintf(bad[2], sizeof(bad[2]), "traceparent: ff-%s-00f067aa0ba902b7-01\r\n", reg_trace);
    snprintf(bad[3], sizeof(bad[3]),
             "traceparent: 00-%s-00f067aa0ba902b7-01\r\ntraceparent: 00-%s-00f067aa0ba902b7-01\r\n",
             reg_trace, reg_trace);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *headers = bad[i];
        a = call(1, "GET", "/healthz", headers, NULL, 0);
        header_of(a->headers, "traceresponse", got, sizeof(got));
        test_answer_free(a);
        assert_int_equal(strlen(got), 55);
        assert_memory_not_equal(got + 3, reg_trace, 32);
        assert_string_equal(got + 53, "00");
    }

    /* a send in another trace */
    char headers[SL_JWT_MAX_TOKEN + 256], path[128];
    snprintf(path, sizeof(path), "/dialog/%s/send", untraced.id);
    snprintf(headers, sizeof(headers),
             "%sContent-Type: application/json\r\ntraceparent: 00-%s-b7ad6b7169203331-00\r\n",
             traced.auth, send_trace);
    a = call(2, "POST", path, headers, "{\"text\":\"traced\"}", 17);
    if (a->status != 200)
        fail_msg("send: %d %s", a->status, a->body);
    test_answer_free(a);

    /* the command: header and CommandMeta name the gateway's span */
    char users_commands[200], replies[200];
    snprintf(users_commands, sizeof(users_commands), "%susers.commands", cluster.prefix);
    snprintf(replies, sizeof(replies), "%s-replies", cluster.app_id);
    trace_find command = {.trace_id = reg_trace, .user_id = traced.id};
    assert_true(test_scan_topic(bootstrap, users_commands, "read_uncommitted",
                                find_register_command, &command, WAIT_MS) >= 0);
    assert_int_equal(command.found, 1);
    assert_int_equal(strlen(command.span), 55);
    assert_string_equal(command.meta_traceparent, command.span);
    /* the event and the reply: the processor's span, a child of it */
    trace_find event = {.trace_id = reg_trace, .user_id = traced.id};
    assert_true(test_scan_topic(bootstrap, users_events, "read_committed", find_registered, &event,
                                WAIT_MS) >= 0);
    assert_int_equal(event.found, 1);
    assert_string_not_equal(event.span, command.span);
    trace_find reply = {.trace_id = reg_trace};
    assert_true(
        test_scan_topic(bootstrap, replies, "read_committed", find_in_trace, &reply, WAIT_MS) >= 0);
    assert_true(reply.found >= 1);
    trace_find sent = {.trace_id = send_trace};
    assert_true(test_scan_topic(bootstrap, dialogs_events, "read_committed", find_in_trace, &sent,
                                WAIT_MS) >= 0);
    assert_int_equal(sent.found, 1);

    /* a bad command in a trace: the dead-letter record and the warning */
    rd_kafka_t *producer = test_producer(bootstrap, NULL);
    char traceparent[64];
    snprintf(traceparent, sizeof(traceparent), "00-%s-a3ce929d0e0e4736-01", dlq_trace);
    assert_int_equal(
        rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(dialogs_commands),
                          RD_KAFKA_V_KEY("not-a-dialog", 12), RD_KAFKA_V_VALUE("\xff\xff", 2),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_HEADER("traceparent", traceparent, -1), RD_KAFKA_V_END),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_flush(producer, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(producer);
    char dlq[200];
    snprintf(dlq, sizeof(dlq), "%s-dlq", cluster.app_id);
    trace_find dead = {.trace_id = dlq_trace};
    int64_t deadline = test_now_ms() + WAIT_MS;
    while ((dead.found == 0 || !log_names_trace(dlq_trace)) && test_now_ms() < deadline) {
        usleep(200000);
        dead.found = 0;
        test_scan_topic(bootstrap, dlq, "read_committed", find_in_trace, &dead, WAIT_MS);
    }
    assert_int_equal(dead.found, 1);
    assert_true(log_names_trace(dlq_trace));

    /* the sink's rows name the event's span */
    char db[64], dsn[256];
    snprintf(db, sizeof(db), "trace_%d_%d", (int)getpid(), ++serial);
    PGconn *pg = test_pg_create_database(db, dsn, sizeof(dsn));
    test_instance sink;
    const char *const command_line[] = {"sink", NULL};
    test_instance_init_sluice(&sink, cluster.work_dir, "trace-sink", command_line);
    test_instance_set(&sink, "pg.dsn=%s", dsn);
    test_instance_set(&sink, "application.id=%s", cluster.app_id);
    test_instance_set(&sink, "pg.sink.users.topic=%s", users_events);
    test_instance_set(&sink, "pg.sink.messages.topic=%s", dialogs_events);
    test_instance_start(&sink);
    char sql[512];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM users WHERE id = '%s' AND traceparent = '%s'",
             traced.id, event.span);
    long long users = 0, messages = 0;
    deadline = test_now_ms() + WAIT_MS;
    char msql[512];
    snprintf(msql, sizeof(msql),
             "SELECT count(*) FROM messages WHERE sender_id = '%s' AND traceparent = '%s'",
             traced.id, sent.span);
    while ((users != 1 || messages != 1) && test_now_ms() < deadline) {
        usleep(300000);
        PGresult *probe = PQexec(pg, "SELECT 1 FROM users LIMIT 0");
        bool ready = PQresultStatus(probe) == PGRES_TUPLES_OK;
        PQclear(probe);
        if (ready) {
            users = test_pg_query_int(pg, sql);
            messages = test_pg_query_int(pg, msql);
        }
    }
    assert_int_equal(test_instance_stop(&sink, 30000), 0);
    test_instance_free(&sink);
    assert_int_equal(users, 1);
    assert_int_equal(messages, 1);
    /* an event without a trace makes a row without one */
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM users WHERE id = '%s' AND traceparent IS "
             "NOT NULL AND traceparent NOT LIKE '00-%s-%%'",
             untraced.id, reg_trace);
    assert_int_equal(test_pg_query_int(pg, sql), 1);
    PQfinish(pg);
}

/* What the state endpoint answered during a kill. */
typedef struct head_probes {
    long exact, stale, unavailable;
} head_probes;

/* The dialog's head read through the state endpoint of a live instance,
 * `expect` messages in: a 503 with Retry-After, or exactly that sequence;
 * with allow_stale, a standby may answer an older one and says how far
 * behind it is. Never a 404 or a sequence ahead of the truth. */
static void probe_head(const char *dialog_id, bool stale, int64_t expect, head_probes *count) {
    char path[256];
    snprintf(path, sizeof(path), "/v1/stores/%s/keys/%s%s", SL_DIALOGS_STORE_HEADS, dialog_id,
             stale ? "?allow_stale=true" : "");
    test_answer *a = admin_get(random_live_instance(), path);
    if (a->status == 503) {
        assert_non_null(strcasestr(a->headers, "Retry-After"));
        count->unavailable++;
    } else {
        if (a->status != 200)
            fail_msg("%s: %d %s", path, a->status, a->body);
        json_t *value = json_object_get(a->json, "value");
        int64_t seq = json_integer_value(json_object_get(value, "last_sequence"));
        char lag[32];
        header_of(a->headers, "X-Sluice-Stale-Lag", lag, sizeof(lag));
        if (lag[0] && stale) {
            if (seq < 1 || seq > expect)
                fail_msg("a standby answered sequence %lld of %lld", (long long)seq,
                         (long long)expect);
            count->stale++;
        } else {
            if (lag[0] || seq != expect)
                fail_msg("%s answered sequence %lld, the dialog has %lld (lag '%s')", path,
                         (long long)seq, (long long)expect, lag);
            count->exact++;
        }
    }
    test_answer_free(a);
}

static void killing_the_owner_mid_conversation_never_gives_a_wrong_answer(void **state) {
    (void)state;
    NEED_BROKER();
    user dave, erin;
    register_user(&dave, "dave");
    register_user(&erin, "erin");
    char dialog_id[SL_DIALOGS_ID_LEN + 1];
    assert_true(sl_dialogs_id(dave.id, erin.id, dialog_id));
    enum { M = 16, KILL_AT = 6 };
    char texts[M][64], from[M][64], to[M][64], key[64];
    int victim = -1;
    long answered_503 = 0, answered_right = 0;
    head_probes heads = {0};
    for (int i = 0; i < M; i++) {
        const user *s = i % 2 ? &erin : &dave;
        const user *r = i % 2 ? &dave : &erin;
        snprintf(texts[i], sizeof(texts[i]), "kill test %d", i);
        snprintf(from[i], sizeof(from[i]), "%s", s->id);
        snprintf(to[i], sizeof(to[i]), "%s", r->id);
        snprintf(key, sizeof(key), "kill-%d-%d", (int)getpid(), i);
        if (i == KILL_AT) {
            victim = owner_of(SL_DIALOGS_STORE_HEADS, dialog_id);
            assert_true(victim >= 0);
            fprintf(stderr, "# kill -9 instance %d, the owner of the dialog\n", victim);
            test_instance_kill9(&cluster.instances[victim]);
            /* Right after the kill: 503 (owner unreachable, rebalancing,
             * restoring) or the exact dialog, never a wrong one. */
            for (int probe = 0; probe < 10; probe++) {
                test_answer *a = list(-1, &dave, erin.id, "?limit=50");
                if (a->status == 503) {
                    answered_503++;
                    assert_non_null(strstr(a->headers, "Retry-After"));
                } else {
                    assert_list(a, texts, (const char (*)[64])from, (const char (*)[64])to, 0,
                                KILL_AT);
                    answered_right++;
                }
                test_answer_free(a);
                probe_head(dialog_id, probe % 2, KILL_AT, &heads); /* issue 17 */
            }
        }
        send_ok(s, r->id, texts[i], key); /* retried with the same key on 503 */
        /* Every answer is a 503 or exactly the dialog so far (the state
         * endpoint's too, read right after the answer). */
        for (int probe = 0; probe < 3; probe++) {
            probe_head(dialog_id, probe % 2, i + 1, &heads);
            test_answer *a = list(-1, r, s->id, "?limit=50");
            if (a->status == 503) {
                answered_503++;
                assert_non_null(strstr(a->headers, "Retry-After"));
            } else {
                assert_list(a, texts, (const char (*)[64])from, (const char (*)[64])to, 0,
                            (size_t)i + 1);
                answered_right++;
            }
            test_answer_free(a);
        }
    }
    /* Restart the victim on its state directory; the dialog is exact there. */
    test_instance_start(&cluster.instances[victim]);
    assert_true(test_instance_wait_ready(&cluster.instances[victim], 120000));
    int64_t deadline = test_now_ms() + WAIT_MS;
    for (int i = 0; i < N; i++) {
        test_answer *a = NULL;
        do {
            test_answer_free(a);
            a = list(i, &dave, erin.id, "?limit=50");
        } while (a->status == 503 && test_now_ms() < deadline && usleep(200000) == 0);
        assert_list(a, texts, (const char (*)[64])from, (const char (*)[64])to, 0, M);
        test_answer_free(a);
    }
    fprintf(stderr, "# kill -9: %ld lists answered exactly, %ld answered 503\n", answered_right,
            answered_503);
    fprintf(stderr,
            "# kill -9: the state endpoint's head answered exactly %ld, from a standby %ld, "
            "503 %ld times\n",
            heads.exact, heads.stale, heads.unavailable);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_registration_is_readable_and_writable_at_once_on_every_instance),
        cmocka_unit_test(a_conversation_lists_exactly_what_was_sent_in_order_with_paging),
        cmocka_unit_test(only_the_two_participants_can_read_or_write_their_dialog),
        cmocka_unit_test(invalid_texts_and_ids_are_400_and_store_nothing),
        cmocka_unit_test(a_repeated_command_id_stores_one_message),
        cmocka_unit_test(lady_gaga_spreads_over_partitions_and_her_index_updates_coalesce),
        cmocka_unit_test(a_standby_answers_a_stale_list_when_the_client_allows_it),
        cmocka_unit_test(a_trace_crosses_http_kafka_the_sink_and_the_logs),
        cmocka_unit_test(the_state_endpoint_reads_every_store_from_any_instance),
        cmocka_unit_test(killing_the_owner_mid_conversation_never_gives_a_wrong_answer),
    };
    /* SLUICE_TEST_FILTER=pattern runs only the matching tests (cmocka glob). */
    if (getenv("SLUICE_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SLUICE_TEST_FILTER"));
    return cmocka_run_group_tests_name("dialogs_http", tests, setup, teardown);
}
