/*
 * The identity topology against the real broker: two `sluice` processes
 * (the binary, running its default topology) share one application id and
 * one topic prefix for the whole file; commands are produced with
 * librdkafka's murmur2_random partitioner, and events, replies and
 * changelogs are read with read_committed consumers. Every test uses fresh
 * user ids, e-mails and command ids, so the tests do not see each other's
 * outcomes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "processor/kafka/client.h"
#include "sluice/v1/identity.pb-c.h"
#include "sluice/v1/meta.pb-c.h"
#include "tests/support/broker.h"
#include "tests/support/instance.h"
#include "tests/support/testutil.h"

#define WAIT_MS 90000
/* A syntactically valid argon2id PHC string (OWASP parameters); the
 * topology checks the format only, it never verifies passwords. */
#define HASH                                                                                       \
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$"                                       \
    "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"

static test_cluster cluster; /* two sluice processes for the whole file */
static char replies[128];
static char users_commands[160], users_events[160], tokens_commands[160], tokens_revoked[160];
static char dlq[128], by_id_changelog[160];
static int serial;

static void uuid(char out[37]) {
    unsigned a = (unsigned)getpid(), b = (unsigned)++serial;
    unsigned long long c = (unsigned long long)test_now_ms();
    snprintf(out, 37, "%08x-%04x-4%03x-8%03x-%012llx", a, b & 0xffff, (b >> 4) & 0xfff, b & 0xfff,
             c & 0xffffffffffffULL);
}

/* Token expiries are Unix-epoch milliseconds (test_now_ms is monotonic). */
static int64_t epoch_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state) {
    (void)state;
    if (!test_kafka_bootstrap())
        return 0;
    if (test_cluster_init(&cluster, "ident", 2) != 0)
        return -1;
    const char *app_id = cluster.app_id, *prefix = cluster.prefix;
    snprintf(replies, sizeof(replies), "%s-replies", app_id);
    snprintf(users_commands, sizeof(users_commands), "%susers.commands", prefix);
    snprintf(users_events, sizeof(users_events), "%susers.events", prefix);
    snprintf(tokens_commands, sizeof(tokens_commands), "%stokens.commands", prefix);
    snprintf(tokens_revoked, sizeof(tokens_revoked), "%stokens.revoked", prefix);
    snprintf(dlq, sizeof(dlq), "%s-dlq", app_id);
    snprintf(by_id_changelog, sizeof(by_id_changelog), "%s-users-by-id-changelog", app_id);
    for (int i = 0; i < cluster.n; i++) {
        test_instance_set(&cluster.instances[i], "identity.revocation.sweep.interval.ms=300");
        test_instance_set(&cluster.instances[i], "identity.revocation.grace.ms=0");
        test_instance_set(&cluster.instances[i], "reply.partitions=2");
    }
    return test_cluster_start(&cluster);
}

static int teardown(void **state) {
    (void)state;
    return test_cluster_stop(&cluster);
}

#define NEED_BROKER() test_skip_unless(cluster.started, TEST_NO_BROKER)

/* ------------------------------------------------------------------------ */
/* Producing                                                                 */

static void produce(rd_kafka_t *producer, const char *topic, const char *key, const void *value,
                    size_t len) {
    assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic),
                                       RD_KAFKA_V_KEY((void *)key, key ? strlen(key) : 0),
                                       RD_KAFKA_V_VALUE((void *)value, len),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
}

static rd_kafka_t *new_producer(void) {
    return test_producer(test_kafka_bootstrap(), NULL); /* sl_kafka_conf_new: murmur2_random */
}

typedef struct registration {
    char command_id[40], correlation_id[40], user_id[37], email[128], birthdate[16];
    const char *password_hash;
    const char *key; /* NULL: the e-mail */
} registration;

static void registration_init(registration *r, const char *email) {
    memset(r, 0, sizeof(*r));
    uuid(r->command_id);
    uuid(r->correlation_id);
    uuid(r->user_id);
    snprintf(r->email, sizeof(r->email), "%s", email);
    snprintf(r->birthdate, sizeof(r->birthdate), "1990-02-28");
    r->password_hash = HASH;
}

