/*
 * identity_http.c: the identity routes (see identity_http.h for the list).
 *
 * Design notes.
 *
 * Registration is decided by the identity topology on the partition owning
 * the e-mail; the gateway hashes the password first (argon2id on the pool),
 * produces RegisterUser through the reply path and answers from the
 * outcome. A client retry is safe when it repeats its Idempotency-Key: the
 * command id is then MAC(signing-key secret; key, e-mail, password), so the
 * same request gets the same command id (the processor answers a repeated
 * id with the original outcome) and the user id is derived from it too
 * (a user without an e-mail is keyed by "id:<user id>", so the retry lands
 * on the same partition). Without a key, every request is a new command.
 * The MAC keeps the password out of the id: nothing in a topic can be
 * guessed offline without the signing key.
 *
 *   register:  parse -> IP throttle -> hash (pool) -> RegisterUser -> reply
 *              UserRegistered -> tokens (200) | EMAIL_TAKEN (409) |
 *              INVALID (400) | no reply in time (503, retry with the key)
 *
 * Login is a read of a task store, so it runs where the user's partition
 * lives: by id in users-by-id, by e-mail in users-by-email. The first
 * instance checks the per-IP limit and forwards when it is not the owner;
 * the owner checks the per-account limit (all attempts for one account meet
 * there), verifies on the pool (an unknown user runs the dummy hash: same
 * answer, same time) and issues the tokens.
 *
 * Tokens: access and refresh share a session id (sid). Refresh revokes the
 * presented refresh token through tokens.commands (keyed by its jti, so the
 * partition owning it decides): if the topology says it was already revoked
 * by another command, the token was rotated before, i.e. stolen or
 * replayed, and the whole session is revoked (RFC 9700 4.14.2). A retry of
 * the same refresh is not reuse: the rotation's command id and the new
 * pair's ids derive from the old jti under the signing key's MAC, so within
 * identity.refresh.retry.grace.ms of the first rotation a retry (on any
 * instance) gets the same pair. Logout revokes the access token and the
 * session, idempotently (command ids from the jti; a retry answers 204). Every instance refuses revoked
 * tokens from its replicated blacklist (a global store).
 */
#include "connectors/http/identity_routes.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "connectors/http/identity_requests.h"
#include "connectors/http/respond.h"
#include "connectors/http/auth/passwords.h"
#include "connectors/http/auth/throttle.h"
#include "processor/base/clock.h"
#include "sluice/v1/identity.pb-c.h"
#include "topology/identity/identity.h"

#define MSG_BAD_CREDENTIALS "invalid credentials"

struct sl_identity_http {
    const sl_config *config;
    sl_gateway *gateway;
    sl_engine *engine;
    const sl_logger *logger;
    sl_jwt_keys *keys;
    sl_jwt_cache *cache;
    sl_password_pool *pool;
    sl_throttle *per_ip, *per_account;
    char iss[SL_JWT_MAX_NAME + 1], aud[SL_JWT_MAX_NAME + 1];
    int64_t access_ttl_s, refresh_ttl_s, leeway_s;
    int64_t refresh_grace_ms; /* a retried refresh gets the first answer */
    int64_t session_max_s;    /* no token outlives auth_time + this */
    int hash_timeout_ms;
    int visible_timeout_ms; /* identity.register.visible.timeout.ms */
    char users_topic[256], tokens_topic[256];
    /* Global stores a new user id must be in before the registration is
     * answered (sl_identity_http_await_global). */
    const char *await_globals[SL_IDENTITY_HTTP_MAX_AWAIT];
    size_t n_await_globals;
};

#define logf_(ih, level, ...) sl_log((ih)->logger, (level), "identity", __VA_ARGS__)

static int64_t now_s(void) {
    return (int64_t)time(NULL);
}

static void http_fail(sl_identity_http *ih, const sl_http_request *req, sl_http_response *resp,
                  int status, const char *message, int retry_after_s) {
    sl_gateway_error(ih->gateway, req, resp, status, message, retry_after_s);
}

static void answer_json(sl_identity_http *ih, const sl_http_request *req, sl_http_response *resp,
                        int status, json_t *root) {
    sl_respond_json(ih->gateway, req, resp, status, root);
}

/* ---- tokens ----------------------------------------------------------------- */

typedef struct token_pair {
    char access[SL_JWT_MAX_TOKEN + 1];
    char refresh[SL_JWT_MAX_TOKEN + 1];
} token_pair;

static sl_err mac_id(sl_identity_http *ih, const char *label, const void *data, size_t len,
                     char *out, size_t out_size, unsigned char digest[32]);

/* The ids of the pair that rotating a refresh token yields: derived from
 * the rotated token's jti under the signing key's MAC, so that a retry of
 * the same refresh (on any instance) issues the very same pair (RS256
 * signatures are deterministic; ES256 ones differ but carry the same
 * claims, so the same jti and expiry). */
typedef struct rotation {
    char access_jti[SL_JWT_MAX_ID + 1], refresh_jti[SL_JWT_MAX_ID + 1];
    int64_t iat; /* the first rotation's time, seconds */
} rotation;

static sl_err rotation_init(sl_identity_http *ih, const char *old_jti, int64_t rotated_at_ms,
                            rotation *out) {
    unsigned char digest[32];
    sl_err err;
    if ((err = mac_id(ih, "refresh-rotation-access", old_jti, strlen(old_jti), out->access_jti,
                      sizeof(out->access_jti), digest)) ||
        (err = mac_id(ih, "refresh-rotation-refresh", old_jti, strlen(old_jti), out->refresh_jti,
                      sizeof(out->refresh_jti), digest)))
        return err;
    out->access_jti[SL_JWT_RANDOM_ID_LEN] = '\0'; /* as long as a random id */
    out->refresh_jti[SL_JWT_RANDOM_ID_LEN] = '\0';
    out->iat = rotated_at_ms / 1000;
    return SL_OK;
}

/* A token's lifetime from `iat`, cut so that it ends with its session
 * (auth_time + identity.session.max.s); <= 0 when the session is over. */
static int64_t token_ttl(const sl_identity_http *ih, int64_t ttl_s, int64_t iat,
                         int64_t auth_time) {
    int64_t left = auth_time + ih->session_max_s - iat;
    return left < ttl_s ? left : ttl_s;
}

/* Issue an access and a refresh token for user `sub` in session `sid`
 * (a fresh one when NULL), with random ids now, or with the ids and time
 * of `rotated` (may be NULL). `auth_time`: when the user authenticated
 * (0: now, a login); no token outlives auth_time + identity.session.max.s
 * (SL_ERR_TIMEOUT when nothing is left of it). */
