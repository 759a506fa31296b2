/*
 * End to end, on the harness's real broker and PostgreSQL: users registered
 * by RegisterUser commands, SendMessage commands processed by two
 * `sluice run` instances (identity + dialogs topologies), and one
 * `sluice sink` process materializing users.events and dialogs.events into
 * Postgres while the test kills it with SIGKILL five times and restarts it.
 *
 * At the end three things must agree exactly:
 *   - the input: what the test produced (dialog, sender, recipient, text,
 *     in per-dialog order);
 *   - dialogs.events read with read_committed: one MessageSent per command,
 *     sequence k+1 for the dialog's k-th command, no rejection;
 *   - the messages table: the same rows as the topic (count, and every
 *     (dialog_id, sequence) with the same sender, recipient, text and time),
 *     sequences 1..n per dialog without gaps; and the users table: the
 *     registered users, without any password hash.
 *
 * SLUICE_TEST_E2E_MESSAGES sets the number of messages (default below).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "processor/kafka/client.h"
#include "sluice/v1/dialogs.pb-c.h"
#include "sluice/v1/identity.pb-c.h"
#include "sluice/v1/meta.pb-c.h"
#include "tests/support/broker.h"
#include "tests/support/http_client.h"
#include "tests/support/instance.h"
#include "tests/support/postgres.h"
#include "tests/support/testutil.h"
#include "topology/dialogs/dialogs.h"

#define DEFAULT_MESSAGES 100000
#define USERS            250
#define DIALOGS          1000 /* pairs (u, u + 1..4): 4 dialogs per user */
#define PARTITIONS       4
#define KILLS            5
#define PRODUCE_MS       40000 /* the commands are produced over this long */
#define WAIT_MS          180000
#define STALL_MS         30000
#define LONG_TEXT_EVERY  997 /* one message in 997 carries 4096 bytes */
/* A syntactically valid argon2id PHC string: the topology checks the
 * format only. The users table must never contain it. */
#define HASH_MARK "$argon2id$"
#define HASH                                                                                       \
    HASH_MARK "v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$"                                       \
              "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"

static char work_dir[64];

typedef struct user {
    char id[37];
    char email[96];
    char first_name[48];
} user;

typedef struct dialog {
    char id[SL_DIALOGS_ID_LEN + 1];
    int a, b; /* user indexes */
} dialog;

/* What the topic says about one (dialog, sequence). */
typedef struct topic_row {
    bool seen;
    bool in_table;
    int64_t sent_at_ms;
} topic_row;

/* The load, produced by load_thread. */
typedef struct load {
    struct e2e *t;
    pthread_t thread;
    bool started;
    atomic_bool producing;
    atomic_long failures;
    int64_t produced_ms;
} load;

typedef struct e2e {
    char app_id[96], prefix[112];
    char users_commands[160], users_events[160], dialogs_commands[160], dialogs_events[160];
    char db[64], dsn[200];
    PGconn *pg;
    test_instance run[2];
    test_instance sink;
    user users[USERS];
    dialog dialogs[DIALOGS];
    int sorted[DIALOGS]; /* dialog indexes by id, for lookups by id */
    long messages, per_dialog;
    topic_row *rows; /* [dialog * per_dialog + sequence - 1] */
    load load;
} e2e;

/* ---- setup ------------------------------------------------------------- */

static int setup(void **state) {
    (void)state;
    return test_work_dir_make(work_dir, sizeof(work_dir), "sluice-e2e-sink");
}

/* The scenario of the running test: teardown kills what a failed assertion
 * left running. */
static e2e *current;

static int teardown(void **state) {
    (void)state;
    if (current) {
        if (current->load.started)
            pthread_join(current->load.thread, NULL);
        test_instance_free(&current->sink);
        test_instance_free(&current->run[0]);
        test_instance_free(&current->run[1]);
        if (current->pg)
            PQfinish(current->pg);
        free(current->rows);
        free(current);
        current = NULL;
    }
    test_work_dir_remove(work_dir);
    return 0;
}

/* Record timestamps are Unix-epoch milliseconds (test_now_ms is monotonic). */
static int64_t epoch_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long messages_from_env(void) {
    const char *s = getenv("SLUICE_TEST_E2E_MESSAGES");
    long n = s ? strtol(s, NULL, 10) : 0;
    return n > 0 ? n : DEFAULT_MESSAGES;
}