/* partition >= 0: produce there, whatever the key (as `kcat -p` does). */
static void produce_registration_to(rd_kafka_t *producer, const registration *r,
                                    int32_t partition) {
    Sluice__V1__CommandMeta meta = SLUICE__V1__COMMAND_META__INIT;
    meta.command_id = (char *)r->command_id;
    meta.correlation_id = (char *)r->correlation_id;
    meta.reply_to = replies;
    meta.reply_key = "gateway-test";
    Sluice__V1__Profile profile = SLUICE__V1__PROFILE__INIT;
    profile.first_name = "Ada";
    profile.second_name = "Lovelace";
    profile.birthdate = (char *)r->birthdate;
    profile.city = "London";
    Sluice__V1__RegisterUser reg = SLUICE__V1__REGISTER_USER__INIT;
    reg.meta = &meta;
    reg.user_id = (char *)r->user_id;
    reg.email = (char *)r->email;
    reg.password_hash = (char *)r->password_hash;
    reg.profile = &profile;
    Sluice__V1__UsersCommand cmd = SLUICE__V1__USERS_COMMAND__INIT;
    cmd.command_case = SLUICE__V1__USERS_COMMAND__COMMAND_REGISTER_USER;
    cmd.register_user = &reg;
    uint8_t buf[2048];
    size_t len = sluice__v1__users_command__get_packed_size(&cmd);
    assert_true(len <= sizeof(buf));
    sluice__v1__users_command__pack(&cmd, buf);
    const char *key = r->key ? r->key : r->email;
    if (partition < 0) {
        produce(producer, users_commands, key, buf, len);
        return;
    }
    assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(users_commands),
                                       RD_KAFKA_V_PARTITION(partition),
                                       RD_KAFKA_V_KEY((void *)key, strlen(key)),
                                       RD_KAFKA_V_VALUE(buf, len),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
}

static void produce_registration(rd_kafka_t *producer, const registration *r) {
    produce_registration_to(producer, r, -1);
}

static int partitions_of(rd_kafka_t *producer, const char *topic) {
    rd_kafka_topic_t *handle = rd_kafka_topic_new(producer, topic, NULL);
    const struct rd_kafka_metadata *metadata = NULL;
    assert_non_null(handle);
    assert_int_equal(rd_kafka_metadata(producer, 0, handle, &metadata, 10000), 0);
    assert_int_equal(metadata->topic_cnt, 1);
    int n = metadata->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(metadata);
    rd_kafka_topic_destroy(handle);
    return n;
}

static void produce_revocation(rd_kafka_t *producer, const char *command_id, const char *jti,
                               int64_t expires_at_ms) {
    Sluice__V1__CommandMeta meta = SLUICE__V1__COMMAND_META__INIT;
    meta.command_id = (char *)command_id;
    meta.correlation_id = (char *)command_id;
    meta.reply_to = replies;
    meta.reply_key = "gateway-test";
    Sluice__V1__RevokeToken revoke = SLUICE__V1__REVOKE_TOKEN__INIT;
    revoke.meta = &meta;
    revoke.jti = (char *)jti;
    revoke.session_id = "session-of-test";
    revoke.expires_at_ms = expires_at_ms;
    revoke.reason = "logout";
    Sluice__V1__TokensCommand cmd = SLUICE__V1__TOKENS_COMMAND__INIT;
    cmd.command_case = SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_TOKEN;
    cmd.revoke_token = &revoke;
    uint8_t buf[1024];
    size_t len = sluice__v1__tokens_command__get_packed_size(&cmd);
    sluice__v1__tokens_command__pack(&cmd, buf);
    produce(producer, tokens_commands, jti, buf, len);
}

/* ------------------------------------------------------------------------ */
/* Reading: scan a topic (read_committed) until `done` says enough.          */

#define MAX_SEEN 128