static sl_err issue_pair(sl_identity_http *ih, const char *sub, const char *sid,
                         const rotation *rotated, int64_t auth_time, token_pair *out) {
    char fresh_sid[SL_JWT_RANDOM_ID_LEN + 1];
    char why[256];
    if (!sid) {
        if (sl_jwt_random_id(fresh_sid, sizeof(fresh_sid)))
            return SL_ERR_IO;
        sid = fresh_sid;
    }
    int64_t now = rotated ? rotated->iat : now_s();
    if (auth_time <= 0 || auth_time > now)
        auth_time = now;
    int64_t access_ttl = token_ttl(ih, ih->access_ttl_s, now, auth_time);
    int64_t refresh_ttl = token_ttl(ih, ih->refresh_ttl_s, now, auth_time);
    if (access_ttl <= 0 || refresh_ttl <= 0)
        return SL_ERR_TIMEOUT;
    sl_jwt_claims access, refresh;
    size_t len;
    sl_err err;
    if ((err = sl_jwt_claims_init(&access, SL_JWT_ACCESS, sub, sid, ih->iss, ih->aud, now,
                                  access_ttl, why, sizeof(why))) ||
        (err = sl_jwt_claims_init(&refresh, SL_JWT_REFRESH, sub, sid, ih->iss, ih->aud, now,
                                  refresh_ttl, why, sizeof(why)))) {
        logf_(ih, SL_LOG_ERROR, "cannot issue tokens: %s", why);
        return err;
    }
    access.auth_time = refresh.auth_time = auth_time;
    if (rotated) {
        snprintf(access.jti, sizeof(access.jti), "%s", rotated->access_jti);
        snprintf(refresh.jti, sizeof(refresh.jti), "%s", rotated->refresh_jti);
    }
    if ((err = sl_jwt_issue(ih->keys, &access, out->access, sizeof(out->access), &len, why,
                            sizeof(why))) ||
        (err = sl_jwt_issue(ih->keys, &refresh, out->refresh, sizeof(out->refresh), &len, why,
                            sizeof(why))))
        logf_(ih, SL_LOG_ERROR, "cannot issue tokens: %s", why);
    return err;
}

static json_t *pair_json(sl_identity_http *ih, const token_pair *pair) {
    return json_pack("{s:s, s:s, s:s, s:s, s:I}", "token", pair->access, "access_token",
                     pair->access, "refresh_token", pair->refresh, "token_type", "Bearer",
                     "expires_in", (json_int_t)ih->access_ttl_s);
}

/* Verify `token` as `typ` and check the blacklist. 0 with *claims, else the
 * HTTP status to answer (401, 503) with *message; *revoked (may be NULL)
 * tells a valid but revoked token from the other 401s. */
static int check_token(sl_identity_http *ih, const char *token, sl_jwt_typ typ,
                       sl_jwt_claims *claims, const char **message, bool *was_revoked) {
    if (was_revoked)
        *was_revoked = false;
    sl_jwt_expect expect = {.iss = ih->iss,
                            .aud = ih->aud,
                            .typ = typ,
                            .now = now_s(),
                            .leeway_s = ih->leeway_s,
                            .session_max_s = ih->session_max_s};
    char why[256];
    sl_jwt_error verdict = sl_jwt_verify_cached(ih->keys, ih->cache, token, strlen(token),
                                                &expect, claims, why, sizeof(why));
    if (verdict != SL_JWT_OK) {
        *message = sl_jwt_error_msg(verdict);
        return verdict == SL_JWT_ERR_INTERNAL ? 500 : 401;
    }
    bool revoked = false;
    sl_err err = sl_identity_token_revoked(ih->engine, claims->jti, claims->sid, &revoked);
    if (!err && !revoked) /* a password change ended the token's session */
        err = sl_identity_user_revoked(ih->engine, claims->sub, claims->sid, claims->iat,
                                       &revoked);
    if (err == SL_ERR_UNAVAILABLE) {
        *message = "the token blacklist is still loading";
        return 503;
    }
    if (err) {
        *message = "the token blacklist cannot be read";
        return 500;
    }
    if (revoked) {
        *message = "token has been revoked";
        if (was_revoked)
            *was_revoked = true;
        return 401;
    }
    return 0;
}

/* The Bearer access token of the request into *claims, or false after
 * answering 401/503. A genuine token that is revoked passes only when
 * `revoked_ok` (then *was_revoked, may be NULL, says so). */
static bool authenticate(sl_identity_http *ih, const sl_http_request *req, sl_http_response *resp,
                         sl_jwt_claims *claims, bool revoked_ok) {
    const char *header = sl_http_request_header(req, "Authorization");
    if (!header || strncasecmp(header, "Bearer ", 7) != 0) {
        http_fail(ih, req, resp, 401, "an Authorization: Bearer access token is required", 0);
        return false;
    }
    const char *token = header + 7;
    while (*token == ' ')
        token++;
    if (strlen(token) > SL_JWT_MAX_TOKEN) {
        http_fail(ih, req, resp, 401, sl_jwt_error_msg(SL_JWT_ERR_TOO_LONG), 0);
        return false;
    }
    const char *message = NULL;
    bool revoked = false;
    int status = check_token(ih, token, SL_JWT_ACCESS, claims, &message, &revoked);
    if (status && !(revoked && revoked_ok)) {
        http_fail(ih, req, resp, status, message, status == 503 ? SL_RESPOND_RETRY_AFTER_S : 0);
        return false;
    }
    return true;
}

bool sl_identity_http_authenticate(sl_identity_http *ih, const sl_http_request *req,
                                   sl_http_response *resp, sl_jwt_claims *claims) {
    return authenticate(ih, req, resp, claims, false);
}

/* ---- commands through the reply path ------------------------------------------ */

typedef struct register_command {
    const sl_register_req *req;
    const char *command_id;
    const char *user_id;
    const char *password_hash;
} register_command;

static sl_err encode_register(void *opaque, const Sluice__V1__CommandMeta *meta, void **value,
                              size_t *value_len) {
    const register_command *c = opaque;
    Sluice__V1__CommandMeta m = *meta;
    m.command_id = (char *)c->command_id;
    Sluice__V1__Profile profile = SLUICE__V1__PROFILE__INIT;
    profile.first_name = (char *)c->req->first_name;
    profile.second_name = (char *)c->req->second_name;
    profile.birthdate = (char *)c->req->birthdate;
    profile.biography = (char *)c->req->biography;
    profile.city = (char *)c->req->city;
    Sluice__V1__RegisterUser reg = SLUICE__V1__REGISTER_USER__INIT;
    reg.meta = &m;
    reg.user_id = (char *)c->user_id;
    reg.email = (char *)c->req->email;
    reg.password_hash = (char *)c->password_hash;
    reg.profile = &profile;
    Sluice__V1__UsersCommand command = SLUICE__V1__USERS_COMMAND__INIT;
    command.command_case = SLUICE__V1__USERS_COMMAND__COMMAND_REGISTER_USER;
    command.register_user = &reg;
    return sl_command_pack(&command, value, value_len);
}

typedef struct revoke_command {
    const char *command_id;
    const char *jti; /* NULL: revoke the session (or, with user_id, the user's) */
    const char *sid; /* with user_id and no jti: the session kept */
    int64_t expires_at_ms;
    const char *reason;
    const char *user_id;  /* a rotation: the token's sub; or the user whose sessions end */
    int64_t issued_at_ms; /* a rotation: the token's iat */
} revoke_command;

