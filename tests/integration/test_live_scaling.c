/*
 * Integration test: the cluster scales while clients keep using it.
 *
 * Default group timeouts (static membership, a 6 s session timeout, the
 * groups left on SIGTERM): this file never sets the quick fail-over of the
 * other cluster tests.
 *
 * CLIENTS threads run for the whole test. Each registers users over HTTP
 * and sends dialog messages between its own users (so the messages of one
 * dialog are sent one after the other and "send order" is defined), each
 * request to a random running instance. A request answered 503 must carry
 * Retry-After; it is retried, like a refused or broken connection, after a
 * short pause on another instance with the same Idempotency-Key, until it
 * gets a final answer.
 *
 * Two tests, each on a cluster of its own (a fresh application id, fresh
 * topics and state directories):
 *   - scaling: the main thread scales 1 -> 2 -> 3 instances, kills one with
 *     SIGKILL and starts it again on its state directory, then stops
 *     3 -> 2 -> 1 gracefully (each must exit 0);
 *   - fail-over: a, b and c run; for KILL_PHASE_MS the main thread kills
 *     one with SIGKILL every KILL_EVERY_MS (a, b, c in turn) and starts it
 *     again on its state directory 3-5 s later, without waiting for it to
 *     be ready before the next step is due; the clients keep choosing it
 *     meanwhile, as behind a load balancer that has not noticed. It prints
 *     (never asserts: 2 shared cores under ASan) the longest gap between two
 *     acknowledgements and the longest request during that phase against
 *     the goal of FAILOVER_GOAL_MS, the 503s and the failed connections, and
 *     how long each restarted instance took to become ready.
 *
 * Then, with the clients stopped, for both:
 *   - every answer was a 2xx, a 503 with Retry-After, or the one 4xx an
 *     eventually consistent copy explains (a recipient whose registration
 *     has not reached the dialogs' users copy yet: 400 "not a registered
 *     user", retried with the same key); anything else fails;
 *   - each acknowledged send got the next sequence of its dialog;
 *   - GET /dialog/<partner>/list returns exactly the acknowledged texts of
 *     every dialog, each once, in send order;
 *   - dialogs.events (read_committed) holds exactly one MessageSent per
 *     acknowledged send, with the acknowledged text, and per dialog the
 *     sequences 1..n without a gap or a duplicate;
 *   - the Postgres sink (`sluice sink`, running from the first instance to
 *     the end, into a database of its own) equals the topics: its messages
 *     table holds exactly the acknowledged sends (sender and text), 1..n per
 *     dialog, and its users table one row per UserRegistered of
 *     users.events.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "connectors/http/auth/jwt.h"
#include "sluice/v1/dialogs.pb-c.h"
#include "sluice/v1/identity.pb-c.h"
#include "tests/support/broker.h"
#include "tests/support/http_client.h"
#include "tests/support/instance.h"
#include "tests/support/postgres.h"
#include "tests/support/testutil.h"
#include "topology/dialogs/dialogs.h"

#define CLIENTS          3
#define PARTITIONS       6
#define READY_MS         120000
#define STOP_MS          60000
#define STEP_PAUSE_MS    8000
#define REQUEST_GIVE_UP  90000 /* a request without a final answer by then fails */
#define MAX_USERS        48    /* per client: the chat pool (more register all the same) */
#define HOT_PARTNERS     4     /* recipients come from a client's first users */
#define CHATTY_USERS     6     /* most senders too: dialogs get several messages */
#define RECIPIENT_AGE_MS 2000  /* a fresh user is a recipient only after this */
#define MAX_DIALOGS      (MAX_USERS * HOT_PARTNERS)
#define MAX_PER_DIALOG   160
#define MAX_SENDS        4000 /* per client */
#define MAX_FAILURES     16
#define LIST_LIMIT       50
#define KILL_PHASE_MS    90000
#define KILL_EVERY_MS    15000
#define RESTART_AFTER_MS 3000 /* plus 0-2 s: a killed instance starts again 3-5 s later */
#define WARM_UP_MS       5000
#define SETTLE_MS        3000 /* every instance ready again: the clients go on this long */
#define FAILOVER_GOAL_MS 10000
#define MAX_RESTARTS     (KILL_PHASE_MS / KILL_EVERY_MS)

static test_cluster cluster; /* a, b, c; a test starts them, its teardown stops them */
static char dialogs_events[160], users_events[160];
/* The Postgres sink of the run (start_the_sink), and its database. */
static test_instance sink;
static bool sink_started;
static PGconn *sink_pg;

/* ---- what the clients share with the main thread --------------------------- */

/* The clients' rotation: running and ready (scaling); every instance, dead
 * or starting too (fail-over). */
static atomic_bool live[TEST_CLUSTER_MAX];
static atomic_bool stop_clients;

static atomic_long answers_503, answers_503_without_retry_after, transport_errors,
    refused_connections, unknown_recipient_retries, answers_by_status[600];
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t test_started_ms, longest_request_ms, longest_request_started_ms;
static char longest_request_what[128];

/* The fail-over test's kill phase, [from, until] (0: not begun, not ended),
 * and what happened in it; under stats_lock. A request counts in the phase
 * if its first try or its final answer lies in it. */
typedef struct kill_phase {
    int64_t from_ms, until_ms;
    int64_t last_ack_ms; /* the last 2xx final answer (from_ms at first) */
    int64_t longest_ack_gap_ms, longest_ack_gap_end_ms; /* end: since the test started */
    int64_t longest_request_ms, longest_request_started_ms;
    char longest_request_what[128];
} kill_phase;
static kill_phase phase;
static char failures[MAX_FAILURES][512];
static int n_failures;