typedef struct seen {
    const char *match; /* user id, command id or key to look for */
    int n;
    int registered, rejected_taken, rejected_invalid, tombstones;
    char detail[256];
    char type[MAX_SEEN][64];
    uint8_t raw[4096]; /* bytes of the first match */
    size_t raw_len;
    bool already_revoked[MAX_SEEN];
    bool has_raw;
} seen;

typedef bool seen_done_fn(const seen *s, void *arg);

static void keep_raw(seen *s, const rd_kafka_message_t *m) {
    if (!s->has_raw && m->payload && m->len <= sizeof(s->raw)) {
        memcpy(s->raw, m->payload, m->len);
        s->raw_len = m->len;
        s->has_raw = true;
    }
}

static void visit_event(const rd_kafka_message_t *m, void *opaque) {
    seen *s = opaque;
    Sluice__V1__UsersEvent *event = sluice__v1__users_event__unpack(NULL, m->len, m->payload);
    if (!event)
        return;
    const Sluice__V1__CommandMeta *meta = NULL;
    const char *user = "", *email = "";
    switch (event->event_case) {
    case SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED:
        meta = event->user_registered->meta;
        user = event->user_registered->user_id;
        email = event->user_registered->email;
        break;
    case SLUICE__V1__USERS_EVENT__EVENT_REGISTRATION_REJECTED:
        meta = event->registration_rejected->meta;
        user = event->registration_rejected->user_id;
        email = event->registration_rejected->email;
        break;
    default:
        break;
    }
    bool matches = strcmp(user, s->match) == 0 || strcmp(email, s->match) == 0 ||
                   (meta && strcmp(meta->command_id, s->match) == 0);
    if (matches) {
        s->n++;
        keep_raw(s, m);
        if (event->event_case == SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED)
            s->registered++;
        else if (event->event_case == SLUICE__V1__USERS_EVENT__EVENT_REGISTRATION_REJECTED) {
            if (event->registration_rejected->reason ==
                SLUICE__V1__REGISTRATION_REJECTED__REASON__EMAIL_TAKEN)
                s->rejected_taken++;
            if (event->registration_rejected->reason ==
                SLUICE__V1__REGISTRATION_REJECTED__REASON__INVALID) {
                s->rejected_invalid++;
                snprintf(s->detail, sizeof(s->detail), "%s", event->registration_rejected->detail);
            }
        }
    }
    sluice__v1__users_event__free_unpacked(event, NULL);
}

/* Replies whose correlation id or command id is s->match, in offset order
 * per partition (one reply key: one partition). */
static void visit_reply(const rd_kafka_message_t *m, void *opaque) {
    seen *s = opaque;
    Sluice__V1__Reply *reply = sluice__v1__reply__unpack(NULL, m->len, m->payload);
    if (!reply)
        return;
    if ((strcmp(reply->correlation_id, s->match) == 0 ||
         strcmp(reply->command_id, s->match) == 0) &&
        s->n < MAX_SEEN) {
        snprintf(s->type[s->n], sizeof(s->type[0]), "%s", reply->type);
        if (s->n == 0 && reply->payload.len <= sizeof(s->raw)) {
            memcpy(s->raw, reply->payload.data, reply->payload.len);
            s->raw_len = reply->payload.len;
            s->has_raw = true;
        }
        if (strcmp(reply->type, "sluice.v1.TokenRevoked") == 0) {
            Sluice__V1__TokenRevoked *revoked =
                sluice__v1__token_revoked__unpack(NULL, reply->payload.len, reply->payload.data);
            assert_non_null(revoked);
            s->already_revoked[s->n] = revoked->already_revoked;
            sluice__v1__token_revoked__free_unpacked(revoked, NULL);
        }
        s->n++;
    }
    sluice__v1__reply__free_unpacked(reply, NULL);
}

/* Records whose key is s->match (changelogs, tokens.revoked). */
static void visit_keyed(const rd_kafka_message_t *m, void *opaque) {
    seen *s = opaque;
    if (!m->key || m->key_len != strlen(s->match) || memcmp(m->key, s->match, m->key_len) != 0)
        return;
    s->n++;
    if (!m->payload)
        s->tombstones++;
    else
        keep_raw(s, m);
}