static sl_err encode_revoke(void *opaque, const Sluice__V1__CommandMeta *meta, void **value,
                            size_t *value_len) {
    const revoke_command *c = opaque;
    Sluice__V1__CommandMeta m = *meta;
    m.command_id = (char *)c->command_id;
    Sluice__V1__RevokeToken token = SLUICE__V1__REVOKE_TOKEN__INIT;
    Sluice__V1__RevokeSession session = SLUICE__V1__REVOKE_SESSION__INIT;
    Sluice__V1__RevokeUserSessions user = SLUICE__V1__REVOKE_USER_SESSIONS__INIT;
    Sluice__V1__TokensCommand command = SLUICE__V1__TOKENS_COMMAND__INIT;
    if (c->jti) {
        token.meta = &m;
        token.jti = (char *)c->jti;
        token.session_id = (char *)c->sid;
        token.expires_at_ms = c->expires_at_ms;
        token.reason = (char *)c->reason;
        token.user_id = (char *)(c->user_id ? c->user_id : "");
        token.issued_at_ms = c->issued_at_ms;
        command.command_case = SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_TOKEN;
        command.revoke_token = &token;
    } else if (c->user_id) {
        user.meta = &m;
        user.user_id = (char *)c->user_id;
        user.keep_session_id = (char *)c->sid;
        user.expires_at_ms = c->expires_at_ms;
        user.reason = (char *)c->reason;
        command.command_case = SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_USER_SESSIONS;
        command.revoke_user_sessions = &user;
    } else {
        session.meta = &m;
        session.session_id = (char *)c->sid;
        session.expires_at_ms = c->expires_at_ms;
        session.reason = (char *)c->reason;
        command.command_case = SLUICE__V1__TOKENS_COMMAND__COMMAND_REVOKE_SESSION;
        command.revoke_session = &session;
    }
    return sl_command_pack(&command, value, value_len);
}

/* Answer the failure of a request through the reply path. */
static void request_failed(sl_identity_http *ih, const sl_http_request *req,
                           sl_http_response *resp, sl_err err, const char *what) {
    char timeout_message[256], failed_message[256];
    snprintf(timeout_message, sizeof(timeout_message),
             "%s is still being processed; retry later (with the same Idempotency-Key "
             "to be sure it is applied once)",
             what);
    snprintf(failed_message, sizeof(failed_message), "%s cannot be processed now (%s)", what,
             sl_err_name(err));
    sl_respond_unanswered(ih->gateway, req, resp, err, timeout_message, failed_message);
}

/* A random command id (no idempotency asked for). */
static sl_err random_command_id(char out[SL_UUID_LEN + 1]) {
    return sl_uuid_v4(out);
}

/* base64url of a MAC: a stable command id. */
static sl_err mac_id(sl_identity_http *ih, const char *label, const void *data, size_t len,
                     char *out, size_t out_size, unsigned char digest[32]) {
    sl_err err = sl_jwt_keys_mac(ih->keys, label, data, len, digest);
    if (err)
        return err;
    return sl_jwt_b64url_encode(digest, 32, out, out_size);
}

/* ---- handlers ------------------------------------------------------------------ */

static const char *client_key(const sl_http_request *req, char *out, size_t out_size) {
    const char *ip = sl_http_request_client_ip(req);
    snprintf(out, out_size, "ip:%s", ip ? ip : "?");
    return out;
}

static bool throttled(sl_identity_http *ih, const sl_http_request *req, sl_http_response *resp,
                      sl_throttle *t, const char *key) {
    int retry_after = 0;
    if (sl_throttle_check(t, key, sl_clock_mono_ms(), &retry_after) == SL_THROTTLE_ALLOWED)
        return false;
    http_fail(ih, req, resp, 429, "too many attempts; retry later", retry_after);
    return true;
}

sl_err sl_identity_http_await_global(sl_identity_http *ih, const char *store) {
    if (ih->n_await_globals >= SL_IDENTITY_HTTP_MAX_AWAIT)
        return SL_ERR_FULL;
    ih->await_globals[ih->n_await_globals++] = store;
    return SL_OK;
}

/* Read-your-writes for a registration: the new user readable everywhere
 * before the answer. users-by-id is filled one repartition hop after the
 * transaction that answered; each awaited global store is read into every
 * instance from a topic that is filled later still, so it is awaited here
 * (then it is committed to the topic, and any instance's lookup that
 * misses catches its copy up: globals_catch_up). */
static bool registration_visible(sl_identity_http *ih, const char *user_id) {
    if (ih->visible_timeout_ms <= 0)
        return true;
    int64_t deadline = sl_clock_mono_ms() + ih->visible_timeout_ms;
    if (sl_gateway_await(ih->gateway, SL_IDENTITY_STORE_USERS_BY_ID, user_id, strlen(user_id),
                         NULL, 0, ih->visible_timeout_ms) != SL_OK)
        return false;
    /* A global store changes only when the loop thread writes a batch to
     * it, which moves the applied generation: look once per change. */
    for (size_t i = 0; i < ih->n_await_globals; i++) {
        for (;;) {
            uint64_t generation = sl_engine_applied_generation(ih->engine);
            char *value = NULL;
            size_t value_len = 0;
            sl_err err = sl_engine_global_get(ih->engine, ih->await_globals[i], user_id,
                                              strlen(user_id), &value, &value_len);
            free(value);
            if (err == SL_OK)
                break;
            if (sl_engine_await_applied(ih->engine, generation, deadline) == SL_ERR_TIMEOUT)
                return false;
        }
    }
    return true;
}

