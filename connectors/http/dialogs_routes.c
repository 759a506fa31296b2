/*
 * dialogs_http.c: the dialogs routes (see dialogs_http.h for the list).
 *
 * Design notes.
 *
 * Send: authenticate -> the dialog id of (token subject, path user id) ->
 * parse {"text"} (jansson refuses invalid UTF-8 and \u0000; the length is
 * checked in bytes) -> SendMessage through the reply path, keyed by the
 * dialog id -> answer from the outcome. A client retry is safe when it
 * repeats its Idempotency-Key: the command id is then a SHA-256 of (sender,
 * key), so the retry is answered with the original outcome and stores
 * nothing; without a key every request is a new message.
 *
 * Read-your-writes. The reply of a send is produced in the transaction
 * that stores the message, so it becomes visible when that transaction
 * commits; the owner applies the writes to RocksDB a moment later
 * (apply-after-commit). A list served by the owner therefore first waits
 * until every commit the owner had begun is applied
 * (sl_engine_query_settle): a list that starts after a send answered 200
 * sees the message, on any instance (the others forward to the owner).
 * After a restart or a rebalance the new owner restores the whole
 * changelog before it answers (503 meanwhile), so the message is there
 * too. `after=<sequence>` (the X-Sluice-Position of the send) makes the
 * promise explicit and survives everything: the owner waits, up to
 * dialogs.read.wait.ms, until the dialog's head reached that sequence, and
 * answers 503 + Retry-After rather than a list without it.
 *
 *   list: authenticate -> dialog id -> route by dialogs-heads[dialog id]
 *         (forward / 503 / local) -> settle -> wait for `after` -> scan
 *         dialogs-messages with prefix dialog id, skip offset, limit
 */
#include "connectors/http/dialogs_routes.h"
#include "processor/base/clock.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "connectors/http/identity_requests.h"
#include "connectors/http/respond.h"
#include "sluice/v1/dialogs.pb-c.h"
#include "topology/dialogs/dialogs.h"


struct sl_dialogs_http {
    sl_gateway *gateway;
    sl_engine *engine;
    sl_identity_http *identity;
    const sl_logger *logger;
    char commands_topic[256];
    size_t limit_max;
    int read_wait_ms;
};

static void http_fail(sl_dialogs_http *dh, const sl_http_request *req, sl_http_response *resp,
                      int status, const char *message, int retry_after_s) {
    sl_gateway_error(dh->gateway, req, resp, status, message, retry_after_s);
}

static void answer_json(sl_dialogs_http *dh, const sl_http_request *req, sl_http_response *resp,
                        int status, json_t *root) {
    sl_respond_json(dh->gateway, req, resp, status, root);
}

/* The path's {user_id}, lower-cased, as a valid user id; false (400
 * answered) otherwise. */
static bool path_user(sl_dialogs_http *dh, const sl_http_request *req, sl_http_response *resp,
                      char out[SL_DIALOGS_USER_ID_LEN + 1]) {
    const char *param = sl_http_request_param(req, "user_id");
    if (!param || strlen(param) != SL_DIALOGS_USER_ID_LEN) {
        http_fail(dh, req, resp, 400, "user_id: not a user id", 0);
        return false;
    }
    for (size_t i = 0; i <= SL_DIALOGS_USER_ID_LEN; i++)
        out[i] = (param[i] >= 'A' && param[i] <= 'F') ? (char)(param[i] - 'A' + 'a') : param[i];
    if (!sl_dialogs_valid_user_id(out)) {
        http_fail(dh, req, resp, 400, "user_id: not a user id", 0);
        return false;
    }
    return true;
}

/* The dialog between the caller and the path's user. */
static bool caller_dialog(sl_dialogs_http *dh, const sl_http_request *req, sl_http_response *resp,
                          sl_jwt_claims *claims, char partner[SL_DIALOGS_USER_ID_LEN + 1],
                          char dialog_id[SL_DIALOGS_ID_LEN + 1]) {
    if (!sl_identity_http_authenticate(dh->identity, req, resp, claims))
        return false;
    if (!path_user(dh, req, resp, partner))
        return false;
    if (!sl_dialogs_valid_user_id(claims->sub)) {
        http_fail(dh, req, resp, 401, "the token's subject is not a user id", 0);
        return false;
    }
    if (!sl_dialogs_id(claims->sub, partner, dialog_id)) {
        http_fail(dh, req, resp, 400, "user_id: a dialog needs two different users", 0);
        return false;
    }
    return true;
}