static void __attribute__((format(printf, 1, 2))) record_failure(const char *fmt, ...) {
    pthread_mutex_lock(&stats_lock);
    if (n_failures < MAX_FAILURES) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(failures[n_failures], sizeof(failures[0]), fmt, ap);
        va_end(ap);
    }
    n_failures++;
    pthread_mutex_unlock(&stats_lock);
}

typedef struct user {
    char id[64];
    char auth[SL_JWT_MAX_TOKEN + 64]; /* "Authorization: Bearer ...\r\n" */
    int64_t registered_ms;
} user;

typedef struct dialog {
    char id[SL_DIALOGS_ID_LEN + 1];
    int user_a, user_b;        /* indexes in the client's users */
    int sends[MAX_PER_DIALOG]; /* acknowledged, in send order: indexes in sends */
    int n_sends;
    bool event_seen[MAX_PER_DIALOG + 1]; /* by sequence */
} dialog;

typedef struct sent_message {
    int dialog;
    int sender; /* user index */
    char text[48];
    int64_t sequence; /* as answered */
} sent_message;

typedef struct client {
    int index;
    unsigned seed;
    pthread_t thread;
    user users[MAX_USERS];
    int n_users;
    long registrations;
    dialog dialogs[MAX_DIALOGS];
    int n_dialogs;
    sent_message sends[MAX_SENDS];
    int n_sends;
    int serial;
    int last_instance;
} client;

static client clients[CLIENTS];

/* ---- one request, retried until it has a final answer ------------------------ */

/* A running instance other than `avoid` when there is one; -1 if none. */
static int pick_instance(client *c, int avoid) {
    int candidates[TEST_CLUSTER_MAX], n = 0, fallback = -1;
    for (int i = 0; i < cluster.n; i++)
        if (atomic_load(&live[i])) {
            fallback = i;
            if (i != avoid)
                candidates[n++] = i;
        }
    return n ? candidates[rand_r(&c->seed) % n] : fallback;
}

static bool in_kill_phase(int64_t at) {
    return phase.from_ms && at >= phase.from_ms && (!phase.until_ms || at <= phase.until_ms);
}

static void note_duration(int64_t first, int64_t took, const char *what) {
    pthread_mutex_lock(&stats_lock);
    if (took > longest_request_ms) {
        longest_request_ms = took;
        longest_request_started_ms = first - test_started_ms;
        snprintf(longest_request_what, sizeof(longest_request_what), "%s", what);
    }
    if ((in_kill_phase(first) || in_kill_phase(first + took)) && took > phase.longest_request_ms) {
        phase.longest_request_ms = took;
        phase.longest_request_started_ms = first - test_started_ms;
        snprintf(phase.longest_request_what, sizeof(phase.longest_request_what), "%s", what);
    }
    pthread_mutex_unlock(&stats_lock);
}

/* A 2xx final answer, at `at`: during the kill phase, the time since the
 * one before (any client, any instance) is a gap in service. */
static void note_acknowledgement(int64_t at) {
    pthread_mutex_lock(&stats_lock);
    if (in_kill_phase(at)) {
        if (at - phase.last_ack_ms > phase.longest_ack_gap_ms) {
            phase.longest_ack_gap_ms = at - phase.last_ack_ms;
            phase.longest_ack_gap_end_ms = at - test_started_ms;
        }
        phase.last_ack_ms = at;
    }
    pthread_mutex_unlock(&stats_lock);
}

/* Send the request until a final answer: a 503 (which must carry
 * Retry-After), a failed connection or, when `unknown_recipient_retry`, a
 * 400 "not a registered user" is retried after a pause on another
 * instance; the headers carry the request's Idempotency-Key, so a retry is
 * the same request. Returns the 2xx answer (the caller frees it) or NULL
 * after recording why. */
static test_answer *request(client *c, const char *what, const char *method, const char *path,
                            const char *headers, const char *body, bool unknown_recipient_retry) {
    int64_t first = test_now_ms();
    int avoid = -1;
    for (;;) {
        int i = pick_instance(c, avoid);
        if (i < 0) {
            usleep(100 * 1000);
            continue;
        }
        avoid = i;
        /* A refused connect leaves ECONNREFUSED in errno (nothing after it
         * in test_http_call sets errno when there is no answer). */
        errno = 0;
        test_answer *a = test_http_call(cluster.instances[i].http_port, method, path, headers, body,
                                        body ? strlen(body) : 0);
        bool retry = false;
        if (a->status < 0) {
            atomic_fetch_add(&transport_errors, 1);
            if (errno == ECONNREFUSED)
                atomic_fetch_add(&refused_connections, 1);
            retry = true;
        } else {
            atomic_fetch_add(&answers_by_status[a->status < 600 ? a->status : 599], 1);
            if (a->status == 503) {
                atomic_fetch_add(&answers_503, 1);
                if (!strcasestr(a->headers, "Retry-After:")) {
                    atomic_fetch_add(&answers_503_without_retry_after, 1);
                    record_failure("%s: 503 without Retry-After from instance %d: %s", what, i,
                                   a->body);
                }
                retry = true;
            } else if (a->status == 400 && unknown_recipient_retry &&
                       strstr(a->body, "not a registered user")) {
                atomic_fetch_add(&unknown_recipient_retries, 1);
                retry = true;
            }
        }
        int64_t took = test_now_ms() - first;
        if (!retry) {
            note_duration(first, took, what);
            if (a->status >= 200 && a->status < 300) {
                note_acknowledgement(first + took);
                return a;
            }
            record_failure("%s: %d from instance %d after %lld ms: %.300s", what, a->status, i,
                           (long long)took, a->body);
            test_answer_free(a);
            return NULL;
        }
        test_answer_free(a);
        if (took > REQUEST_GIVE_UP) {
            note_duration(first, took, what);
            record_failure("%s: no final answer in %lld ms", what, (long long)took);
            return NULL;
        }
        usleep((useconds_t)(150 + rand_r(&c->seed) % 200) * 1000);
    }
}