static void handle_register(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_identity_http *ih = opaque;
    char message[256], ipkey[80];
    sl_register_req *body = malloc(sizeof(*body));
    if (!body) {
        http_fail(ih, req, resp, 500, "out of memory", 0);
        return;
    }
    size_t len = 0;
    const char *raw = sl_http_request_body(req, &len);
    const char *key = sl_http_request_header(req, "Idempotency-Key");
    bool bad_key = key && !sl_idempotency_key_valid(key);
    char hash[SL_PASSWORD_ENCODED_MAX];
    if (bad_key) {
        http_fail(ih, req, resp, 400, "Idempotency-Key: 1 to 255 visible ASCII characters", 0);
        goto done_clear;
    }
    if (sl_register_req_parse(raw, len, body, message, sizeof(message))) {
        http_fail(ih, req, resp, 400, message, 0);
        goto done;
    }
    if (throttled(ih, req, resp, ih->per_ip, client_key(req, ipkey, sizeof(ipkey))))
        goto done_clear;

    /* Ids first (they need the password), then hash and wipe it. */
    char command_id[64], user_id[SL_UUID_LEN + 1];
    if (key) {
        unsigned char digest[32];
        size_t klen = strlen(key), elen = strlen(body->email);
        size_t n = klen + 1 + elen + 1 + body->password_len;
        char *material = malloc(n);
        sl_err err = material ? SL_OK : SL_ERR_NOMEM;
        if (!err) {
            memcpy(material, key, klen + 1);
            memcpy(material + klen + 1, body->email, elen + 1);
            memcpy(material + klen + 1 + elen + 1, body->password, body->password_len);
            err = mac_id(ih, "register/command", material, n, command_id, sizeof(command_id),
                         digest);
            explicit_bzero(material, n);
            free(material);
        }
        if (!err)
            err = sl_jwt_keys_mac(ih->keys, "register/user", command_id, strlen(command_id),
                                  digest);
        if (err) {
            http_fail(ih, req, resp, 500, "cannot derive the command id", 0);
            goto done_clear;
        }
        sl_uuid_from_digest(digest, user_id);
    } else if (random_command_id(command_id) || sl_uuid_v4(user_id)) {
        http_fail(ih, req, resp, 500, "no randomness", 0);
        goto done_clear;
    }
    sl_err err = sl_password_pool_hash_wait(ih->pool, body->password, body->password_len,
                                            ih->hash_timeout_ms, hash, sizeof(hash));
    explicit_bzero(body->password, sizeof(body->password));
    if (err) {
        http_fail(ih, req, resp, 503,
              err == SL_ERR_FULL ? "too many passwords are being hashed; retry later"
                                 : "the password could not be hashed now",
              SL_RESPOND_RETRY_AFTER_S);
        goto done_clear;
    }

    char record_key[SL_IDENTITY_MAX_EMAIL + 4];
    if (body->email[0])
        snprintf(record_key, sizeof(record_key), "%s", body->email);
    else
        snprintf(record_key, sizeof(record_key), "id:%s", user_id);
    register_command command = {
        .req = body, .command_id = command_id, .user_id = user_id, .password_hash = hash};
    Sluice__V1__Reply *reply = NULL;
    err = sl_gateway_request(ih->gateway, ih->users_topic, record_key, strlen(record_key),
                             encode_register, &command, &reply);
    explicit_bzero(hash, sizeof(hash));
    if (err) {
        request_failed(ih, req, resp, err, "the registration");
        goto done_clear;
    }
    if (strcmp(reply->type, "sluice.v1.UserRegistered") == 0) {
        Sluice__V1__UserRegistered *ev =
            sluice__v1__user_registered__unpack(NULL, reply->payload.len, reply->payload.data);
        token_pair *pair = ev ? malloc(sizeof(*pair)) : NULL;
        if (ev && !registration_visible(ih, ev->user_id)) {
            http_fail(ih, req, resp, 503,
                      "registered, but not yet readable on every instance; retry with the same "
                      "Idempotency-Key, or log in",
                      SL_RESPOND_RETRY_AFTER_S);
        } else if (!pair || issue_pair(ih, ev->user_id, NULL, NULL, 0, pair)) {
            http_fail(ih, req, resp, 500, "registered, but the tokens could not be issued: log in", 0);
        } else {
            json_t *root = pair_json(ih, pair);
            json_object_set_new(root, "user_id", json_string(ev->user_id));
            answer_json(ih, req, resp, 200, root);
        }
        if (pair) {
            explicit_bzero(pair, sizeof(*pair));
            free(pair);
        }
        sluice__v1__user_registered__free_unpacked(ev, NULL);
    } else if (strcmp(reply->type, "sluice.v1.RegistrationRejected") == 0) {
        Sluice__V1__RegistrationRejected *ev = sluice__v1__registration_rejected__unpack(
            NULL, reply->payload.len, reply->payload.data);
        if (!ev)
            http_fail(ih, req, resp, 500, "undecodable outcome", 0);
        else if (ev->reason == SLUICE__V1__REGISTRATION_REJECTED__REASON__EMAIL_TAKEN)
            http_fail(ih, req, resp, 409, "email is already registered", 0);
        else if (ev->reason == SLUICE__V1__REGISTRATION_REJECTED__REASON__USER_ID_TAKEN)
            http_fail(ih, req, resp, 409, "user id is already taken", 0);
        else
            http_fail(ih, req, resp, 400, ev->detail && ev->detail[0] ? ev->detail : "invalid data",
                  0);
        sluice__v1__registration_rejected__free_unpacked(ev, NULL);
    } else {
        http_fail(ih, req, resp, 500, "unexpected outcome", 0);
    }
    sl_reply_free(reply);
done_clear:
    sl_register_req_clear(body);
done:
    free(body);
}

static void handle_login(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_identity_http *ih = opaque;
    char message[256], ipkey[80];
    sl_login_req *body = malloc(sizeof(*body));
    if (!body) {
        http_fail(ih, req, resp, 500, "out of memory", 0);
        return;
    }
    size_t len = 0;
    const char *raw = sl_http_request_body(req, &len);
    char *value = NULL;
    size_t value_len = 0;
    Sluice__V1__UserRecord *user = NULL;
    if (sl_login_req_parse(raw, len, body, message, sizeof(message))) {
        http_fail(ih, req, resp, 400, message, 0);
        goto done;
    }
    /* Only a hop signed by an instance of this cluster skips the per-address
     * throttle (the instance that received it applied it to the client). */
    bool forwarded = sl_gateway_forwarded(ih->gateway, req);
    if (!forwarded && throttled(ih, req, resp, ih->per_ip, client_key(req, ipkey, sizeof(ipkey))))
        goto done;
    const char *store = body->email[0] ? SL_IDENTITY_STORE_USERS_BY_EMAIL
                                       : SL_IDENTITY_STORE_USERS_BY_ID;
    const char *key = body->email[0] ? body->email : body->user_id;
    sl_gateway_outcome outcome =
        sl_gateway_get(ih->gateway, req, resp, store, key, strlen(key), &value, &value_len);
    if (outcome == SL_GATEWAY_ANSWERED)
        goto done; /* forwarded to the owner, or 503 */
    if (outcome == SL_GATEWAY_LOCAL) {
        user = sluice__v1__user_record__unpack(NULL, value_len, (const uint8_t *)value);
        if (!user)
            logf_(ih, SL_LOG_ERROR, "%s: undecodable user record (request %s)", store,
                  sl_http_request_id(req));
    }
    char account[SL_IDENTITY_MAX_EMAIL + 8];
    sl_throttle_account_key(account, sizeof(account), user ? user->user_id : NULL, key);
    if (throttled(ih, req, resp, ih->per_account, account))
        goto done;
    bool match = false;
    sl_err err = sl_password_pool_verify_wait(ih->pool, body->password, body->password_len,
                                              user ? user->password_hash : NULL,
                                              ih->hash_timeout_ms, &match);
    explicit_bzero(body->password, sizeof(body->password));
    if (err && err != SL_ERR_INVALID) {
        http_fail(ih, req, resp, 503,
              err == SL_ERR_FULL ? "too many logins are being checked; retry later"
                                 : "the password could not be checked now",
              SL_RESPOND_RETRY_AFTER_S);
        goto done;
    }
    if (!match || !user) {
        sl_throttle_failure(ih->per_account, account, sl_clock_mono_ms());
        if (!forwarded)
            sl_throttle_failure(ih->per_ip, ipkey, sl_clock_mono_ms());
        http_fail(ih, req, resp, 401, MSG_BAD_CREDENTIALS, 0);
        goto done;
    }
    sl_throttle_success(ih->per_account, account);
    token_pair *pair = malloc(sizeof(*pair));
    if (!pair || issue_pair(ih, user->user_id, NULL, NULL, 0, pair)) {
        http_fail(ih, req, resp, 500, "the tokens could not be issued", 0);
    } else {
        json_t *root = pair_json(ih, pair);
        json_object_set_new(root, "user_id", json_string(user->user_id));
        answer_json(ih, req, resp, 200, root);
    }
    if (pair) {
        explicit_bzero(pair, sizeof(*pair));
        free(pair);
    }
done:
    sluice__v1__user_record__free_unpacked(user, NULL);
    if (value) {
        explicit_bzero(value, value_len); /* it holds a password hash */
        free(value);
    }
    sl_login_req_clear(body);
    free(body);
}

static sl_err revoke_user_sessions(sl_identity_http *ih, const char *user_id,
                                   const char *keep_sid);

typedef struct password_command {
    const char *command_id;
    const Sluice__V1__UserRecord *user;
    const char *new_hash;
} password_command;