/* A database of its own: the harness's DSN with another database name. */
static void create_database(e2e *t) {
    snprintf(t->db, sizeof(t->db), "e2e_sink_%d", (int)getpid());
    t->pg = test_pg_create_database(t->db, t->dsn, sizeof(t->dsn));
}

/* ---- the input ----------------------------------------------------------- */

static void make_uuid(char out[37], unsigned n) {
    unsigned pid = (unsigned)getpid();
    unsigned long long t = (unsigned long long)time(NULL);
    snprintf(out, 37, "%08x-%04x-4%03x-8%03x-%012llx", pid, n & 0xffff, (n >> 16) & 0xfff,
             n & 0xfff, t & 0xffffffffffffULL);
}

static int cmp_dialog_ids(const void *x, const void *y, void *ctx) {
    const dialog *dialogs = ctx;
    return strcmp(dialogs[*(const int *)x].id, dialogs[*(const int *)y].id);
}

static void make_input(e2e *t) {
    for (int u = 0; u < USERS; u++) {
        make_uuid(t->users[u].id, (unsigned)u);
        snprintf(t->users[u].email, sizeof(t->users[u].email), "e2e-%d-%d@example.org",
                 (int)getpid(), u);
        snprintf(t->users[u].first_name, sizeof(t->users[u].first_name), "Имя %d", u);
    }
    for (int d = 0; d < DIALOGS; d++) {
        dialog *dg = &t->dialogs[d];
        dg->a = d % USERS;
        dg->b = (dg->a + 1 + d / USERS) % USERS;
        assert_true(sl_dialogs_id(t->users[dg->a].id, t->users[dg->b].id, dg->id));
        t->sorted[d] = d;
    }
    qsort_r(t->sorted, DIALOGS, sizeof(int), cmp_dialog_ids, t->dialogs);
    for (int i = 1; i < DIALOGS; i++) /* the pairs are distinct */
        assert_true(strcmp(t->dialogs[t->sorted[i - 1]].id, t->dialogs[t->sorted[i]].id) < 0);
}