/* Dead-letter records whose key is s->match, counted in s->rejected_invalid
 * when their sluice.dlq.error header is "wrong_partition". */
static void visit_dlq(const rd_kafka_message_t *m, void *opaque) {
    seen *s = opaque;
    visit_keyed(m, s);
    rd_kafka_headers_t *headers = NULL;
    const void *reason = NULL;
    size_t reason_len = 0;
    if (!m->key || m->key_len != strlen(s->match) || memcmp(m->key, s->match, m->key_len) != 0 ||
        rd_kafka_message_headers(m, &headers) != 0 ||
        rd_kafka_header_get_last(headers, "sluice.dlq.error", &reason, &reason_len) != 0)
        return;
    if (reason_len == strlen("wrong_partition") && memcmp(reason, "wrong_partition", reason_len) == 0)
        s->rejected_invalid++;
}

static bool at_least(const seen *s, void *arg) {
    return s->n >= *(int *)arg;
}

static bool has_tombstone(const seen *s, void *arg) {
    (void)arg;
    return s->tombstones > 0;
}

static void wait_seen(const char *topic, test_visit_fn *visit, const char *match, seen *s,
                      seen_done_fn *done, void *arg) {
    int64_t deadline = test_now_ms() + WAIT_MS;
    do {
        memset(s, 0, sizeof(*s));
        s->match = match;
        assert_true(
            test_scan_topic(test_kafka_bootstrap(), topic, "read_committed", visit, s, 30000) >= 0);
        if (done(s, arg))
            return;
        usleep(200 * 1000);
    } while (test_now_ms() < deadline);
    fail_msg("%s: condition not reached for %s (seen %d)", topic, match, s->n);
}

static void wait_count(const char *topic, test_visit_fn *visit, const char *match, seen *s, int n) {
    wait_seen(topic, visit, match, s, at_least, &n);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

static void registration_emits_user_registered_a_reply_and_the_users_by_id_record(void **state) {
    (void)state;
    NEED_BROKER();
    rd_kafka_t *producer = new_producer();
    registration r;
    registration_init(&r, "");
    snprintf(r.email, sizeof(r.email), "ada.%d.%lld@example.org", getpid(),
             (long long)test_now_ms());
    produce_registration(producer, &r);
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    rd_kafka_destroy(producer);

    seen s;
    wait_count(users_events, visit_event, r.user_id, &s, 1);
    assert_int_equal(s.registered, 1);
    assert_int_equal(s.n, 1);

    wait_count(replies, visit_reply, r.correlation_id, &s, 1);
    assert_string_equal(s.type[0], "sluice.v1.UserRegistered");
    Sluice__V1__UserRegistered *payload =
        sluice__v1__user_registered__unpack(NULL, s.raw_len, s.raw);
    assert_non_null(payload);
    assert_string_equal(payload->user_id, r.user_id);
    assert_string_equal(payload->meta->correlation_id, r.correlation_id);
    sluice__v1__user_registered__free_unpacked(payload, NULL);

    wait_count(by_id_changelog, visit_keyed, r.user_id, &s, 1);
    Sluice__V1__UserRecord *user = sluice__v1__user_record__unpack(NULL, s.raw_len, s.raw);
    assert_non_null(user);
    assert_string_equal(user->email, r.email);
    assert_string_equal(user->password_hash, HASH);
    assert_string_equal(user->profile->city, "London");
    sluice__v1__user_record__free_unpacked(user, NULL);
}

typedef struct storm {
    registration *regs;
    int from, to;
} storm;

static void *produce_storm(void *arg) {
    storm *st = arg;
    rd_kafka_t *producer = new_producer();
    for (int i = st->from; i < st->to; i++)
        produce_registration(producer, &st->regs[i]);
    rd_kafka_flush(producer, 30000);
    rd_kafka_destroy(producer);
    return NULL;
}

static void fifty_concurrent_registrations_of_one_email_have_exactly_one_winner(void **state) {
    (void)state;
    NEED_BROKER();
    char email[128];
    snprintf(email, sizeof(email), "storm.%d.%lld@example.org", getpid(), (long long)test_now_ms());
    registration regs[50];
    for (int i = 0; i < 50; i++)
        registration_init(&regs[i], email);
    storm halves[2] = {{regs, 0, 25}, {regs, 25, 50}};
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, produce_storm, &halves[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    seen s;
    wait_count(users_events, visit_event, email, &s, 50);
    assert_int_equal(s.n, 50);
    assert_int_equal(s.registered, 1);
    assert_int_equal(s.rejected_taken, 49);
    /* both instances were running all along */
    for (int i = 0; i < 2; i++)
        assert_true(test_instance_engine_stat(&cluster.instances[i], "tasks_running") > 0);
}

static void repeated_command_id_gets_the_same_reply_and_no_second_event(void **state) {
    (void)state;
    NEED_BROKER();
    rd_kafka_t *producer = new_producer();
    registration r;
    registration_init(&r, "");
    snprintf(r.email, sizeof(r.email), "twice.%d.%lld@example.org", getpid(),
             (long long)test_now_ms());
    produce_registration(producer, &r);
    /* the retry: same command id, a new correlation id and another user id
     * (as if the gateway had lost its state); the answer must be the first */
    registration retry = r;
    uuid(retry.user_id);
    produce_registration(producer, &retry);
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    rd_kafka_destroy(producer);

    seen s;
    wait_count(replies, visit_reply, r.command_id, &s, 2);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.type[0], "sluice.v1.UserRegistered");
    assert_string_equal(s.type[1], "sluice.v1.UserRegistered");
    Sluice__V1__UserRegistered *first = sluice__v1__user_registered__unpack(NULL, s.raw_len, s.raw);
    assert_non_null(first);
    assert_string_equal(first->user_id, r.user_id);
    sluice__v1__user_registered__free_unpacked(first, NULL);
    /* The second reply was committed with the second command's offsets: by
     * now every event of that command id is visible. */
    wait_count(users_events, visit_event, r.command_id, &s, 1);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.registered, 1);
}