static sl_err encode_password(void *opaque, const Sluice__V1__CommandMeta *meta, void **value,
                              size_t *value_len) {
    const password_command *c = opaque;
    Sluice__V1__CommandMeta m = *meta;
    m.command_id = (char *)c->command_id;
    Sluice__V1__ChangePassword change = SLUICE__V1__CHANGE_PASSWORD__INIT;
    change.meta = &m;
    change.user_id = c->user->user_id;
    change.email = c->user->email;
    change.new_password_hash = (char *)c->new_hash;
    change.current_password_hash = c->user->password_hash;
    Sluice__V1__UsersCommand command = SLUICE__V1__USERS_COMMAND__INIT;
    command.command_case = SLUICE__V1__USERS_COMMAND__COMMAND_CHANGE_PASSWORD;
    command.change_password = &change;
    return sl_command_pack(&command, value, value_len);
}

/* The outcome of a ChangePassword: true with *changed_at_ms, or false
 * after answering the rejection. */
static bool password_changed(sl_identity_http *ih, const sl_http_request *req,
                             sl_http_response *resp, const Sluice__V1__Reply *reply,
                             int64_t *changed_at_ms) {
    if (strcmp(reply->type, "sluice.v1.PasswordChanged") == 0) {
        Sluice__V1__PasswordChanged *ev =
            sluice__v1__password_changed__unpack(NULL, reply->payload.len, reply->payload.data);
        if (!ev) {
            http_fail(ih, req, resp, 500, "undecodable outcome", 0);
            return false;
        }
        *changed_at_ms = ev->changed_at_ms;
        sluice__v1__password_changed__free_unpacked(ev, NULL);
        return true;
    }
    Sluice__V1__PasswordChangeRejected *ev =
        strcmp(reply->type, "sluice.v1.PasswordChangeRejected") == 0
            ? sluice__v1__password_change_rejected__unpack(NULL, reply->payload.len,
                                                           reply->payload.data)
            : NULL;
    if (!ev)
        http_fail(ih, req, resp, 500, "unexpected outcome", 0);
    else if (ev->reason == SLUICE__V1__PASSWORD_CHANGE_REJECTED__REASON__CURRENT_CHANGED)
        http_fail(ih, req, resp, 409, "the password was changed meanwhile; nothing changed", 0);
    else if (ev->reason == SLUICE__V1__PASSWORD_CHANGE_REJECTED__REASON__NOT_FOUND)
        http_fail(ih, req, resp, 404, "user not found", 0);
    else
        http_fail(ih, req, resp, 400, ev->detail && ev->detail[0] ? ev->detail : "invalid data", 0);
    sluice__v1__password_change_rejected__free_unpacked(ev, NULL);
    return false;
}

/* POST /user/password {"current_password", "new_password"} with the
 * caller's Bearer access token. Answered by the owner of the user's
 * users-by-id partition (forwarded there): the current password is checked
 * against the stored hash (throttled like a login), the new one hashed,
 * and ChangePassword carries the checked hash so that two racing changes
 * cannot both win. Then every other session of the user ends
 * (RevokeUserSessions: every token issued up to now but the new session's)
 * and the caller gets a fresh pair in a new session. Answered once
 * users-by-id holds the change, so a login with the new password works at
 * once on any instance. */
static void handle_password(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_identity_http *ih = opaque;
    sl_jwt_claims claims;
    if (!authenticate(ih, req, resp, &claims, false))
        return;
    char message[256], ipkey[80], hash[SL_PASSWORD_ENCODED_MAX] = "";
    sl_password_req *body = malloc(sizeof(*body));
    char *value = NULL;
    size_t value_len = 0;
    Sluice__V1__UserRecord *user = NULL;
    Sluice__V1__Reply *reply = NULL;
    token_pair *pair = NULL;
    if (!body) {
        http_fail(ih, req, resp, 500, "out of memory", 0);
        return;
    }
    size_t len = 0;
    const char *raw = sl_http_request_body(req, &len);
    if (sl_password_req_parse(raw, len, body, message, sizeof(message))) {
        http_fail(ih, req, resp, 400, message, 0);
        goto done;
    }
    bool forwarded = sl_gateway_forwarded(ih->gateway, req);
    if (!forwarded && throttled(ih, req, resp, ih->per_ip, client_key(req, ipkey, sizeof(ipkey))))
        goto done;
    sl_gateway_outcome outcome =
        sl_gateway_get(ih->gateway, req, resp, SL_IDENTITY_STORE_USERS_BY_ID, claims.sub,
                       strlen(claims.sub), &value, &value_len);
    if (outcome == SL_GATEWAY_ANSWERED)
        goto done; /* forwarded to the owner, or 503 */
    if (outcome == SL_GATEWAY_LOCAL)
        user = sluice__v1__user_record__unpack(NULL, value_len, (const uint8_t *)value);
    if (!user) {
        http_fail(ih, req, resp, 401, "the token's user does not exist", 0);
        goto done;
    }
    char account[SL_IDENTITY_MAX_EMAIL + 8];
    sl_throttle_account_key(account, sizeof(account), user->user_id, claims.sub);
    if (throttled(ih, req, resp, ih->per_account, account))
        goto done;
    bool match = false;
    sl_err err = sl_password_pool_verify_wait(ih->pool, body->current, body->current_len,
                                              user->password_hash, ih->hash_timeout_ms, &match);
    if (!err && match)
        err = sl_password_pool_hash_wait(ih->pool, body->next, body->next_len, ih->hash_timeout_ms,
                                         hash, sizeof(hash));
    sl_password_req_clear(body);
    if (err && err != SL_ERR_INVALID) {
        http_fail(ih, req, resp, 503,
                  err == SL_ERR_FULL ? "too many passwords are being checked; retry later"
                                     : "the password could not be checked now",
                  SL_RESPOND_RETRY_AFTER_S);
        goto done;
    }
    if (!match) {
        sl_throttle_failure(ih->per_account, account, sl_clock_mono_ms());
        if (!forwarded)
            sl_throttle_failure(ih->per_ip, ipkey, sl_clock_mono_ms());
        http_fail(ih, req, resp, 403, "current_password is wrong", 0);
        goto done;
    }
    sl_throttle_success(ih->per_account, account);
    char command_id[64];
    password_command command = {.command_id = command_id, .user = user, .new_hash = hash};
    char record_key[SL_IDENTITY_MAX_EMAIL + 4 + SL_UUID_LEN];
    if (user->email[0])
        snprintf(record_key, sizeof(record_key), "%s", user->email);
    else
        snprintf(record_key, sizeof(record_key), "id:%s", user->user_id);
    err = random_command_id(command_id);
    if (!err)
        err = sl_gateway_request(ih->gateway, ih->users_topic, record_key, strlen(record_key),
                                 encode_password, &command, &reply);
    if (err) {
        request_failed(ih, req, resp, err, "the password change");
        goto done;
    }
    int64_t changed_at_ms = 0;
    if (!password_changed(ih, req, resp, reply, &changed_at_ms))
        goto done;
    /* Every other session ends; the caller goes on in a new one. */
    char sid[SL_JWT_RANDOM_ID_LEN + 1];
    if (sl_jwt_random_id(sid, sizeof(sid)) ||
        (err = revoke_user_sessions(ih, user->user_id, sid)) != SL_OK) {
        logf_(ih, SL_LOG_ERROR,
              "request %s: the password of user %.8s... changed, but its other sessions could "
              "not be ended",
              sl_http_request_id(req), user->user_id);
        http_fail(ih, req, resp, 503,
                  "the password was changed, but the other sessions could not be ended now; "
                  "log in with the new password and change it again",
                  SL_RESPOND_RETRY_AFTER_S);
        goto done;
    }
    /* Read-your-writes: users-by-id (one hop later) holds the change. */
    Sluice__V1__UserRecord probe = SLUICE__V1__USER_RECORD__INIT;
    probe.password_changed_at_ms = changed_at_ms;
    uint8_t needle[32];
    size_t needle_len = sluice__v1__user_record__get_packed_size(&probe);
    if (ih->visible_timeout_ms > 0 && needle_len <= sizeof(needle)) {
        sluice__v1__user_record__pack(&probe, needle);
        if (sl_gateway_await(ih->gateway, SL_IDENTITY_STORE_USERS_BY_ID, user->user_id,
                             strlen(user->user_id), needle, needle_len,
                             ih->visible_timeout_ms) != SL_OK) {
            http_fail(ih, req, resp, 503,
                      "the password was changed, but not every instance knows yet; log in "
                      "with the new password in a moment",
                      SL_RESPOND_RETRY_AFTER_S);
            goto done;
        }
    }
    pair = malloc(sizeof(*pair));
    if (!pair || issue_pair(ih, user->user_id, sid, NULL, 0, pair))
        http_fail(ih, req, resp, 500, "the password was changed; the tokens could not be issued: "
                                      "log in", 0);
    else
        answer_json(ih, req, resp, 200, pair_json(ih, pair));
done:
    if (pair) {
        explicit_bzero(pair, sizeof(*pair));
        free(pair);
    }
    sl_reply_free(reply);
    explicit_bzero(hash, sizeof(hash));
    if (user && user->password_hash)
        explicit_bzero(user->password_hash, strlen(user->password_hash));
    sluice__v1__user_record__free_unpacked(user, NULL);
    if (value) {
        explicit_bzero(value, value_len);
        free(value);
    }
    sl_password_req_clear(body);
    free(body);
}