static int dialog_by_id(const e2e *t, const char *id) {
    int lo = 0, hi = DIALOGS - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(t->dialogs[t->sorted[mid]].id, id);
        if (c == 0)
            return t->sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* Message k of dialog d (k from 0): who sends it and its text. The text
 * needs every COPY escape, multi-byte UTF-8, and now and then the largest
 * text the processor accepts. */
static const user *sender_of(const e2e *t, int d, long k) {
    const dialog *dg = &t->dialogs[d];
    unsigned h = (unsigned)d * 2654435761u ^ (unsigned)k * 40503u;
    return &t->users[(h >> 7) & 1 ? dg->a : dg->b];
}

static const user *recipient_of(const e2e *t, int d, long k) {
    const user *s = sender_of(t, d, k);
    const dialog *dg = &t->dialogs[d];
    return s == &t->users[dg->a] ? &t->users[dg->b] : &t->users[dg->a];
}

static void text_of(int d, long k, char *out, size_t size) {
    int n = snprintf(out, size, "d%d m%ld\ttab \\back\\slash\nnew line \"q\" 'a' привет ✓ %s", d, k,
                     k % 7 == 0 ? "\\N" : "");
    if ((d * 31 + k) % LONG_TEXT_EVERY == 0) {
        assert_true(size > SL_DIALOGS_MAX_TEXT);
        memset(out + n, 'x', SL_DIALOGS_MAX_TEXT - (size_t)n);
        out[SL_DIALOGS_MAX_TEXT] = '\0';
    }
}

/* ---- processes ------------------------------------------------------------ */

static void run_init(e2e *t, int i) {
    test_instance *inst = &t->run[i];
    test_instance_init_sluice(inst, work_dir, i ? "run-b" : "run-a", NULL);
    test_instance_set(inst, "application.id=%s", t->app_id);
    test_instance_set(inst, "identity.topic.prefix=%s", t->prefix);
    test_instance_set(inst, "dialogs.topic.prefix=%s", t->prefix);
    test_instance_set(inst, "dialogs.topic.partitions=%d", PARTITIONS);
    test_instance_set(inst, "identity.topic.partitions=%d", PARTITIONS);
    test_instance_set(inst, "reply.partitions=2");
    test_instance_set_fast_failover(inst);
}

static void sink_init(e2e *t) {
    const char *const command[] = {"sink", NULL};
    test_instance_init_sluice(&t->sink, work_dir, "sink", command);
    test_instance_set(&t->sink, "pg.dsn=%s", t->dsn);
    test_instance_set(&t->sink, "application.id=%s", t->app_id);
    test_instance_set(&t->sink, "pg.sink.users.topic=%s", t->users_events);
    test_instance_set(&t->sink, "pg.sink.messages.topic=%s", t->dialogs_events);
    test_instance_set(&t->sink, "pg.sink.retry.backoff.max.ms=1000");
    test_instance_set(&t->sink, "kafka.consumer.session.timeout.ms=6000");
    /* 50 batches for the whole load at least: kills land between and
     * inside batches, and the last one before the table is complete. */
    test_instance_set(&t->sink, "pg.sink.batch.rows=%ld",
                      t->messages / 50 < 100 ? 100 : t->messages / 50);
}

/* ---- producing -------------------------------------------------------------- */

/* No cmocka assertion here: the load is produced from another thread. */
static bool produce(rd_kafka_t *p, const char *topic, const char *key, const void *value,
                    size_t len) {
    return test_broker_produce(p, topic, key, value, len) == RD_KAFKA_RESP_ERR_NO_ERROR;
}

static void produce_registration(e2e *t, rd_kafka_t *p, int u) {
    char command_id[128];
    snprintf(command_id, sizeof(command_id), "%s-register-%d", t->app_id, u);
    Sluice__V1__CommandMeta meta = SLUICE__V1__COMMAND_META__INIT;
    meta.command_id = command_id;
    Sluice__V1__Profile profile = SLUICE__V1__PROFILE__INIT;
    profile.first_name = t->users[u].first_name;
    profile.second_name = (char *)"Lovelace";
    profile.birthdate = (char *)"1990-02-28";
    profile.city = (char *)"Москва";
    Sluice__V1__RegisterUser reg = SLUICE__V1__REGISTER_USER__INIT;
    reg.meta = &meta;
    reg.user_id = t->users[u].id;
    reg.email = t->users[u].email;
    reg.password_hash = (char *)HASH;
    reg.profile = &profile;
    Sluice__V1__UsersCommand cmd = SLUICE__V1__USERS_COMMAND__INIT;
    cmd.command_case = SLUICE__V1__USERS_COMMAND__COMMAND_REGISTER_USER;
    cmd.register_user = &reg;
    uint8_t buf[1024];
    assert_true(sluice__v1__users_command__get_packed_size(&cmd) <= sizeof(buf));
    size_t len = sluice__v1__users_command__pack(&cmd, buf);
    assert_true(produce(p, t->users_commands, t->users[u].email, buf, len)); /* key: e-mail */
}

static bool produce_send(e2e *t, rd_kafka_t *p, long i) {
    int d = (int)(i % DIALOGS);
    long k = i / DIALOGS;
    char command_id[128], text[SL_DIALOGS_MAX_TEXT + 1];
    snprintf(command_id, sizeof(command_id), "%s-send-%ld", t->app_id, i);
    text_of(d, k, text, sizeof(text));
    Sluice__V1__CommandMeta meta = SLUICE__V1__COMMAND_META__INIT;
    meta.command_id = command_id;
    Sluice__V1__SendMessage send = SLUICE__V1__SEND_MESSAGE__INIT;
    send.meta = &meta;
    send.dialog_id = t->dialogs[d].id;
    send.sender_id = (char *)sender_of(t, d, k)->id;
    send.recipient_id = (char *)recipient_of(t, d, k)->id;
    send.text = text;
    Sluice__V1__DialogsCommand command = SLUICE__V1__DIALOGS_COMMAND__INIT;
    command.command_case = SLUICE__V1__DIALOGS_COMMAND__COMMAND_SEND_MESSAGE;
    command.send_message = &send;
    uint8_t buf[SL_DIALOGS_MAX_TEXT + 1024];
    if (sluice__v1__dialogs_command__get_packed_size(&command) > sizeof(buf))
        return false;
    size_t len = sluice__v1__dialogs_command__pack(&command, buf);
    return produce(p, t->dialogs_commands, t->dialogs[d].id, buf, len); /* key: dialog id */
}

/* The load, produced at a steady pace over PRODUCE_MS (so the processors
 * are busy during the sink's kills, not done before the first one) in
 * per-dialog order by one idempotent producer (murmur2_random). */
static void *load_thread(void *arg) {
    load *l = arg;
    e2e *t = l->t;
    rd_kafka_t *p = test_producer(test_kafka_bootstrap(), NULL);
    int64_t started = test_now_ms();
    for (long i = 0; i < t->messages; i++) {
        if (i % 500 == 0) {
            int64_t due = started + PRODUCE_MS * i / t->messages;
            while (test_now_ms() < due)
                rd_kafka_poll(p, (int)(due - test_now_ms()));
        }
        if (!produce_send(t, p, i))
            atomic_fetch_add(&l->failures, 1);
    }
    if (rd_kafka_flush(p, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        atomic_fetch_add(&l->failures, 1);
    rd_kafka_destroy(p);
    l->produced_ms = test_now_ms() - started;
    atomic_store(&l->producing, false);
    return NULL;
}

/* ---- reading the topics ------------------------------------------------------ */

typedef struct users_scan {
    long registered, rejected;
} users_scan;

static void visit_user_event(const rd_kafka_message_t *m, void *opaque) {
    users_scan *s = opaque;
    Sluice__V1__UsersEvent *ev = sluice__v1__users_event__unpack(NULL, m->len, m->payload);
    if (!ev)
        return;
    s->registered += ev->event_case == SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED;
    s->rejected += ev->event_case == SLUICE__V1__USERS_EVENT__EVENT_REGISTRATION_REJECTED;
    sluice__v1__users_event__free_unpacked(ev, NULL);
}

typedef struct events_scan {
    e2e *t;
    long sent, rejected, undecodable, duplicates, out_of_range, wrong;
    int64_t last_timestamp_ms; /* the latest MessageSent's record time */
} events_scan;

/* Every MessageSent is checked against the input here (the processor's
 * part); the table is compared with what this records (the sink's part). */
static void visit_dialog_event(const rd_kafka_message_t *m, void *opaque) {
    events_scan *s = opaque;
    e2e *t = s->t;
    Sluice__V1__DialogsEvent *ev = sluice__v1__dialogs_event__unpack(NULL, m->len, m->payload);
    if (!ev) {
        s->undecodable++;
        return;
    }
    if (ev->event_case == SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_REJECTED) {
        if (s->rejected++ < 3)
            fprintf(stderr, "# rejected: %s %s\n", ev->message_rejected->dialog_id,
                    ev->message_rejected->detail);
    } else if (ev->event_case == SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT) {
        const Sluice__V1__MessageSent *ms = ev->message_sent;
        s->sent++;
        int64_t timestamp = rd_kafka_message_timestamp(m, NULL);
        if (timestamp > s->last_timestamp_ms)
            s->last_timestamp_ms = timestamp;
        int d = dialog_by_id(t, ms->dialog_id);
        if (d < 0 || ms->sequence < 1 || ms->sequence > t->per_dialog ||
            (d * 1L + (ms->sequence - 1) * DIALOGS) >= t->messages) {
            s->out_of_range++;
        } else {
            topic_row *row = &t->rows[(long)d * t->per_dialog + ms->sequence - 1];
            long k = ms->sequence - 1;
            char text[SL_DIALOGS_MAX_TEXT + 1];
            text_of(d, k, text, sizeof(text));
            bool same = strcmp(ms->sender_id, sender_of(t, d, k)->id) == 0 &&
                        strcmp(ms->recipient_id, recipient_of(t, d, k)->id) == 0 &&
                        strcmp(ms->text, text) == 0 && m->key_len == strlen(ms->dialog_id) &&
                        memcmp(m->key, ms->dialog_id, m->key_len) == 0;
            if (!same && s->wrong++ < 3)
                fprintf(stderr, "# event %s/%" PRId64 " differs from the command\n", ms->dialog_id,
                        ms->sequence);
            if (row->seen)
                s->duplicates++;
            row->seen = true;
            row->sent_at_ms = ms->sent_at_ms;
        }
    }
    sluice__v1__dialogs_event__free_unpacked(ev, NULL);
}

static long long messages_count(e2e *t) {
    return test_pg_query_int(t->pg, "SELECT count(*) FROM messages");
}

/* The messages table against the topic as recorded in t->rows: same count,
 * and each row is a (dialog, sequence) the topic has, with its sender,
 * recipient, text and time. Returns the number of differing rows. */
static long compare_table_with_topic(e2e *t) {
    PGresult *res = PQexec(t->pg, "SELECT dialog_id, sequence, sender_id, recipient_id, text, "
                                  "(extract(epoch FROM sent_at) * 1000)::bigint FROM messages");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    long differing = 0;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *dialog_id = PQgetvalue(res, r, 0);
        long long sequence = strtoll(PQgetvalue(res, r, 1), NULL, 10);
        int d = dialog_by_id(t, dialog_id);
        long k = (long)sequence - 1;
        topic_row *row =
            d >= 0 && k >= 0 && k < t->per_dialog ? &t->rows[(long)d * t->per_dialog + k] : NULL;
        bool same = row && row->seen && !row->in_table;
        if (same) {
            char text[SL_DIALOGS_MAX_TEXT + 1];
            text_of(d, k, text, sizeof(text));
            row->in_table = true;
            same = strcmp(PQgetvalue(res, r, 2), sender_of(t, d, k)->id) == 0 &&
                   strcmp(PQgetvalue(res, r, 3), recipient_of(t, d, k)->id) == 0 &&
                   strcmp(PQgetvalue(res, r, 4), text) == 0 &&
                   strtoll(PQgetvalue(res, r, 5), NULL, 10) == row->sent_at_ms;
        }
        if (!same && differing++ < 3)
            fprintf(stderr, "# table row %s/%lld is not the topic's\n", dialog_id, sequence);
    }
    PQclear(res);
    return differing;
}

/* ---- the test ------------------------------------------------------------- */

static void messages_through_processor_and_sink_equal_the_topic_despite_sink_kill9(void **state) {
    (void)state;
    test_skip_unless(test_kafka_bootstrap() && test_pg_dsn(), TEST_NO_BROKER_OR_PG);
    e2e *t = current = calloc(1, sizeof(*t));
    assert_non_null(t);
    test_unique_name(t->app_id, sizeof(t->app_id), "e2esink");
    snprintf(t->prefix, sizeof(t->prefix), "%s.", t->app_id);
    snprintf(t->users_commands, sizeof(t->users_commands), "%susers.commands", t->prefix);
    snprintf(t->users_events, sizeof(t->users_events), "%susers.events", t->prefix);
    snprintf(t->dialogs_commands, sizeof(t->dialogs_commands), "%sdialogs.commands", t->prefix);
    snprintf(t->dialogs_events, sizeof(t->dialogs_events), "%sdialogs.events", t->prefix);
    t->messages = messages_from_env();
    t->per_dialog = (t->messages + DIALOGS - 1) / DIALOGS;
    t->rows = calloc((size_t)(DIALOGS * t->per_dialog), sizeof(*t->rows));
    assert_non_null(t->rows);
    make_input(t);
    create_database(t);
    int64_t started = test_now_ms();

    /* Two processors; they create the topics, so they start first. */
    for (int i = 0; i < 2; i++) {
        run_init(t, i);
        test_instance_start_ready(&t->run[i], 120000, "sluice run");
    }
    for (int i = 0; i < 2; i++)
        assert_true(test_instance_wait_ready(&t->run[i], 120000));
    sink_init(t);
    test_instance_start_ready(&t->sink, 120000, "sluice sink");

    /* Users, then wait until every instance's copy of the registrations
     * (the global store dialogs-users, the only global records in this
     * fresh application besides an empty blacklist) holds all of them: the
     * owner of a dialog checks its recipient there. */
    rd_kafka_t *producer = test_producer(test_kafka_bootstrap(), NULL);
    for (int u = 0; u < USERS; u++)
        produce_registration(t, producer, u);
    assert_int_equal(rd_kafka_flush(producer, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    bool visible = false;
    for (int64_t deadline = test_now_ms() + WAIT_MS; !visible && test_now_ms() < deadline;) {
        visible =
            test_http_metric(t->run[0].admin_port, "sluice_global_store_records_total") >= USERS &&
            test_http_metric(t->run[1].admin_port, "sluice_global_store_records_total") >= USERS;
        if (!visible)
            usleep(100 * 1000);
    }
    if (!visible)
        test_instance_dump_log(&t->run[0], 30);
    assert_true(visible);
    users_scan registered = {0};
    test_scan_topic(test_kafka_bootstrap(), t->users_events, "read_committed", visit_user_event,
                    &registered, 60000);
    assert_int_equal(registered.registered, USERS);
    assert_int_equal(registered.rejected, 0);
    rd_kafka_destroy(producer);
    int64_t registered_ms = test_now_ms() - started;

    /* The load, from another thread, while this one kills the sink. */
    int64_t load_started = test_now_ms();
    int64_t load_started_epoch_ms = epoch_ms();
    load *l = &t->load;
    l->t = t;
    atomic_store(&l->producing, true);
    assert_int_equal(pthread_create(&l->thread, NULL, load_thread, l), 0);
    l->started = true;

    /* Kill -9 the sink at random points of the load: when the table passes
     * random thresholds, plus a random delay so a kill can land inside a
     * batch or a COPY. A restarted sink waits for the group to drop its
     * killed predecessor (session timeout) and then catches up, so each
     * kill also waits until the restarted process has committed a batch of
     * its own: every kill hits a sink that is working. */
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    long long killed_at[KILLS];
    for (int k = 0; k < KILLS; k++) {
        long long threshold = t->messages * (k + 1) / (KILLS + 3) + rand() % (t->messages / 20 + 1);
        int64_t deadline = test_now_ms() + WAIT_MS;
        while ((messages_count(t) < threshold ||
                test_http_metric(t->sink.http_port, "sluice_pgsink_transactions_total") < 1) &&
               test_now_ms() < deadline)
            usleep(20 * 1000);
        usleep((useconds_t)(rand() % 300) * 1000);
        killed_at[k] = messages_count(t);
        test_instance_kill9(&t->sink);
        int64_t killed_ms = test_now_ms();
        test_instance_start_ready(&t->sink, 120000, "sluice sink (restarted)");
        printf("# kill -9 %d of the sink at %lld rows, %.1f s into the load (%s); ready again "
               "in %lld ms\n",
               k + 1, killed_at[k], (double)(killed_ms - load_started) / 1000.0,
               atomic_load(&l->producing) ? "commands still being produced" : "all produced",
               (long long)(test_now_ms() - killed_ms));
    }
    pthread_join(l->thread, NULL);
    l->started = false;
    assert_int_equal(atomic_load(&l->failures), 0);
    /* Until the table has them all, or has not grown for STALL_MS (a sink
     * that lost rows would otherwise keep the test waiting for WAIT_MS). */
    bool complete = false;
    long long rows = -1;
    for (int64_t deadline = test_now_ms() + WAIT_MS, progress = test_now_ms();
         !complete && test_now_ms() < deadline && test_now_ms() - progress < STALL_MS;) {
        long long now_rows = messages_count(t);
        complete = now_rows >= t->messages;
        if (now_rows != rows) {
            rows = now_rows;
            progress = test_now_ms();
        }
        if (!complete)
            usleep(50 * 1000);
    }
    int64_t load_ms = test_now_ms() - load_started;
    if (!complete) {
        printf("# rows: %lld of %ld\n", messages_count(t), t->messages);
        test_instance_dump_log(&t->sink, 30);
        test_instance_dump_log(&t->run[0], 20);
        test_instance_dump_log(&t->run[1], 20);
    }
    assert_true(complete);
    /* The last kill must land before the load ends, or it tested less. */
    assert_true(killed_at[KILLS - 1] < t->messages);

    /* The processor: dialogs.events holds one MessageSent per command, in
     * per-dialog order, and nothing else. */
    events_scan events = {.t = t};
    long read = test_scan_topic(test_kafka_bootstrap(), t->dialogs_events, "read_committed",
                                visit_dialog_event, &events, 120000);
    printf("# dialogs.events: %ld records, %ld MessageSent, %ld rejected\n", read, events.sent,
           events.rejected);
    assert_int_equal(events.undecodable, 0);
    assert_int_equal(events.rejected, 0);
    assert_int_equal(events.out_of_range, 0);
    assert_int_equal(events.duplicates, 0);
    assert_int_equal(events.wrong, 0);
    assert_int_equal(events.sent, t->messages);
    /* Every MessageSent was produced once, by one of the two instances.
     * Which instance gets the dialogs partitions is up to the consumer's
     * cooperative-sticky assignor, which balances the count of all the
     * application's partitions, not per topic: one instance may get all
     * of dialogs.commands (seen), so this asserts only the sum. */
    char produced_series[256];
    snprintf(produced_series, sizeof(produced_series),
             "sluice_records_produced_total{topic=\"%s\"}", t->dialogs_events);
    long long by_instance[2];
    for (int i = 0; i < 2; i++)
        by_instance[i] = test_http_metric(t->run[i].admin_port, produced_series);
    printf("# MessageSent produced by instance a: %lld, b: %lld\n", by_instance[0], by_instance[1]);
    assert_int_equal(by_instance[0] + by_instance[1], t->messages);

    /* The sink: the table equals the topic. */
    assert_int_equal(messages_count(t), events.sent);
    assert_int_equal(compare_table_with_topic(t), 0);
    assert_int_equal(test_pg_query_int(t->pg,
                                       "SELECT count(*) FROM (SELECT dialog_id FROM messages "
                                       "GROUP BY dialog_id HAVING min(sequence) <> 1 OR "
                                       "max(sequence) <> count(*)) AS gaps"),
                     0);
    assert_int_equal(test_pg_query_int(t->pg, "SELECT count(DISTINCT dialog_id) FROM messages"),
                     t->messages < DIALOGS ? t->messages : DIALOGS);

    /* The users: every registered one, as registered, no password hash. */
    assert_int_equal(test_pg_query_int(t->pg, "SELECT count(*) FROM users"), USERS);
    assert_int_equal(test_pg_query_int(t->pg,
                                       "SELECT count(*) FROM information_schema.columns WHERE "
                                       "table_name = 'users' AND (column_name ILIKE '%pass%' OR "
                                       "column_name ILIKE '%hash%')"),
                     0);
    assert_int_equal(test_pg_query_int(t->pg, "SELECT count(*) FROM users u WHERE u::text LIKE "
                                              "'%" HASH_MARK "%' OR u::text LIKE '%c2FsdHNhbHRz%'"),
                     0);
    long users_differing = 0;
    for (int u = 0; u < USERS; u++) {
        const char *params[1] = {t->users[u].id};
        PGresult *res = PQexecParams(t->pg,
                                     "SELECT email, first_name, second_name, birthdate, city "
                                     "FROM users WHERE id = $1",
                                     1, NULL, params, NULL, NULL, 0);
        bool same = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
                    strcmp(PQgetvalue(res, 0, 0), t->users[u].email) == 0 &&
                    strcmp(PQgetvalue(res, 0, 1), t->users[u].first_name) == 0 &&
                    strcmp(PQgetvalue(res, 0, 2), "Lovelace") == 0 &&
                    strcmp(PQgetvalue(res, 0, 3), "1990-02-28") == 0 &&
                    strcmp(PQgetvalue(res, 0, 4), "Москва") == 0;
        users_differing += !same;
        PQclear(res);
    }
    assert_int_equal(users_differing, 0);
    assert_int_equal(t->sink.restarts, KILLS);

    int64_t total_ms = test_now_ms() - started;
    int64_t processed_ms = events.last_timestamp_ms - load_started_epoch_ms;
    printf("# %ld messages (%d dialogs, %d users, %d partitions): produced at a steady pace over "
           "%lld ms; the "
           "processors' last MessageSent %lld ms after the first command (%.0f messages/s); "
           "all in Postgres after %lld ms (%.0f messages/s) with %d kill -9 of the sink; "
           "registration %lld ms; whole test %lld ms\n",
           t->messages, DIALOGS, USERS, PARTITIONS, (long long)l->produced_ms,
           (long long)processed_ms,
           processed_ms > 0 ? t->messages * 1000.0 / (double)processed_ms : 0.0, (long long)load_ms,
           load_ms > 0 ? t->messages * 1000.0 / (double)load_ms : 0.0, KILLS,
           (long long)registered_ms, (long long)total_ms);

    assert_int_equal(test_instance_stop(&t->sink, 30000), 0);
    for (int i = 0; i < 2; i++) {
        int status = test_instance_stop(&t->run[i], 60000);
        if (status != 0)
            test_instance_dump_log(&t->run[i], 40);
        assert_int_equal(status, 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(messages_through_processor_and_sink_equal_the_topic_despite_sink_kill9),
    };
    return cmocka_run_group_tests_name("dialogs_pgsink", tests, setup, teardown);
}