static void invalid_fields_are_rejected_with_the_field_named(void **state) {
    (void)state;
    NEED_BROKER();
    rd_kafka_t *producer = new_producer();
    registration bad_date, bad_hash, bad_key;
    registration_init(&bad_date, "");
    snprintf(bad_date.email, sizeof(bad_date.email), "date.%lld@example.org",
             (long long)test_now_ms());
    snprintf(bad_date.birthdate, sizeof(bad_date.birthdate), "1990-02-30");
    registration_init(&bad_hash, "");
    snprintf(bad_hash.email, sizeof(bad_hash.email), "hash.%lld@example.org",
             (long long)test_now_ms());
    bad_hash.password_hash = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA";
    registration_init(&bad_key, "");
    snprintf(bad_key.email, sizeof(bad_key.email), "key.%lld@example.org",
             (long long)test_now_ms());
    bad_key.key = "someone.else@example.org";
    produce_registration(producer, &bad_date);
    produce_registration(producer, &bad_hash);
    produce_registration(producer, &bad_key);
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    rd_kafka_destroy(producer);

    const struct {
        const registration *r;
        const char *field;
    } cases[] = {
        {&bad_date, "profile.birthdate"}, {&bad_hash, "password_hash"}, {&bad_key, "email"}};
    for (size_t i = 0; i < 3; i++) {
        seen s;
        wait_count(users_events, visit_event, cases[i].r->user_id, &s, 1);
        assert_int_equal(s.rejected_invalid, 1);
        assert_int_equal(s.registered, 0);
        printf("# detail: %s\n", s.detail);
        assert_int_equal(strncmp(s.detail, cases[i].field, strlen(cases[i].field)), 0);
        assert_null(strstr(s.detail, cases[i].r->email)); /* no personal data */
        wait_count(replies, visit_reply, cases[i].r->correlation_id, &s, 1);
        assert_string_equal(s.type[0], "sluice.v1.RegistrationRejected");
    }
}