static void handle_user_get(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_identity_http *ih = opaque;
    const char *param = sl_http_request_param(req, "id");
    char id[SL_UUID_LEN + 1];
    if (!param || strlen(param) != SL_UUID_LEN) {
        http_fail(ih, req, resp, 400, "id: not a user id", 0);
        return;
    }
    for (size_t i = 0; i <= SL_UUID_LEN; i++)
        id[i] = (param[i] >= 'A' && param[i] <= 'F') ? (char)(param[i] - 'A' + 'a') : param[i];
    if (!sl_uuid_valid(id)) {
        http_fail(ih, req, resp, 400, "id: not a user id", 0);
        return;
    }
    char *value = NULL;
    size_t value_len = 0;
    sl_gateway_outcome outcome = sl_gateway_get(ih->gateway, req, resp,
                                                SL_IDENTITY_STORE_USERS_BY_ID, id, strlen(id),
                                                &value, &value_len);
    if (outcome == SL_GATEWAY_ANSWERED)
        return;
    if (outcome == SL_GATEWAY_MISSING) {
        http_fail(ih, req, resp, 404, "user not found", 0);
        return;
    }
    Sluice__V1__UserRecord *user =
        sluice__v1__user_record__unpack(NULL, value_len, (const uint8_t *)value);
    explicit_bzero(value, value_len);
    free(value);
    if (!user) {
        http_fail(ih, req, resp, 500, "undecodable user record", 0);
        return;
    }
    Sluice__V1__Profile empty = SLUICE__V1__PROFILE__INIT;
    const Sluice__V1__Profile *p = user->profile ? user->profile : &empty;
    json_t *root = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id", user->user_id, "first_name",
                             p->first_name, "second_name", p->second_name, "birthdate",
                             p->birthdate, "biography", p->biography, "city", p->city);
    if (root && !p->birthdate[0])
        json_object_del(root, "birthdate"); /* format: date; absent rather than "" */
    answer_json(ih, req, resp, 200, root);
    sluice__v1__user_record__free_unpacked(user, NULL);
}

/* Revoke (jti set) a token or (jti NULL) a session through tokens.commands.
 * SL_OK with *already (revoked before by another command), or the error
 * answered through request_failed by the caller. */
/* Revoke a token (jti) or a session (jti NULL) through tokens.commands and
 * wait for the owner's answer: *already (another command id revoked it
 * first) and *revoked_at_ms (may be NULL: when the first revocation was
 * recorded). The command id is a MAC of `idempotent_on` when that is
 * non-NULL, so a retry of the request is the same command (the topology
 * answers it as the first time); random otherwise. */
static sl_err send_revoke(sl_identity_http *ih, const revoke_command *command, const char *key,
                          bool *already, int64_t *revoked_at_ms);

/* `rotated` (NULL but for a refresh token's rotation): the token, whose
 * sub and iat let the owner refuse the rotation of a user whose sessions
 * a password change ended. */
static sl_err revoke(sl_identity_http *ih, const char *jti, const char *sid, int64_t expires_at_s,
                     const char *reason, const char *idempotent_on, bool *already,
                     int64_t *revoked_at_ms, const sl_jwt_claims *rotated) {
    char command_id[64];
    unsigned char digest[32];
    sl_err err = idempotent_on ? mac_id(ih, jti ? "revoke-token" : "revoke-session",
                                        idempotent_on, strlen(idempotent_on), command_id,
                                        sizeof(command_id), digest)
                               : random_command_id(command_id);
    if (err)
        return SL_ERR_IO;
    revoke_command command = {.command_id = command_id,
                              .jti = jti,
                              .sid = sid,
                              .expires_at_ms = expires_at_s * 1000,
                              .reason = reason,
                              .user_id = rotated ? rotated->sub : NULL,
                              .issued_at_ms = rotated ? rotated->iat * 1000 : 0};
    return send_revoke(ih, &command, jti ? jti : sid, already, revoked_at_ms);
}

/* End every session of `user_id` but `keep_sid` (a password change). */
static sl_err revoke_user_sessions(sl_identity_http *ih, const char *user_id,
                                   const char *keep_sid) {
    char command_id[64];
    if (random_command_id(command_id))
        return SL_ERR_IO;
    revoke_command command = {.command_id = command_id,
                              .sid = keep_sid,
                              .expires_at_ms = (now_s() + ih->refresh_ttl_s) * 1000,
                              .reason = "password changed",
                              .user_id = user_id};
    bool already;
    return send_revoke(ih, &command, user_id, &already, NULL);
}

static sl_err send_revoke(sl_identity_http *ih, const revoke_command *command, const char *key,
                          bool *already, int64_t *revoked_at_ms) {
    Sluice__V1__Reply *reply = NULL;
    sl_err err = sl_gateway_request(ih->gateway, ih->tokens_topic, key, strlen(key), encode_revoke,
                                    (void *)command, &reply);
    if (err)
        return err;
    *already = false;
    if (strcmp(reply->type, "sluice.v1.TokenRevoked") == 0) {
        Sluice__V1__TokenRevoked *ev =
            sluice__v1__token_revoked__unpack(NULL, reply->payload.len, reply->payload.data);
        if (!ev)
            err = SL_ERR_INVALID;
        else
            *already = ev->already_revoked;
        if (ev && revoked_at_ms)
            *revoked_at_ms = ev->revoked_at_ms;
        sluice__v1__token_revoked__free_unpacked(ev, NULL);
    } else {
        err = SL_ERR_INVALID; /* a rejection: a malformed command of ours */
    }
    sl_reply_free(reply);
    return err;
}