static void register_one(client *c) {
    char body[512], headers[128], what[64];
    int n = ++c->serial;
    snprintf(body, sizeof(body),
             "{\"first_name\":\"L\",\"second_name\":\"S\",\"city\":\"X\",\"password\":"
             "\"correct horse battery\",\"email\":\"live-%d-%d-%d@example.org\"}",
             (int)getpid(), c->index, n);
    snprintf(headers, sizeof(headers), "Idempotency-Key: reg-%d-%d-%d\r\n", (int)getpid(), c->index,
             n);
    snprintf(what, sizeof(what), "register c%d-%d", c->index, n);
    test_answer *a = request(c, what, "POST", "/user/register", headers, body, false);
    if (!a)
        return;
    const char *id = test_answer_field(a, "user_id"), *token = test_answer_field(a, "token");
    if (!id || !token) {
        record_failure("%s: 2xx without user_id/token: %.300s", what, a->body);
    } else {
        c->registrations++;
        if (c->n_users < MAX_USERS) {
            user *u = &c->users[c->n_users++];
            snprintf(u->id, sizeof(u->id), "%s", id);
            snprintf(u->auth, sizeof(u->auth), "Authorization: Bearer %s\r\n", token);
            u->registered_ms = test_now_ms();
        }
    }
    test_answer_free(a);
}

static int dialog_of(client *c, int sender, int recipient) {
    char id[SL_DIALOGS_ID_LEN + 1];
    if (!sl_dialogs_id(c->users[sender].id, c->users[recipient].id, id))
        return -1;
    for (int d = 0; d < c->n_dialogs; d++)
        if (strcmp(c->dialogs[d].id, id) == 0)
            return d;
    if (c->n_dialogs == MAX_DIALOGS)
        return -1;
    dialog *d = &c->dialogs[c->n_dialogs];
    snprintf(d->id, sizeof(d->id), "%s", id);
    d->user_a = sender;
    d->user_b = recipient;
    return c->n_dialogs++;
}

/* One message between two of the client's users; false if there is no
 * pair to send between yet. */
static bool send_one(client *c) {
    int partners = 0;
    int64_t now = test_now_ms();
    while (partners < HOT_PARTNERS && partners < c->n_users &&
           now - c->users[partners].registered_ms >= RECIPIENT_AGE_MS)
        partners++;
    if (partners == 0 || c->n_users < 2 || c->n_sends == MAX_SENDS)
        return false;
    int recipient = rand_r(&c->seed) % partners;
    int chatty = c->n_users < CHATTY_USERS ? c->n_users : CHATTY_USERS;
    int sender = rand_r(&c->seed) % (rand_r(&c->seed) % 5 ? chatty : c->n_users);
    if (sender == recipient)
        sender = (sender + 1) % c->n_users;
    int d = dialog_of(c, sender, recipient);
    if (d < 0 || c->dialogs[d].n_sends == MAX_PER_DIALOG)
        return false;
    dialog *dlg = &c->dialogs[d];
    sent_message *m = &c->sends[c->n_sends];
    int n = ++c->serial;
    snprintf(m->text, sizeof(m->text), "live c%d-%d", c->index, n);
    char path[128], headers[SL_JWT_MAX_TOKEN + 256], what[64];
    snprintf(path, sizeof(path), "/dialog/%s/send", c->users[recipient].id);
    snprintf(headers, sizeof(headers),
             "%sContent-Type: application/json\r\nIdempotency-Key: send-%d-%d-%d\r\n",
             c->users[sender].auth, (int)getpid(), c->index, n);
    snprintf(what, sizeof(what), "send %s", m->text);
    json_t *body = json_pack("{s:s}", "text", m->text);
    char *raw = json_dumps(body, JSON_COMPACT);
    test_answer *a = request(c, what, "POST", path, headers, raw, true);
    free(raw);
    json_decref(body);
    if (!a)
        return true;
    json_t *seq = a->json ? json_object_get(a->json, "sequence") : NULL;
    const char *answered_dialog = test_answer_field(a, "dialog_id");
    if (!json_is_integer(seq) || !answered_dialog || strcmp(answered_dialog, dlg->id) != 0) {
        record_failure("%s: unexpected 2xx body: %.300s", what, a->body);
    } else {
        m->sequence = json_integer_value(seq);
        m->dialog = d;
        m->sender = sender;
        if (m->sequence != dlg->n_sends + 1)
            record_failure("%s: acknowledged with sequence %lld, the dialog's send number %d", what,
                           (long long)m->sequence, dlg->n_sends + 1);
        dlg->sends[dlg->n_sends++] = c->n_sends++;
    }
    test_answer_free(a);
    return true;
}

static void *client_main(void *opaque) {
    client *c = opaque;
    while (!atomic_load(&stop_clients)) {
        if (c->n_users < 2 || rand_r(&c->seed) % 5 == 0 || !send_one(c))
            register_one(c);
        usleep(30 * 1000);
    }
    return NULL;
}