static void undecodable_bytes_go_to_the_dlq_and_the_stream_continues(void **state) {
    (void)state;
    NEED_BROKER();
    char key[128];
    snprintf(key, sizeof(key), "garbage.%lld@example.org", (long long)test_now_ms());
    rd_kafka_t *producer = new_producer();
    /* field 1 (register_user), length-delimited, declared 100 bytes, 3 given */
    static const uint8_t garbage[] = {0x0a, 0x64, 0x01, 0x02, 0x03};
    produce(producer, users_commands, key, garbage, sizeof(garbage));
    produce(producer, users_commands, key, "", 0); /* an empty envelope */
    registration after;
    registration_init(&after, key); /* the same partition, after the poison */
    produce_registration(producer, &after);
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    rd_kafka_destroy(producer);

    seen s;
    wait_count(users_events, visit_event, after.user_id, &s, 1);
    assert_int_equal(s.registered, 1);
    wait_count(dlq, visit_keyed, key, &s, 2);
    assert_int_equal(s.n, 2);
}

/* The issue's `kcat -p 0..3`: a registration of a taken e-mail produced to
 * every partition explicitly. Only the partition murmur2(e-mail) selects
 * owns the e-mail (it answers EMAIL_TAKEN); the others dead-letter the
 * command with reason wrong_partition instead of registering it again. */
static void registration_on_a_wrong_partition_goes_to_the_dlq_not_to_a_second_user(void **state) {
    (void)state;
    NEED_BROKER();
    rd_kafka_t *producer = new_producer();
    char email[128];
    snprintf(email, sizeof(email), "kcat.%d.%lld@example.org", getpid(), (long long)test_now_ms());
    registration first;
    registration_init(&first, email);
    produce_registration(producer, &first);
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    seen s;
    wait_count(users_events, visit_event, email, &s, 1);
    assert_int_equal(s.registered, 1);

    int partitions = partitions_of(producer, users_commands);
    assert_true(partitions > 1);
    for (int p = 0; p < partitions; p++) {
        registration again;
        registration_init(&again, email);
        produce_registration_to(producer, &again, p);
    }
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    rd_kafka_destroy(producer);

    wait_count(dlq, visit_dlq, email, &s, partitions - 1);
    assert_int_equal(s.n, partitions - 1);
    assert_int_equal(s.rejected_invalid, partitions - 1);
    wait_count(users_events, visit_event, email, &s, 2);
    assert_int_equal(s.registered, 1);
    assert_int_equal(s.rejected_taken, 1);
    assert_int_equal(s.n, 2);
}

static void
revocation_is_published_a_second_one_is_already_revoked_and_expiry_tombstones(void **state) {
    (void)state;
    NEED_BROKER();
    char jti[64], other_jti[64], first[40], second[40], third[40], jti_key[80], other_key[80];
    uuid(jti);
    uuid(other_jti);
    uuid(first);
    uuid(second);
    uuid(third);
    snprintf(jti_key, sizeof(jti_key), "jti:%s", jti);
    snprintf(other_key, sizeof(other_key), "jti:%s", other_jti);
    int64_t far = epoch_ms() + 3600 * 1000;
    rd_kafka_t *producer = new_producer();
    produce_revocation(producer, first, jti, far);
    produce_revocation(producer, second, jti, far);
    produce_revocation(producer, first, jti, far); /* a retry of the first */
    produce_revocation(producer, third, other_jti, epoch_ms() + 1000);
    assert_int_equal(rd_kafka_flush(producer, 30000), 0);
    rd_kafka_destroy(producer);

    seen s;
    wait_count(replies, visit_reply, first, &s, 2);
    assert_string_equal(s.type[0], "sluice.v1.TokenRevoked");
    assert_false(s.already_revoked[0]);
    assert_false(s.already_revoked[1]); /* the same command: the same answer */
    wait_count(replies, visit_reply, second, &s, 1);
    assert_true(s.already_revoked[0]);

    wait_count(tokens_revoked, visit_keyed, jti_key, &s, 1);
    assert_int_equal(s.n, 1); /* one TokenRevoked, not three */
    Sluice__V1__TokenRevoked *revoked = sluice__v1__token_revoked__unpack(NULL, s.raw_len, s.raw);
    assert_non_null(revoked);
    assert_string_equal(revoked->jti, jti);
    assert_false(revoked->already_revoked);
    sluice__v1__token_revoked__free_unpacked(revoked, NULL);

    /* the short-lived one: revoked, then forgotten with a tombstone */
    wait_seen(tokens_revoked, visit_keyed, other_key, &s, has_tombstone, NULL);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.tombstones, 1);
}