static void handle_refresh(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_identity_http *ih = opaque;
    char message[256];
    size_t len = 0;
    const char *raw = sl_http_request_body(req, &len);
    char *token = malloc(SL_IDREQ_TOKEN_MAX + 1);
    if (!token) {
        http_fail(ih, req, resp, 500, "out of memory", 0);
        return;
    }
    sl_jwt_claims claims;
    const char *why = NULL;
    int status;
    bool already = false;
    if (sl_token_req_parse(raw, len, false, "refresh_token", token, SL_IDREQ_TOKEN_MAX + 1,
                           message, sizeof(message))) {
        http_fail(ih, req, resp, 400, message, 0);
        goto done;
    }
    bool revoked = false;
    if ((status = check_token(ih, token, SL_JWT_REFRESH, &claims, &why, &revoked)) && !revoked) {
        http_fail(ih, req, resp, status, why, status == 503 ? SL_RESPOND_RETRY_AFTER_S : 0);
        goto done;
    }
    /* A revoked session is final. A revoked token may be a retry of its own
     * rotation: the rotation's command id derives from the jti, so the
     * owner of the jti answers a retry as it answered the first request
     * (already_revoked false, the first rotation's time). Within
     * identity.refresh.retry.grace.ms that is the same answer, the same
     * pair; after it, or when another command revoked the token, the token
     * was used before (stolen or replayed). */
    bool session_revoked = false;
    sl_err err = revoked ? sl_identity_token_revoked(ih->engine, NULL, claims.sid,
                                                     &session_revoked)
                         : SL_OK;
    if (!err && revoked && !session_revoked) /* ended by a password change */
        err = sl_identity_user_revoked(ih->engine, claims.sub, claims.sid, claims.iat,
                                       &session_revoked);
    int64_t rotated_at_ms = 0;
    if (!err && !session_revoked)
        err = revoke(ih, claims.jti, claims.sid, claims.exp, SL_IDENTITY_REASON_ROTATED, claims.jti,
                     &already, &rotated_at_ms, &claims);
    if (err) {
        request_failed(ih, req, resp, err, "the refresh");
        goto done;
    }
    int64_t now_ms = sl_clock_wall_ms();
    bool past_grace = rotated_at_ms > 0 && now_ms - rotated_at_ms > ih->refresh_grace_ms;
    if (session_revoked || already || past_grace) {
        /* This refresh token was rotated before: someone replays it. */
        logf_(ih, SL_LOG_WARN, "refresh token reuse for session %.8s...: revoking the session "
                               "(request %s)", claims.sid, sl_http_request_id(req));
        err = revoke(ih, NULL, claims.sid, now_s() + ih->refresh_ttl_s, "refresh token reuse",
                     NULL, &already, NULL, NULL);
        if (err) {
            request_failed(ih, req, resp, err, "the refresh");
            goto done;
        }
        http_fail(ih, req, resp, 401,
                  "refresh token was revoked or already used: the session is revoked", 0);
        goto done;
    }
    rotation rotated;
    token_pair *pair = malloc(sizeof(*pair));
    /* The session's age carries over: a token from before auth_time
     * existed counts from its own iat. */
    int64_t auth_time = claims.auth_time ? claims.auth_time : claims.iat;
    err = !pair
              ? SL_ERR_NOMEM
              : rotation_init(ih, claims.jti, rotated_at_ms > 0 ? rotated_at_ms : now_ms, &rotated);
    if (!err)
        err = issue_pair(ih, claims.sub, claims.sid, &rotated, auth_time, pair);
    if (err == SL_ERR_TIMEOUT)
        http_fail(ih, req, resp, 401, sl_jwt_error_msg(SL_JWT_ERR_SESSION_TOO_OLD), 0);
    else if (err)
        http_fail(ih, req, resp, 500, "the tokens could not be issued", 0);
    else
        answer_json(ih, req, resp, 200, pair_json(ih, pair));
    if (pair) {
        explicit_bzero(pair, sizeof(*pair));
        free(pair);
    }
done:
    explicit_bzero(token, SL_IDREQ_TOKEN_MAX + 1);
    free(token);
}

static void handle_logout(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_identity_http *ih = opaque;
    sl_jwt_claims claims;
    /* Idempotent: a retry (the token is revoked by the first attempt, or
     * the first attempt's answer was lost) is the same two commands, with
     * command ids derived from the token's jti, and answers 204 again. */
    if (!authenticate(ih, req, resp, &claims, true))
        return;
    bool already = false;
    sl_err err =
        revoke(ih, claims.jti, claims.sid, claims.exp, "logout", claims.jti, &already, NULL, NULL);
    /* The session outlives every token of it: the newest refresh token of
     * the session expires at most refresh_ttl from now. */
    if (!err)
        err = revoke(ih, NULL, claims.sid, now_s() + ih->refresh_ttl_s, "logout", claims.jti,
                     &already, NULL, NULL);
    if (err) {
        request_failed(ih, req, resp, err, "the logout");
        return;
    }
    sl_http_respond(resp, 204, NULL, NULL, 0);
}

static void handle_introspect(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_identity_http *ih = opaque;
    sl_jwt_claims caller;
    /* RFC 7662 2.1: the endpoint requires authorization; any valid access
     * token will do (a token reveals nothing its holder cannot decode). */
    if (!sl_identity_http_authenticate(ih, req, resp, &caller))
        return;
    const char *type = sl_http_request_header(req, "Content-Type");
    bool form = type && strncasecmp(type, "application/x-www-form-urlencoded", 33) == 0;
    size_t len = 0;
    const char *raw = sl_http_request_body(req, &len);
    char message[256];
    char *token = malloc(SL_IDREQ_TOKEN_MAX + 1);
    if (!token) {
        http_fail(ih, req, resp, 500, "out of memory", 0);
        return;
    }
    if (sl_token_req_parse(raw, len, form, "token", token, SL_IDREQ_TOKEN_MAX + 1, message,
                           sizeof(message))) {
        http_fail(ih, req, resp, 400, message, 0);
        goto done;
    }
    sl_jwt_claims claims;
    const char *why = NULL;
    sl_jwt_typ typ = SL_JWT_ACCESS;
    int status = check_token(ih, token, typ, &claims, &why, NULL);
    if (status == 401) {
        typ = SL_JWT_REFRESH;
        status = check_token(ih, token, typ, &claims, &why, NULL);
    }
    if (status == 503 || status == 500) {
        http_fail(ih, req, resp, status, why, status == 503 ? SL_RESPOND_RETRY_AFTER_S : 0);
        goto done;
    }
    json_t *root;
    if (status)
        root = json_pack("{s:b}", "active", 0);
    else
        root = json_pack("{s:b, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "active", 1,
                         "token_type", typ == SL_JWT_ACCESS ? "access_token" : "refresh_token",
                         "sub", claims.sub, "sid", claims.sid, "jti", claims.jti, "iss",
                         claims.iss, "aud", claims.aud, "exp", (json_int_t)claims.exp, "iat",
                         (json_int_t)claims.iat);
    answer_json(ih, req, resp, 200, root);
done:
    explicit_bzero(token, SL_IDREQ_TOKEN_MAX + 1);
    free(token);
}