/* A test starts from nothing: no client state, no counts, no failures. */
static void reset_the_run(void) {
    memset(clients, 0, sizeof(clients));
    for (int i = 0; i < TEST_CLUSTER_MAX; i++)
        atomic_store(&live[i], false);
    atomic_store(&stop_clients, false);
    atomic_store(&answers_503, 0);
    atomic_store(&answers_503_without_retry_after, 0);
    atomic_store(&transport_errors, 0);
    atomic_store(&refused_connections, 0);
    atomic_store(&unknown_recipient_retries, 0);
    for (int s = 0; s < 600; s++)
        atomic_store(&answers_by_status[s], 0);
    pthread_mutex_lock(&stats_lock);
    longest_request_ms = longest_request_started_ms = 0;
    longest_request_what[0] = '\0';
    memset(&phase, 0, sizeof(phase));
    n_failures = 0;
    pthread_mutex_unlock(&stats_lock);
}

/* ---- setup ------------------------------------------------------------------ */

/* Each test gets a cluster of its own: a fresh application id, topics and
 * state directories. */
static int setup(void **state) {
    (void)state;
    reset_the_run();
    if (!test_kafka_bootstrap())
        return 0;
    /* test_cluster_init without the quick fail-over: every group timeout is
     * the engine's default here. */
    memset(&cluster, 0, sizeof(cluster));
    if (test_work_dir_make(cluster.work_dir, sizeof(cluster.work_dir), "sluice-live") != 0)
        return -1;
    test_unique_name(cluster.app_id, sizeof(cluster.app_id), "live");
    snprintf(cluster.prefix, sizeof(cluster.prefix), "%s.", cluster.app_id);
    snprintf(dialogs_events, sizeof(dialogs_events), "%sdialogs.events", cluster.prefix);
    snprintf(users_events, sizeof(users_events), "%susers.events", cluster.prefix);
    cluster.n = TEST_CLUSTER_MAX;
    static const char *const names[TEST_CLUSTER_MAX] = {"a", "b", "c"};
    for (int i = 0; i < cluster.n; i++) {
        test_instance *inst = &cluster.instances[i];
        test_instance_init_sluice(inst, cluster.work_dir, names[i], NULL);
        test_instance_set(inst, "application.id=%s", cluster.app_id);
        test_instance_set(inst, "identity.topic.prefix=%s", cluster.prefix);
        test_instance_set(inst, "dialogs.topic.prefix=%s", cluster.prefix);
        test_instance_set(inst, "identity.topic.partitions=%d", PARTITIONS);
        test_instance_set(inst, "dialogs.topic.partitions=%d", PARTITIONS);
        test_instance_set(inst, "reply.partitions=3");
        test_instance_set(inst, "dialogs.list.limit.max=%d", LIST_LIMIT);
        test_instance_set(inst, "identity.throttle.ip.burst=10000");
    }
    if (test_cluster_sign(&cluster) != 0)
        return -1;
    cluster.started = true; /* the teardown stops whatever still runs */
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (sink_started)
        test_instance_free(&sink);
    sink_started = false;
    if (sink_pg)
        PQfinish(sink_pg);
    sink_pg = NULL;
    return test_cluster_stop(&cluster);
}

#define NEED_BROKER() test_skip_unless(cluster.started, TEST_NO_BROKER)

/* ---- the scaling steps (main thread) ---------------------------------------- */

static void stop_the_clients(void) {
    atomic_store(&stop_clients, true);
    for (int i = 0; i < CLIENTS; i++)
        if (clients[i].thread)
            pthread_join(clients[i].thread, NULL);
    for (int i = 0; i < CLIENTS; i++)
        clients[i].thread = 0;
}

/* A step failed: stop the clients first (they use the cluster), then the
 * test. */
#define STEP_FAIL(...)                                                                             \
    do {                                                                                           \
        stop_the_clients();                                                                        \
        fail_msg(__VA_ARGS__);                                                                     \
    } while (0)

static void start_step(int i, const char *step) {
    int64_t started = test_now_ms();
    test_instance_start(&cluster.instances[i]);
    if (!test_instance_wait_ready(&cluster.instances[i], READY_MS)) {
        test_instance_dump_log(&cluster.instances[i], 40);
        STEP_FAIL("%s: instance %d not ready", step, i);
    }
    atomic_store(&live[i], true);
    fprintf(stderr, "# at %6.1f s: %-28s ready after %lld ms\n",
            (double)(started - test_started_ms) / 1000.0, step,
            (long long)(test_now_ms() - started));
}

static void kill_step(int i, const char *step) {
    int64_t started = test_now_ms();
    test_instance_kill9(&cluster.instances[i]);
    atomic_store(&live[i], false);
    fprintf(stderr, "# at %6.1f s: %-28s done\n", (double)(started - test_started_ms) / 1000.0,
            step);
}

static void stop_step(int i, const char *step) {
    int64_t started = test_now_ms();
    /* The clients keep sending to it while it stops: they must get an
     * answer or a refused connection, and retry elsewhere. */
    int status = test_instance_stop(&cluster.instances[i], STOP_MS);
    atomic_store(&live[i], false);
    if (status != 0) {
        test_instance_dump_log(&cluster.instances[i], 40);
        STEP_FAIL("%s: instance %d exited %d, not 0", step, i, status);
    }
    fprintf(stderr, "# at %6.1f s: %-28s exited 0 after %lld ms\n",
            (double)(started - test_started_ms) / 1000.0, step,
            (long long)(test_now_ms() - started));
}

static void pause_ms(int ms) {
    usleep((useconds_t)ms * 1000);
}

/* ---- verification ----------------------------------------------------------- */

/* The dialog's list as its first user sees it, page by page; a 503 is
 * retried. Returns the number of mismatches recorded. */