/* A non-negative integer query argument (absent: *out = fallback). */
static bool query_uint(const sl_http_request *req, const char *name, long long max,
                       long long fallback, long long *out) {
    const char *s = sl_http_request_query(req, name);
    if (!s) {
        *out = fallback;
        return true;
    }
    if (!*s || *s == '-' || *s == '+')
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 0 || v > max)
        return false;
    *out = v;
    return true;
}

static bool paging(sl_dialogs_http *dh, const sl_http_request *req, sl_http_response *resp,
                   size_t *offset, size_t *limit) {
    long long o, l;
    if (!query_uint(req, "offset", 1000000000LL, 0, &o)) {
        http_fail(dh, req, resp, 400, "offset: not a non-negative integer", 0);
        return false;
    }
    if (!query_uint(req, "limit", 1000000000LL, (long long)dh->limit_max, &l) || l == 0) {
        http_fail(dh, req, resp, 400, "limit: not a positive integer", 0);
        return false;
    }
    *offset = (size_t)o;
    *limit = (size_t)l > dh->limit_max ? dh->limit_max : (size_t)l; /* capped */
    return true;
}

/* ---- send ------------------------------------------------------------------------ */

typedef struct send_command {
    const char *command_id;
    const char *dialog_id;
    const char *sender_id;
    const char *recipient_id;
    const char *text;
} send_command;

static sl_err encode_send(void *opaque, const Sluice__V1__CommandMeta *meta, void **value,
                          size_t *value_len) {
    const send_command *c = opaque;
    Sluice__V1__CommandMeta m = *meta;
    m.command_id = (char *)c->command_id;
    Sluice__V1__SendMessage send = SLUICE__V1__SEND_MESSAGE__INIT;
    send.meta = &m;
    send.dialog_id = (char *)c->dialog_id;
    send.sender_id = (char *)c->sender_id;
    send.recipient_id = (char *)c->recipient_id;
    send.text = (char *)c->text;
    Sluice__V1__DialogsCommand command = SLUICE__V1__DIALOGS_COMMAND__INIT;
    command.command_case = SLUICE__V1__DIALOGS_COMMAND__COMMAND_SEND_MESSAGE;
    command.send_message = &send;
    return sl_command_pack(&command, value, value_len);
}

/* "idem-" + hex SHA-256(sender NUL key): stable for a retry of the same
 * sender with the same Idempotency-Key, and never another sender's. */
static bool derived_command_id(const char *sender, const char *key, char out[5 + 64 + 1]) {
    unsigned char digest[32];
    unsigned int digest_len = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
              EVP_DigestUpdate(md, sender, strlen(sender) + 1) &&
              EVP_DigestUpdate(md, key, strlen(key)) &&
              EVP_DigestFinal_ex(md, digest, &digest_len) && digest_len == 32;
    EVP_MD_CTX_free(md);
    if (!ok)
        return false;
    memcpy(out, "idem-", 5);
    for (int i = 0; i < 32; i++)
        snprintf(out + 5 + 2 * i, 3, "%02x", digest[i]);
    return true;
}

static void request_failed(sl_dialogs_http *dh, const sl_http_request *req,
                           sl_http_response *resp, sl_err err) {
    sl_respond_unanswered(dh->gateway, req, resp, err,
                          "the message is still being processed; retry later (with the same "
                          "Idempotency-Key to be sure it is stored once)",
                          "the message cannot be sent now");
}