/* The repository root, from <root>/build/<variant>/tests/integration/x. */
static void repo_root(char *out, size_t size) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    assert_true(n > 0);
    self[n] = '\0';
    char *dir = self;
    for (int i = 0; i < 5; i++)
        dir = dirname(dir);
    snprintf(out, size, "%s", dir);
}

static void run_shell(const char *cmd) {
    int status = system(cmd);
    if (status != 0)
        fail_msg("command failed (%d): %s", status, cmd);
}

static void protoc_decodes_events_and_kcat_registers_a_user(void **state) {
    (void)state;
    NEED_BROKER();
    char root[1024], cmd[8192], path[256], out[256];
    repo_root(root, sizeof(root));
    /* An external producer: text format -> protoc --encode -> kcat. */
    char user_id[37], command_id[37], email[128];
    uuid(user_id);
    uuid(command_id);
    snprintf(email, sizeof(email), "kcat.%lld@example.org", (long long)test_now_ms());
    snprintf(path, sizeof(path), "%s/register.txtpb", cluster.work_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "register_user {\n  meta { command_id: \"%s\" }\n  user_id: \"%s\"\n"
            "  email: \"%s\"\n  password_hash: \"%s\"\n"
            "  profile { first_name: \"Grace\" second_name: \"Hopper\" }\n}\n",
            command_id, user_id, email, HASH);
    fclose(f);
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && protoc --encode=sluice.v1.UsersCommand -I proto "
             "proto/sluice/v1/identity.proto < '%s' > '%s.bin' && "
             "kcat -P -b '%s' -t '%s' -k '%s' -X topic.partitioner=murmur2_random '%s.bin'",
             root, path, path, test_kafka_bootstrap(), users_commands, email, path);
    run_shell(cmd);
    seen s;
    wait_count(users_events, visit_event, user_id, &s, 1);
    assert_int_equal(s.registered, 1);

    /* A second tool that knows only the .proto decodes our event. */
    snprintf(path, sizeof(path), "%s/event.bin", cluster.work_dir);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(s.raw, 1, s.raw_len, f), s.raw_len);
    fclose(f);
    snprintf(out, sizeof(out), "%s/event.txt", cluster.work_dir);
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && protoc --decode=sluice.v1.UsersEvent -I proto "
             "proto/sluice/v1/identity.proto < '%s' > '%s'",
             root, path, out);
    run_shell(cmd);
    char text[4096] = "";
    f = fopen(out, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char expected[128];
    snprintf(expected, sizeof(expected), "user_id: \"%s\"", user_id);
    assert_non_null(strstr(text, "user_registered {"));
    assert_non_null(strstr(text, expected));
    assert_non_null(strstr(text, "first_name: \"Grace\""));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(registration_emits_user_registered_a_reply_and_the_users_by_id_record),
        cmocka_unit_test(fifty_concurrent_registrations_of_one_email_have_exactly_one_winner),
        cmocka_unit_test(repeated_command_id_gets_the_same_reply_and_no_second_event),
        cmocka_unit_test(invalid_fields_are_rejected_with_the_field_named),
        cmocka_unit_test(undecodable_bytes_go_to_the_dlq_and_the_stream_continues),
        cmocka_unit_test(registration_on_a_wrong_partition_goes_to_the_dlq_not_to_a_second_user),
        cmocka_unit_test(
            revocation_is_published_a_second_one_is_already_revoked_and_expiry_tombstones),
        cmocka_unit_test(protoc_decodes_events_and_kcat_registers_a_user),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