static int check_list(client *c, dialog *d) {
    const user *who = &c->users[d->user_a];
    const char *partner = c->users[d->user_b].id;
    int listed = 0, mismatches = 0;
    for (int offset = 0;; offset += LIST_LIMIT) {
        char path[256];
        snprintf(path, sizeof(path), "/dialog/%s/list?offset=%d&limit=%d", partner, offset,
                 LIST_LIMIT);
        test_answer *a = NULL;
        int64_t deadline = test_now_ms() + 60000;
        do {
            test_answer_free(a);
            a = test_http_call(cluster.instances[0].http_port, "GET", path, who->auth, NULL, 0);
        } while ((a->status == 503 || a->status < 0) && test_now_ms() < deadline &&
                 usleep(200 * 1000) == 0);
        if (a->status != 200 || !json_is_array(a->json)) {
            fprintf(stderr, "# dialog %s: list answered %d: %.200s\n", d->id, a->status, a->body);
            test_answer_free(a);
            return 1;
        }
        size_t n = json_array_size(a->json);
        for (size_t k = 0; k < n; k++, listed++) {
            const char *text =
                json_string_value(json_object_get(json_array_get(a->json, k), "text"));
            const char *want = listed < d->n_sends ? c->sends[d->sends[listed]].text : "(nothing)";
            if (!text || strcmp(text, want) != 0) {
                if (mismatches++ < 3)
                    fprintf(stderr, "# dialog %s: message %d is \"%s\", expected \"%s\"\n", d->id,
                            listed + 1, text ? text : "(no text)", want);
            }
        }
        test_answer_free(a);
        if (n < LIST_LIMIT)
            break;
    }
    if (listed != d->n_sends) {
        fprintf(stderr, "# dialog %s: %d listed, %d acknowledged\n", d->id, listed, d->n_sends);
        mismatches++;
    }
    return mismatches;
}

typedef struct events_scan {
    long message_sent, unknown_dialog, duplicates, beyond_acknowledged, wrong_text;
} events_scan;

static dialog *find_dialog(const char *id, client **owner) {
    for (int i = 0; i < CLIENTS; i++)
        for (int d = 0; d < clients[i].n_dialogs; d++)
            if (strcmp(clients[i].dialogs[d].id, id) == 0) {
                *owner = &clients[i];
                return &clients[i].dialogs[d];
            }
    return NULL;
}

static void visit_event(const rd_kafka_message_t *m, void *opaque) {
    events_scan *s = opaque;
    Sluice__V1__DialogsEvent *e = sluice__v1__dialogs_event__unpack(NULL, m->len, m->payload);
    if (!e)
        return;
    if (e->event_case == SLUICE__V1__DIALOGS_EVENT__EVENT_MESSAGE_SENT) {
        const Sluice__V1__MessageSent *sent = e->message_sent;
        s->message_sent++;
        client *c = NULL;
        dialog *d = find_dialog(sent->dialog_id, &c);
        if (!d) {
            if (s->unknown_dialog++ < 3)
                fprintf(stderr, "# event for a dialog no client sent to: %s seq %lld \"%s\"\n",
                        sent->dialog_id, (long long)sent->sequence, sent->text);
        } else if (sent->sequence < 1 || sent->sequence > d->n_sends) {
            if (s->beyond_acknowledged++ < 3)
                fprintf(stderr,
                        "# dialog %s: event seq %lld \"%s\" beyond the %d acknowledged "
                        "(partition %d offset %lld)\n",
                        d->id, (long long)sent->sequence, sent->text, d->n_sends, (int)m->partition,
                        (long long)m->offset);
        } else if (d->event_seen[sent->sequence]) {
            if (s->duplicates++ < 3)
                fprintf(stderr, "# dialog %s: seq %lld \"%s\" again (partition %d offset %lld)\n",
                        d->id, (long long)sent->sequence, sent->text, (int)m->partition,
                        (long long)m->offset);
        } else {
            d->event_seen[sent->sequence] = true;
            const char *want = c->sends[d->sends[sent->sequence - 1]].text;
            if (strcmp(sent->text, want) != 0 && s->wrong_text++ < 3)
                fprintf(stderr, "# dialog %s: seq %lld is \"%s\", acknowledged \"%s\"\n", d->id,
                        (long long)sent->sequence, sent->text, want);
        }
    }
    sluice__v1__dialogs_event__free_unpacked(e, NULL);
}

/* ---- the Postgres sink ---------------------------------------------------------- */

/* `sluice sink` on the run's events topics, into a database of its own;
 * after the first instance created the topics. */
static void start_the_sink(void) {
    if (!test_pg_dsn())
        return;
    char db[64], dsn[512];
    snprintf(db, sizeof(db), "live_%d_%lld", (int)getpid(), (long long)(test_now_ms() % 100000));
    sink_pg = test_pg_create_database(db, dsn, sizeof(dsn));
    const char *const command[] = {"sink", NULL};
    test_instance_init_sluice(&sink, cluster.work_dir, "sink", command);
    test_instance_set(&sink, "pg.dsn=%s", dsn);
    test_instance_set(&sink, "application.id=%s", cluster.app_id);
    test_instance_set(&sink, "pg.sink.users.topic=%s", users_events);
    test_instance_set(&sink, "pg.sink.messages.topic=%s", dialogs_events);
    test_instance_start_ready(&sink, READY_MS, "sluice sink");
    sink_started = true;
}

static void count_registered(const rd_kafka_message_t *m, void *opaque) {
    Sluice__V1__UsersEvent *e = sluice__v1__users_event__unpack(NULL, m->len, m->payload);
    if (e && e->event_case == SLUICE__V1__USERS_EVENT__EVENT_USER_REGISTERED)
        (*(long *)opaque)++;
    if (e)
        sluice__v1__users_event__free_unpacked(e, NULL);
}