static void answer_outcome(sl_dialogs_http *dh, const sl_http_request *req,
                           sl_http_response *resp, const Sluice__V1__Reply *reply) {
    if (strcmp(reply->type, "sluice.v1.MessageSent") == 0) {
        Sluice__V1__MessageSent *sent =
            sluice__v1__message_sent__unpack(NULL, reply->payload.len, reply->payload.data);
        if (!sent) {
            http_fail(dh, req, resp, 500, "undecodable outcome", 0);
            return;
        }
        char position[32];
        snprintf(position, sizeof(position), "%lld", (long long)sent->sequence);
        sl_http_response_header(resp, SL_DIALOGS_POSITION_HEADER, position);
        answer_json(dh, req, resp, 200,
                    json_pack("{s:s, s:I}", "dialog_id", sent->dialog_id, "sequence",
                              (json_int_t)sent->sequence));
        sluice__v1__message_sent__free_unpacked(sent, NULL);
    } else if (strcmp(reply->type, "sluice.v1.MessageRejected") == 0) {
        Sluice__V1__MessageRejected *rejected =
            sluice__v1__message_rejected__unpack(NULL, reply->payload.len, reply->payload.data);
        if (!rejected)
            http_fail(dh, req, resp, 500, "undecodable outcome", 0);
        else if (rejected->reason == SLUICE__V1__MESSAGE_REJECTED__REASON__UNKNOWN_RECIPIENT)
            http_fail(dh, req, resp, 400, "user_id: not a registered user", 0);
        else
            http_fail(dh, req, resp, 400,
                      rejected->detail && rejected->detail[0] ? rejected->detail : "invalid message",
                      0);
        sluice__v1__message_rejected__free_unpacked(rejected, NULL);
    } else {
        http_fail(dh, req, resp, 500, "unexpected outcome", 0);
    }
}

static void handle_send(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_dialogs_http *dh = opaque;
    sl_jwt_claims claims;
    char partner[SL_DIALOGS_USER_ID_LEN + 1], dialog_id[SL_DIALOGS_ID_LEN + 1];
    if (!caller_dialog(dh, req, resp, &claims, partner, dialog_id))
        return;
    const char *key = sl_http_request_header(req, "Idempotency-Key");
    if (key && !sl_idempotency_key_valid(key)) {
        http_fail(dh, req, resp, 400, "Idempotency-Key: 1 to 255 visible ASCII characters", 0);
        return;
    }
    size_t len = 0;
    const char *raw = sl_http_request_body(req, &len);
    char message[256];
    json_t *root = sl_json_object_parse(raw, len, message, sizeof(message));
    json_t *text = root ? json_object_get(root, "text") : NULL;
    if (!root) {
        http_fail(dh, req, resp, 400, message, 0);
        goto done;
    }
    if (!json_is_string(text)) {
        http_fail(dh, req, resp, 400, "text: a string is required", 0);
        goto done;
    }
    size_t text_len = json_string_length(text);
    const char *text_value = json_string_value(text);
    if (text_len == 0) {
        http_fail(dh, req, resp, 400, "text: empty", 0);
        goto done;
    }
    if (text_len > SL_DIALOGS_MAX_TEXT) {
        http_fail(dh, req, resp, 400, "text: longer than 4096 bytes", 0);
        goto done;
    }
    if (!sl_utf8_valid(text_value, text_len)) {
        http_fail(dh, req, resp, 400, "text: not valid UTF-8", 0);
        goto done;
    }
    char command_id[5 + 64 + 1];
    if (key ? !derived_command_id(claims.sub, key, command_id) : sl_uuid_v4(command_id) != SL_OK) {
        http_fail(dh, req, resp, 500, "cannot make a command id", 0);
        goto done;
    }
    send_command command = {.command_id = command_id,
                            .dialog_id = dialog_id,
                            .sender_id = claims.sub,
                            .recipient_id = partner,
                            .text = text_value};
    Sluice__V1__Reply *reply = NULL;
    sl_err err = sl_gateway_request(dh->gateway, dh->commands_topic, dialog_id, SL_DIALOGS_ID_LEN,
                                    encode_send, &command, &reply);
    if (err)
        request_failed(dh, req, resp, err);
    else
        answer_outcome(dh, req, resp, reply);
    sl_reply_free(reply);
done:
    json_decref(root);
}

/* ---- list -------------------------------------------------------------------------- */

typedef struct list_visit {
    json_t *array;
    bool failed;
} list_visit;