static void handle_jwks(void *opaque, const sl_http_request *req, sl_http_response *resp) {
    sl_identity_http *ih = opaque;
    size_t len = 0;
    const char *jwks = sl_jwt_jwks_json(ih->keys, &len);
    if (sl_http_respond(resp, 200, "application/json", jwks, len))
        http_fail(ih, req, resp, 500, "out of memory", 0);
    else
        sl_http_response_header(resp, "Cache-Control", "public, max-age=300");
}

/* ---- construction ------------------------------------------------------------- */

static sl_err load_keys(sl_identity_http *ih, char *errstr, size_t errstr_size) {
    const char *path = sl_config_get(ih->config, "identity.key.file");
    const char *previous = sl_config_get(ih->config, "identity.key.previous.file");
    char generated[PATH_MAX];
    if (!path || !path[0]) {
        const char *state_dir = sl_config_get(ih->config, "state.dir");
        const char *app = sl_config_get(ih->config, "application.id");
        if (snprintf(generated, sizeof(generated), "%s/%s", state_dir, app) >=
            (int)sizeof(generated))
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir is too long");
        /* state.dir/<app> may not exist yet: the engine creates it later. */
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", state_dir);
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot create %s: %s", dir,
                           strerror(errno));
        if (mkdir(generated, 0700) != 0 && errno != EEXIST)
            return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot create %s: %s", generated,
                           strerror(errno));
        size_t n = strlen(generated);
        if (snprintf(generated + n, sizeof(generated) - n, "/token-signing-key.pem") >=
            (int)(sizeof(generated) - n))
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir is too long");
        const char *alg_name = sl_config_get(ih->config, "identity.key.alg");
        sl_jwt_alg alg = alg_name && strcmp(alg_name, "ES256") == 0 ? SL_JWT_ES256 : SL_JWT_RS256;
        bool created = false;
        sl_err err = sl_jwt_key_generate(generated, alg, &created, errstr, errstr_size);
        if (err)
            return err;
        if (created)
            logf_(ih, SL_LOG_WARN,
                  "generated a token signing key in the state dir (set identity.key.file, the "
                  "same on every instance, for more than one instance)");
        path = generated;
    }
    ih->keys = sl_jwt_keys_load(path, previous && previous[0] ? previous : NULL, errstr,
                                errstr_size);
    if (!ih->keys)
        return SL_ERR_CONFIG;
    logf_(ih, SL_LOG_INFO, "token signing key %s (%s)%s%s", sl_jwt_keys_current_kid(ih->keys),
          sl_jwt_keys_alg(ih->keys) == SL_JWT_ES256 ? "ES256" : "RS256",
          sl_jwt_keys_previous_kid(ih->keys) ? ", previous key " : "",
          sl_jwt_keys_previous_kid(ih->keys) ? sl_jwt_keys_previous_kid(ih->keys) : "");
    return SL_OK;
}

sl_identity_http *sl_identity_http_new(const sl_config *config, sl_gateway *gateway,
                                       const sl_logger *logger, char *errstr,
                                       size_t errstr_size) {
    sl_identity_http *ih = calloc(1, sizeof(*ih));
    if (!ih) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    ih->config = config;
    ih->gateway = gateway;
    ih->engine = sl_gateway_engine(gateway);
    ih->logger = logger;
    snprintf(ih->iss, sizeof(ih->iss), "%s", sl_config_get(config, "identity.token.issuer"));
    snprintf(ih->aud, sizeof(ih->aud), "%s", sl_config_get(config, "identity.token.audience"));
    ih->access_ttl_s = sl_config_get_int(config, "identity.token.access.ttl.s");
    ih->refresh_ttl_s = sl_config_get_int(config, "identity.token.refresh.ttl.s");
    ih->leeway_s = sl_config_get_int(config, "identity.token.leeway.s");
    ih->refresh_grace_ms = sl_config_get_int(config, "identity.refresh.retry.grace.ms");
    ih->session_max_s = sl_config_get_int(config, "identity.session.max.s");
    ih->hash_timeout_ms = (int)sl_config_get_int(config, "identity.argon2.timeout.ms");
    ih->visible_timeout_ms = (int)sl_config_get_int(config, "identity.register.visible.timeout.ms");
    sl_identity_options options;
    sl_identity_options_from_config(&options, config);
    snprintf(ih->users_topic, sizeof(ih->users_topic), "%susers.commands", options.topic_prefix);
    snprintf(ih->tokens_topic, sizeof(ih->tokens_topic), "%stokens.commands",
             options.topic_prefix);
    sl_argon2_params params = {
        .m_cost_kib = (uint32_t)sl_config_get_int(config, "identity.argon2.memory.kib"),
        .t_cost = (uint32_t)sl_config_get_int(config, "identity.argon2.passes"),
        .parallelism = (uint32_t)sl_config_get_int(config, "identity.argon2.parallelism")};
    if (load_keys(ih, errstr, errstr_size))
        goto fail;
    ih->cache = sl_jwt_cache_new((size_t)sl_config_get_int(config, "identity.token.cache.entries"),
                                 errstr, errstr_size);
    if (!ih->cache)
        goto fail;
    ih->pool = sl_password_pool_new((int)sl_config_get_int(config, "identity.argon2.threads"),
                                    (int)sl_config_get_int(config, "identity.argon2.queue"),
                                    &params, errstr, errstr_size);
    if (!ih->pool)
        goto fail;
    sl_throttle_config per_ip = sl_throttle_config_per_ip;
    per_ip.burst = (uint32_t)sl_config_get_int(config, "identity.throttle.ip.burst");
    per_ip.refill_ms = (uint32_t)sl_config_get_int(config, "identity.throttle.ip.refill.ms");
    sl_throttle_config per_account = sl_throttle_config_per_account;
    per_account.burst = (uint32_t)sl_config_get_int(config, "identity.throttle.account.burst");
    per_account.refill_ms =
        (uint32_t)sl_config_get_int(config, "identity.throttle.account.refill.ms");
    ih->per_ip = sl_throttle_new(&per_ip, errstr, errstr_size);
    if (!ih->per_ip)
        goto fail;
    ih->per_account = sl_throttle_new(&per_account, errstr, errstr_size);
    if (!ih->per_account)
        goto fail;
    return ih;
fail:
    sl_identity_http_destroy(ih);
    return NULL;
}

sl_err sl_identity_http_routes(sl_identity_http *ih, sl_http_server *http) {
    sl_err err;
    if ((err = sl_http_route(http, "POST", "/user/register", handle_register, ih)) ||
        (err = sl_http_route(http, "POST", "/login", handle_login, ih)) ||
        (err = sl_http_route(http, "GET", "/user/get/{id}", handle_user_get, ih)) ||
        (err = sl_http_route(http, "POST", "/auth/refresh", handle_refresh, ih)) ||
        (err = sl_http_route(http, "POST", "/auth/logout", handle_logout, ih)) ||
        (err = sl_http_route(http, "POST", "/user/password", handle_password, ih)) ||
        (err = sl_http_route(http, "POST", "/auth/introspect", handle_introspect, ih)) ||
        (err = sl_http_route(http, "GET", "/.well-known/jwks.json", handle_jwks, ih)))
        return err;
    return SL_OK;
}

void sl_identity_http_destroy(sl_identity_http *ih) {
    if (!ih)
        return;
    sl_password_pool_destroy(ih->pool);
    sl_throttle_destroy(ih->per_ip);
    sl_throttle_destroy(ih->per_account);
    sl_jwt_cache_destroy(ih->cache);
    sl_jwt_keys_destroy(ih->keys);
    free(ih);
}