/* The sink's tables against what was acknowledged (the topic was checked
 * against it already): every acknowledged send once, with its sender and
 * text, 1..n per dialog; one user row per UserRegistered. */
static void verify_the_sink(long sends) {
    if (!sink_started)
        return;
    long long rows = -1;
    for (int64_t deadline = test_now_ms() + 60000; test_now_ms() < deadline; usleep(200 * 1000)) {
        rows = test_pg_query_int(sink_pg, "SELECT count(*) FROM messages");
        if (rows >= sends)
            break;
    }
    PGresult *res = PQexec(sink_pg, "SELECT dialog_id, sequence, sender_id, text FROM messages");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    long differing = 0;
    for (int r = 0; r < PQntuples(res); r++) {
        client *c = NULL;
        dialog *d = find_dialog(PQgetvalue(res, r, 0), &c);
        long long seq = strtoll(PQgetvalue(res, r, 1), NULL, 10);
        bool same = d && seq >= 1 && seq <= d->n_sends;
        if (same) {
            const sent_message *s = &c->sends[d->sends[seq - 1]];
            same = strcmp(PQgetvalue(res, r, 3), s->text) == 0 &&
                   strcmp(PQgetvalue(res, r, 2), c->users[s->sender].id) == 0;
        }
        if (!same && differing++ < 3)
            fprintf(stderr, "# sink row %s/%lld is not an acknowledged send\n",
                    PQgetvalue(res, r, 0), seq);
    }
    PQclear(res);
    long long gaps = test_pg_query_int(sink_pg, "SELECT count(*) FROM (SELECT dialog_id FROM "
                                                "messages GROUP BY dialog_id HAVING min(sequence) "
                                                "<> 1 OR max(sequence) <> count(*)) AS gaps");
    long registered = 0;
    assert_true(test_scan_topic(test_kafka_bootstrap(), users_events, "read_committed",
                                count_registered, &registered, 30000) >= 0);
    long long user_rows = -1;
    for (int64_t deadline = test_now_ms() + 30000; test_now_ms() < deadline; usleep(200 * 1000)) {
        user_rows = test_pg_query_int(sink_pg, "SELECT count(*) FROM users");
        if (user_rows >= registered)
            break;
    }
    fprintf(stderr,
            "# sink: %lld message rows for %ld acknowledged sends (%ld differ, %lld dialogs with "
            "gaps), %lld user rows for %ld UserRegistered\n",
            rows, sends, differing, gaps, user_rows, registered);
    assert_int_equal(rows, sends);
    assert_int_equal(differing, 0);
    assert_int_equal(gaps, 0);
    assert_int_equal(user_rows, registered);
}

/* ---- shared by the tests ------------------------------------------------------ */

static void start_the_clients(void) {
    for (int i = 0; i < CLIENTS; i++) {
        clients[i].index = i;
        clients[i].seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)(i * 7919);
        assert_int_equal(pthread_create(&clients[i].thread, NULL, client_main, &clients[i]), 0);
    }
}

/* With the clients stopped: print what they saw, then check every answer
 * class, every list and dialogs.events against what was acknowledged. */
static void verify_what_was_acknowledged(int64_t load_ms) {
    long sends = 0, registrations = 0, dialogs = 0;
    for (int i = 0; i < CLIENTS; i++) {
        sends += clients[i].n_sends;
        registrations += clients[i].registrations;
        dialogs += clients[i].n_dialogs;
    }
    fprintf(stderr,
            "# under load for %lld ms: %ld sends acknowledged in %ld dialogs, %ld "
            "registrations acknowledged\n",
            (long long)load_ms, sends, dialogs, registrations);
    fprintf(stderr, "# answers: ");
    for (int s = 0; s < 600; s++)
        if (atomic_load(&answers_by_status[s]))
            fprintf(stderr, "%d x%ld  ", s, atomic_load(&answers_by_status[s]));
    fprintf(stderr,
            "\n# 503s: %ld (%ld without Retry-After); failed connections: %ld; "
            "400 unknown recipient retried: %ld\n",
            atomic_load(&answers_503), atomic_load(&answers_503_without_retry_after),
            atomic_load(&transport_errors), atomic_load(&unknown_recipient_retries));
    fprintf(stderr, "# longest request, first try to final answer: %lld ms (%s, from %.1f s)\n",
            (long long)longest_request_ms, longest_request_what,
            (double)longest_request_started_ms / 1000.0);

    /* Lists: exactly what was acknowledged, in send order. */
    int64_t verify_started = test_now_ms();
    long list_mismatches = 0, dialogs_wrong = 0;
    for (int i = 0; i < CLIENTS; i++)
        for (int d = 0; d < clients[i].n_dialogs; d++) {
            int wrong = check_list(&clients[i], &clients[i].dialogs[d]);
            list_mismatches += wrong;
            dialogs_wrong += wrong > 0;
        }
    fprintf(stderr, "# lists: %ld of %ld dialogs differ from what was acknowledged (%lld ms)\n",
            dialogs_wrong, dialogs, (long long)(test_now_ms() - verify_started));

    /* dialogs.events: one MessageSent per acknowledged send. */
    events_scan scan = {0};
    long scanned = test_scan_topic(test_kafka_bootstrap(), dialogs_events, "read_committed",
                                   visit_event, &scan, 30000);
    long missing = 0;
    for (int i = 0; i < CLIENTS; i++)
        for (int d = 0; d < clients[i].n_dialogs; d++) {
            dialog *dlg = &clients[i].dialogs[d];
            for (int s = 1; s <= dlg->n_sends; s++)
                if (!dlg->event_seen[s] && missing++ < 3)
                    fprintf(stderr, "# dialog %s: no MessageSent for seq %d \"%s\"\n", dlg->id, s,
                            clients[i].sends[dlg->sends[s - 1]].text);
        }
    fprintf(stderr,
            "# dialogs.events: %ld records, %ld MessageSent for %ld acknowledged sends: %ld "
            "missing, %ld duplicates, %ld beyond the acknowledged, %ld wrong texts, %ld of "
            "unknown dialogs\n",
            scanned, scan.message_sent, sends, missing, scan.duplicates, scan.beyond_acknowledged,
            scan.wrong_text, scan.unknown_dialog);

    for (int f = 0; f < n_failures && f < MAX_FAILURES; f++)
        fprintf(stderr, "# client failure: %s\n", failures[f]);
    if (n_failures)
        fail_msg("%d client requests failed (see above)", n_failures);
    assert_true(sends > 0);
    assert_true(registrations > 0);
    assert_true(scanned >= 0);
    assert_int_equal(list_mismatches, 0);
    assert_int_equal(missing, 0);
    assert_int_equal(scan.duplicates, 0);
    assert_int_equal(scan.beyond_acknowledged, 0);
    assert_int_equal(scan.wrong_text, 0);
    assert_int_equal(scan.unknown_dialog, 0);
    assert_int_equal(scan.message_sent, sends);
    verify_the_sink(sends);
}