static bool visit_message(void *opaque, const void *key, size_t key_len, const void *value,
                          size_t value_len) {
    (void)key;
    (void)key_len;
    list_visit *v = opaque;
    Sluice__V1__MessageSent *m = sluice__v1__message_sent__unpack(NULL, value_len, value);
    json_t *item = m ? json_pack("{s:s, s:s, s:s}", "from", m->sender_id, "to", m->recipient_id,
                                 "text", m->text)
                     : NULL;
    if (m)
        sluice__v1__message_sent__free_unpacked(m, NULL);
    if (!item || json_array_append_new(v->array, item)) {
        v->failed = true;
        return false;
    }
    return true;
}

/* The dialog's last sequence as the owner stored it (0: no message yet),
 * or an error (SL_ERR_NOT_OWNER etc.). */
static sl_err stored_sequence(sl_dialogs_http *dh, const char *dialog_id, int64_t *sequence) {
    char *value = NULL;
    size_t value_len = 0;
    int32_t partition;
    *sequence = 0;
    sl_err err = sl_engine_query_get(dh->engine, SL_DIALOGS_STORE_HEADS, dialog_id,
                                     SL_DIALOGS_ID_LEN, &value, &value_len, &partition);
    if (err == SL_ERR_NOT_FOUND && partition >= 0)
        return SL_OK;
    if (err)
        return err;
    Sluice__V1__DialogHead *head =
        sluice__v1__dialog_head__unpack(NULL, value_len, (const uint8_t *)value);
    free(value);
    if (!head)
        return SL_ERR_STORE;
    *sequence = head->last_sequence;
    sluice__v1__dialog_head__free_unpacked(head, NULL);
    return SL_OK;
}

static void handle_list(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_dialogs_http *dh = opaque;
    sl_jwt_claims claims;
    char partner[SL_DIALOGS_USER_ID_LEN + 1], dialog_id[SL_DIALOGS_ID_LEN + 1];
    if (!caller_dialog(dh, req, resp, &claims, partner, dialog_id))
        return;
    size_t offset, limit;
    long long after;
    if (!paging(dh, req, resp, &offset, &limit))
        return;
    if (!query_uint(req, "after", INT64_MAX, 0, &after)) {
        http_fail(dh, req, resp, 400, "after: not a message sequence", 0);
        return;
    }
    /* Route: the owner of the dialog's partition answers. */
    char *value = NULL;
    size_t value_len = 0;
    sl_gateway_outcome routed = sl_gateway_get(dh->gateway, req, resp, SL_DIALOGS_STORE_HEADS,
                                               dialog_id, SL_DIALOGS_ID_LEN, &value, &value_len);
    free(value);
    if (routed == SL_GATEWAY_ANSWERED)
        return;
    /* Read-your-writes (see the design note). */
    int64_t deadline = sl_clock_mono_ms() + dh->read_wait_ms;
    if (sl_engine_query_settle(dh->engine, dh->read_wait_ms) != SL_OK) {
        http_fail(dh, req, resp, 503, "the store is behind its last commit; retry",
                  SL_RESPOND_RETRY_AFTER_S);
        return;
    }
    while (after > 0) {
        int64_t stored = 0;
        sl_err err = stored_sequence(dh, dialog_id, &stored);
        if (err == SL_OK && stored >= after)
            break;
        if ((err && err != SL_ERR_NOT_READY) || sl_clock_mono_ms() >= deadline) {
            http_fail(dh, req, resp, 503,
                      err ? "the dialog's owner is moving; retry"
                          : "the dialog has not reached the asked position yet; retry",
                      SL_RESPOND_RETRY_AFTER_S);
            return;
        }
        struct timespec pause = {0, 10 * 1000000};
        nanosleep(&pause, NULL);
    }
    list_visit visit = {.array = json_array(), .failed = false};
    if (!visit.array) {
        http_fail(dh, req, resp, 500, "out of memory", 0);
        return;
    }
    sl_query_range range = {.prefix = dialog_id,
                            .prefix_len = SL_DIALOGS_ID_LEN,
                            .skip = offset,
                            .limit = limit};
    sl_gateway_outcome outcome =
        sl_gateway_range(dh->gateway, req, resp, SL_DIALOGS_STORE_MESSAGES, dialog_id,
                         SL_DIALOGS_ID_LEN, &range, visit_message, &visit);
    if (outcome == SL_GATEWAY_ANSWERED) {
        json_decref(visit.array);
        return;
    }
    if (visit.failed) {
        json_decref(visit.array);
        http_fail(dh, req, resp, 500, "a stored message could not be read", 0);
        return;
    }
    answer_json(dh, req, resp, 200, visit.array);
}

/* ---- the caller's dialogs ---------------------------------------------------------- */

static bool visit_summary(void *opaque, const void *key, size_t key_len, const void *value,
                          size_t value_len) {
    (void)key;
    (void)key_len;
    list_visit *v = opaque;
    Sluice__V1__DialogSummary *s = sluice__v1__dialog_summary__unpack(NULL, value_len, value);
    json_t *item = s ? json_pack("{s:s, s:s, s:I, s:s, s:s, s:I, s:I}", "dialog_id", s->dialog_id,
                                 "partner_id", s->partner_id, "last_sequence",
                                 (json_int_t)s->last_sequence, "last_sender_id", s->last_sender_id,
                                 "last_text", s->last_preview, "last_at_ms",
                                 (json_int_t)s->last_at_ms, "unread", (json_int_t)s->unread)
                     : NULL;
    if (s)
        sluice__v1__dialog_summary__free_unpacked(s, NULL);
    if (!item || json_array_append_new(v->array, item)) {
        v->failed = true;
        return false;
    }
    return true;
}

static void handle_dialogs(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_dialogs_http *dh = opaque;
    sl_jwt_claims claims;
    if (!sl_identity_http_authenticate(dh->identity, req, resp, &claims))
        return;
    if (!sl_dialogs_valid_user_id(claims.sub)) {
        http_fail(dh, req, resp, 401, "the token's subject is not a user id", 0);
        return;
    }
    size_t offset, limit;
    if (!paging(dh, req, resp, &offset, &limit))
        return;
    list_visit visit = {.array = json_array(), .failed = false};
    if (!visit.array) {
        http_fail(dh, req, resp, 500, "out of memory", 0);
        return;
    }
    sl_query_range range = {
        .prefix = claims.sub, .prefix_len = SL_DIALOGS_USER_ID_LEN, .skip = offset, .limit = limit};
    sl_gateway_outcome outcome =
        sl_gateway_range(dh->gateway, req, resp, SL_DIALOGS_STORE_BY_USER, claims.sub,
                         SL_DIALOGS_USER_ID_LEN, &range, visit_summary, &visit);
    if (outcome == SL_GATEWAY_ANSWERED) {
        json_decref(visit.array);
        return;
    }
    if (visit.failed) {
        json_decref(visit.array);
        http_fail(dh, req, resp, 500, "a dialog summary could not be read", 0);
        return;
    }
    answer_json(dh, req, resp, 200, visit.array);
}

/* ---- life cycle -------------------------------------------------------------------- */

sl_dialogs_http *sl_dialogs_http_new(const sl_config *config, sl_gateway *gateway,
                                     sl_identity_http *identity, const sl_logger *logger,
                                     char *errstr, size_t errstr_size) {
    sl_dialogs_http *dh = calloc(1, sizeof(*dh));
    if (!dh) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    dh->gateway = gateway;
    dh->engine = sl_gateway_engine(gateway);
    dh->identity = identity;
    dh->logger = logger;
    dh->limit_max = (size_t)sl_config_get_int(config, "dialogs.list.limit.max");
    dh->read_wait_ms = (int)sl_config_get_int(config, "dialogs.read.wait.ms");
    int n = snprintf(dh->commands_topic, sizeof(dh->commands_topic), "%sdialogs.commands",
                     sl_config_get(config, "dialogs.topic.prefix"));
    if (n < 0 || (size_t)n >= sizeof(dh->commands_topic)) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "dialogs.topic.prefix is too long");
        free(dh);
        return NULL;
    }
    return dh;
}

sl_err sl_dialogs_http_routes(sl_dialogs_http *dh, sl_http_server *http) {
    sl_err err;
    if ((err = sl_http_route(http, "POST", "/dialog/{user_id}/send", handle_send, dh)) ||
        (err = sl_http_route(http, "GET", "/dialog/{user_id}/list", handle_list, dh)) ||
        (err = sl_http_route(http, "GET", "/dialogs", handle_dialogs, dh)))
        return err;
    return SL_OK;
}

void sl_dialogs_http_destroy(sl_dialogs_http *dh) {
    free(dh);
}