/* ---- the tests ---------------------------------------------------------------- */

static void scaling_1_2_3_kill_restart_3_2_1_under_load_loses_and_duplicates_nothing(void **state) {
    (void)state;
    NEED_BROKER();
    int64_t test_started = test_started_ms = test_now_ms();
    start_step(0, "start a (1 instance)");
    start_the_sink();
    start_the_clients();
    pause_ms(STEP_PAUSE_MS);
    start_step(1, "start b (2 instances)");
    pause_ms(STEP_PAUSE_MS);
    start_step(2, "start c (3 instances)");
    pause_ms(STEP_PAUSE_MS);
    kill_step(1, "kill -9 b");
    pause_ms(2000);
    start_step(1, "restart b on its state dir");
    pause_ms(STEP_PAUSE_MS);
    stop_step(2, "stop c (2 instances)");
    pause_ms(STEP_PAUSE_MS);
    stop_step(1, "stop b (1 instance)");
    pause_ms(STEP_PAUSE_MS);
    stop_the_clients();
    verify_what_was_acknowledged(test_now_ms() - test_started);
    fprintf(stderr, "# total %lld ms\n", (long long)(test_now_ms() - test_started));
}

/* Where each instance is in the fail-over test's kill schedule. */
typedef enum { INSTANCE_UP, INSTANCE_KILLED, INSTANCE_STARTING } instance_phase;

typedef struct instance_schedule {
    instance_phase phase;
    int64_t restart_due_ms; /* KILLED: when to start it again */
    int64_t started_ms;     /* STARTING: when it was started */
} instance_schedule;

static const char *const instance_names[TEST_CLUSTER_MAX] = {"a", "b", "c"};

/* Kill `i` with SIGKILL (even if it is not ready yet) and schedule its
 * restart 3-5 s later. It stays in the clients' rotation, dead and then
 * starting, as behind a load balancer that has not noticed yet: they get
 * refused or broken connections, or what a starting instance answers (a
 * 503 with Retry-After, or the test fails), and retry elsewhere. */
static void failover_kill(instance_schedule *sched, int i, unsigned *seed) {
    int64_t now = test_now_ms();
    bool was_ready = sched[i].phase == INSTANCE_UP;
    test_instance_kill9(&cluster.instances[i]);
    sched[i].phase = INSTANCE_KILLED;
    sched[i].restart_due_ms = now + RESTART_AFTER_MS + rand_r(seed) % 2001;
    fprintf(stderr, "# at %6.1f s: kill -9 %s%s, restart in %lld ms\n",
            (double)(now - test_started_ms) / 1000.0, instance_names[i],
            was_ready ? "" : " (it was not ready yet)", (long long)(sched[i].restart_due_ms - now));
}

/* One step of the schedule for instance `i`, never blocking: start it when
 * its restart is due; when it is starting, ask /readyz once. Appends the
 * ready time to `ready_ms`. False if it exited while starting. */
static bool failover_tend(instance_schedule *sched, int i, int64_t *ready_ms, int *n_ready) {
    int64_t now = test_now_ms();
    if (sched[i].phase == INSTANCE_KILLED && now >= sched[i].restart_due_ms) {
        test_instance_start(&cluster.instances[i]);
        sched[i].phase = INSTANCE_STARTING;
        sched[i].started_ms = now;
        fprintf(stderr, "# at %6.1f s: restart %s on its state dir\n",
                (double)(now - test_started_ms) / 1000.0, instance_names[i]);
    } else if (sched[i].phase == INSTANCE_STARTING) {
        if (test_instance_wait_ready(&cluster.instances[i], 1)) {
            now = test_now_ms();
            sched[i].phase = INSTANCE_UP;
            if (*n_ready < MAX_RESTARTS)
                ready_ms[(*n_ready)++] = now - sched[i].started_ms;
            fprintf(stderr, "# at %6.1f s: %s ready after %lld ms\n",
                    (double)(now - test_started_ms) / 1000.0, instance_names[i],
                    (long long)(now - sched[i].started_ms));
        } else if (!cluster.instances[i].pid) {
            return false;
        }
    }
    return true;
}

static void failover_with_defaults_kill9_every_15s_loses_and_duplicates_nothing(void **state) {
    (void)state;
    NEED_BROKER();
    int64_t test_started = test_started_ms = test_now_ms();
    /* All three at once: the group settles once they are all in. */
    for (int i = 0; i < cluster.n; i++)
        test_instance_start(&cluster.instances[i]);
    for (int i = 0; i < cluster.n; i++) {
        if (!test_instance_wait_ready(&cluster.instances[i], READY_MS)) {
            test_instance_dump_log(&cluster.instances[i], 40);
            fail_msg("instance %s not ready", instance_names[i]);
        }
        atomic_store(&live[i], true);
    }
    fprintf(stderr, "# at %6.1f s: a, b and c ready\n",
            (double)(test_now_ms() - test_started) / 1000.0);
    start_the_sink();
    start_the_clients();
    pause_ms(WARM_UP_MS);

    instance_schedule sched[TEST_CLUSTER_MAX] = {{INSTANCE_UP, 0, 0}};
    int64_t ready_ms[MAX_RESTARTS];
    int n_ready = 0, kills = 0;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    int64_t from = test_now_ms();
    pthread_mutex_lock(&stats_lock);
    phase.from_ms = phase.last_ack_ms = from;
    pthread_mutex_unlock(&stats_lock);
    fprintf(stderr, "# at %6.1f s: kill phase begins\n", (double)(from - test_started) / 1000.0);

    /* The kill schedule, then until every instance is ready again. */
    for (;;) {
        int64_t now = test_now_ms();
        bool in_phase = now < from + KILL_PHASE_MS;
        if (in_phase && now >= from + (int64_t)kills * KILL_EVERY_MS) {
            failover_kill(sched, kills % cluster.n, &seed);
            kills++;
        }
        if (!in_phase && !phase.until_ms) {
            pthread_mutex_lock(&stats_lock);
            phase.until_ms = now;
            pthread_mutex_unlock(&stats_lock);
            fprintf(stderr, "# at %6.1f s: kill phase ends\n",
                    (double)(now - test_started) / 1000.0);
        }
        bool all_up = true;
        for (int i = 0; i < cluster.n; i++) {
            if (!failover_tend(sched, i, ready_ms, &n_ready)) {
                test_instance_dump_log(&cluster.instances[i], 40);
                STEP_FAIL("instance %s exited while starting", instance_names[i]);
            }
            all_up = all_up && sched[i].phase == INSTANCE_UP;
        }
        if (!in_phase && all_up)
            break;
        if (!in_phase && now > phase.until_ms + READY_MS) {
            for (int i = 0; i < cluster.n; i++)
                if (sched[i].phase != INSTANCE_UP)
                    test_instance_dump_log(&cluster.instances[i], 40);
            STEP_FAIL("not every instance ready %d ms after the kill phase", READY_MS);
        }
        pause_ms(100);
    }
    pause_ms(SETTLE_MS);
    stop_the_clients();

    pthread_mutex_lock(&stats_lock);
    kill_phase seen = phase;
    pthread_mutex_unlock(&stats_lock);
    /* The phase may end in a gap: it counts up to the phase's end. */
    if (seen.until_ms - seen.last_ack_ms > seen.longest_ack_gap_ms) {
        seen.longest_ack_gap_ms = seen.until_ms - seen.last_ack_ms;
        seen.longest_ack_gap_end_ms = seen.until_ms - test_started;
    }
    int64_t slowest_ready = 0, ready_total = 0;
    fprintf(stderr, "# ready after restart (ms):");
    for (int r = 0; r < n_ready; r++) {
        fprintf(stderr, " %lld", (long long)ready_ms[r]);
        slowest_ready = ready_ms[r] > slowest_ready ? ready_ms[r] : slowest_ready;
        ready_total += ready_ms[r];
    }
    fprintf(stderr, " (%d kills, %d restarts ready; slowest %lld ms, mean %lld ms)\n", kills,
            n_ready, (long long)slowest_ready, (long long)(n_ready ? ready_total / n_ready : 0));
    fprintf(stderr,
            "# kill phase: longest gap between two acknowledgements %lld ms (ending at %.1f s); "
            "goal <= %d ms: %s\n",
            (long long)seen.longest_ack_gap_ms, (double)seen.longest_ack_gap_end_ms / 1000.0,
            FAILOVER_GOAL_MS, seen.longest_ack_gap_ms <= FAILOVER_GOAL_MS ? "met" : "NOT met");
    fprintf(stderr,
            "# kill phase: longest request, first try to final answer %lld ms (%s, from %.1f s); "
            "goal <= %d ms: %s\n",
            (long long)seen.longest_request_ms, seen.longest_request_what,
            (double)seen.longest_request_started_ms / 1000.0, FAILOVER_GOAL_MS,
            seen.longest_request_ms <= FAILOVER_GOAL_MS ? "met" : "NOT met");
    fprintf(stderr, "# failed connections: %ld, of them refused: %ld\n",
            atomic_load(&transport_errors), atomic_load(&refused_connections));

    verify_what_was_acknowledged(test_now_ms() - test_started);
    fprintf(stderr, "# total %lld ms\n", (long long)(test_now_ms() - test_started));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            scaling_1_2_3_kill_restart_3_2_1_under_load_loses_and_duplicates_nothing, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            failover_with_defaults_kill9_every_15s_loses_and_duplicates_nothing, setup, teardown),
    };
    /* SLUICE_TEST_FILTER=pattern runs only the matching tests (cmocka glob). */
    if (getenv("SLUICE_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SLUICE_TEST_FILTER"));
    return cmocka_run_group_tests_name("live_scaling", tests, NULL, NULL);
}
