/*
 * identity_requests.c: parsing and validation of identity HTTP requests. See
 * identity_requests.h for the contract; the notes here are about why.
 *
 * jansson (2.14 in bookworm) nests up to 2048 levels before it refuses a
 * document; our bodies are flat objects, so a cheap byte scan bounds the
 * nesting first and jansson never builds a deep tree for an attacker.
 */
#include "connectors/http/identity_requests.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- dates ----------------------------------------------------------------- */

bool sl_birthdate_valid(const char *s) {
    if (!sl_date_valid(s) || strncmp(s, "1900", 4) < 0)
        return false;
    time_t now = time(NULL);
    struct tm today;
    gmtime_r(&now, &today);
    char today_text[40]; /* room for any int, so -O2 sees no truncation */
    snprintf(today_text, sizeof(today_text), "%04d-%02d-%02d", today.tm_year + 1900,
             today.tm_mon + 1, today.tm_mday);
    return strcmp(s, today_text) <= 0; /* same-width ISO dates sort as text */
}

/* ---- JSON ------------------------------------------------------------------ */

static sl_err __attribute__((format(printf, 3, 4)))
say(char *message, size_t message_size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, message_size, fmt, ap);
    va_end(ap);
    return SL_ERR_INVALID;
}

json_t *sl_json_object_parse(const char *body, size_t len, char *message, size_t message_size) {
    if (!body || len == 0) {
        say(message, message_size, "%s", "request body is empty: a JSON object is expected");
        return NULL;
    }
    if (!sl_json_depth_ok(body, len, SL_IDREQ_MAX_DEPTH)) {
        say(message, message_size, "%s", "request body is nested too deeply");
        return NULL;
    }
    json_error_t error;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &error);
    if (!root) {
        say(message, message_size, "%s", "request body is not valid JSON");
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        say(message, message_size, "%s", "request body must be a JSON object");
        return NULL;
    }
    return root;
}

/* Copy optional string field `name` into out (max bytes). Absent or null:
 * "". A non-string, too long or invalid text: SL_ERR_INVALID. */
static sl_err get_text(json_t *root, const char *name, char *out, size_t max, bool multiline,
                       char *message, size_t message_size) {
    out[0] = '\0';
    json_t *v = json_object_get(root, name);
    if (!v || json_is_null(v))
        return SL_OK;
    if (!json_is_string(v)) {
        snprintf(message, message_size, "%s: must be a string", name);
        return SL_ERR_INVALID;
    }
    size_t len = json_string_length(v);
    if (len > max) {
        snprintf(message, message_size, "%s: longer than %zu bytes", name, max);
        return SL_ERR_INVALID;
    }
    const char *s = json_string_value(v);
    if (!sl_text_valid(s, len, multiline)) {
        snprintf(message, message_size, "%s: contains control characters or a NUL byte", name);
        return SL_ERR_INVALID;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return SL_OK;
}

static sl_err get_new_password(json_t *root, const char *field, char *out, size_t *out_len,
                               char *message, size_t message_size) {
    json_t *v = json_object_get(root, field);
    if (!v || !json_is_string(v))
        return say(message, message_size, "%s: a string is required", field);
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (len > SL_PASSWORD_MAX_LEN)
        return say(message, message_size, "%s: longer than %d bytes", field, SL_PASSWORD_MAX_LEN);
    /* Any Unicode is allowed (ASVS 5.0 6.2.9), NUL is not: argon2 hashes
     * bytes, and a NUL would make C strings disagree with the hash. */
    if (memchr(s, '\0', len) || !sl_text_valid(s, len, true) ||
        sl_utf8_chars(s, len) < SL_IDREQ_PASSWORD_MIN)
        return say(message, message_size, "%s: at least %d characters of valid UTF-8", field,
                   SL_IDREQ_PASSWORD_MIN);
    memcpy(out, s, len);
    out[len] = '\0';
    *out_len = len;
    return SL_OK;
}

/* A password that may be stored already (a login, the current password of
 * a change): only its shape is checked, so a password set under an older,
 * shorter minimum still logs in. */
static sl_err get_stored_password(json_t *root, const char *field, char *out, size_t *out_len,
                                  char *message, size_t message_size) {
    json_t *v = json_object_get(root, field);
    size_t len = v && json_is_string(v) ? json_string_length(v) : 0;
    if (!v || !json_is_string(v) || len == 0 || len > SL_PASSWORD_MAX_LEN ||
        memchr(json_string_value(v), '\0', len))
        return say(message, message_size, "%s: a non-empty string is required", field);
    memcpy(out, json_string_value(v), len);
    out[len] = '\0';
    *out_len = len;
    return SL_OK;
}

static sl_err get_email(json_t *root, char *out, char *message, size_t message_size) {
    char raw[SL_IDENTITY_MAX_EMAIL * 2 + 1];
    sl_err err = get_text(root, "email", raw, sizeof(raw) - 1, false, message, message_size);
    if (err)
        return err;
    if (!raw[0]) {
        out[0] = '\0';
        return SL_OK;
    }
    const char *why = NULL;
    if (sl_email_normalize_why(raw, strlen(raw), out, SL_IDENTITY_MAX_EMAIL + 1, &why))
        return say(message, message_size, "%s", why);
    return SL_OK;
}

bool sl_idempotency_key_valid(const char *key) {
    size_t len = strlen(key);
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++)
        if (key[i] < 0x21 || key[i] > 0x7e)
            return false;
    return true;
}

void sl_register_req_clear(sl_register_req *req) {
    explicit_bzero(req, sizeof(*req));
}

void sl_login_req_clear(sl_login_req *req) {
    explicit_bzero(req, sizeof(*req));
}

/* jansson keeps its own copy of the body's strings: wipe the passwords in
 * it before the tree is freed. */
static void wipe_and_free(json_t *root) {
    static const char *const secret[] = {"password", "current_password", "new_password", NULL};
    for (const char *const *field = secret; *field; field++) {
        json_t *v = json_object_get(root, *field);
        if (v && json_is_string(v))
            explicit_bzero((char *)json_string_value(v), json_string_length(v));
    }
    json_decref(root);
}

sl_err sl_register_req_parse(const char *body, size_t len, sl_register_req *out, char *message,
                             size_t message_size) {
    sl_register_req_clear(out);
    json_t *root = sl_json_object_parse(body, len, message, message_size);
    if (!root)
        return SL_ERR_INVALID;
    sl_err err;
    if ((err = get_text(root, "first_name", out->first_name, SL_IDENTITY_MAX_NAME, false, message,
                        message_size)) ||
        (err = get_text(root, "second_name", out->second_name, SL_IDENTITY_MAX_NAME, false, message,
                        message_size)) ||
        (err = get_text(root, "birthdate", out->birthdate, 10, false, message, message_size)) ||
        (err = get_text(root, "biography", out->biography, SL_IDENTITY_MAX_BIOGRAPHY, true, message,
                        message_size)) ||
        (err = get_text(root, "city", out->city, SL_IDENTITY_MAX_NAME, false, message,
                        message_size)) ||
        (err = get_email(root, out->email, message, message_size)) ||
        (err = get_new_password(root, "password", out->password, &out->password_len, message,
                                message_size)))
        goto done;
    if (!out->first_name[0] || !out->second_name[0]) {
        err = say(message, message_size, "%s",
                  out->first_name[0] ? "second_name: required" : "first_name: required");
        goto done;
    }
    if (out->birthdate[0] && !sl_birthdate_valid(out->birthdate)) {
        err = say(message, message_size, "%s",
                  "birthdate: must be a past date written YYYY-MM-DD");
        goto done;
    }
done:
    wipe_and_free(root);
    if (err)
        sl_register_req_clear(out);
    return err;
}

sl_err sl_login_req_parse(const char *body, size_t len, sl_login_req *out, char *message,
                          size_t message_size) {
    sl_login_req_clear(out);
    json_t *root = sl_json_object_parse(body, len, message, message_size);
    if (!root)
        return SL_ERR_INVALID;
    char id[SL_UUID_LEN * 2 + 1];
    sl_err err;
    if ((err = get_text(root, "id", id, sizeof(id) - 1, false, message, message_size)) ||
        (err = get_email(root, out->email, message, message_size)))
        goto done;
    if (!id[0] == !out->email[0]) {
        err = say(message, message_size, "%s", "exactly one of id and email is required");
        goto done;
    }
    if (id[0]) {
        for (char *c = id; *c; c++)
            if (*c >= 'A' && *c <= 'F')
                *c = (char)(*c - 'A' + 'a');
        if (!sl_uuid_valid(id)) {
            err = say(message, message_size, "%s", "id: not a user id");
            goto done;
        }
        memcpy(out->user_id, id, SL_UUID_LEN + 1);
    }
    err = get_stored_password(root, "password", out->password, &out->password_len, message,
                              message_size);
done:
    wipe_and_free(root);
    if (err)
        sl_login_req_clear(out);
    return err;
}

void sl_password_req_clear(sl_password_req *req) {
    explicit_bzero(req, sizeof(*req));
}

sl_err sl_password_req_parse(const char *body, size_t len, sl_password_req *out, char *message,
                             size_t message_size) {
    sl_password_req_clear(out);
    json_t *root = sl_json_object_parse(body, len, message, message_size);
    if (!root)
        return SL_ERR_INVALID;
    sl_err err = get_stored_password(root, "current_password", out->current, &out->current_len,
                                     message, message_size);
    if (!err)
        err = get_new_password(root, "new_password", out->next, &out->next_len, message,
                               message_size);
    wipe_and_free(root);
    if (err)
        sl_password_req_clear(out);
    return err;
}

static bool token_chars_valid(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok)
            return false;
    }
    return true;
}

sl_err sl_token_req_parse(const char *body, size_t len, bool form, const char *field, char *out,
                          size_t out_size, char *message, size_t message_size) {
    out[0] = '\0';
    const char *token = NULL;
    size_t token_len = 0;
    json_t *root = NULL;
    if (form) {
        /* field=value pairs separated by '&'; tokens need no decoding (their
         * alphabet is URL-safe), so a '%' is simply refused below. */
        size_t flen = strlen(field);
        const char *p = body, *end = body ? body + len : NULL;
        while (p && p < end) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            const char *stop = amp ? amp : end;
            if ((size_t)(stop - p) > flen && memcmp(p, field, flen) == 0 && p[flen] == '=') {
                if (token)
                    return say(message, message_size, "%s: given twice", field);
                token = p + flen + 1;
                token_len = (size_t)(stop - token);
            }
            p = amp ? amp + 1 : end;
        }
    } else {
        root = sl_json_object_parse(body, len, message, message_size);
        if (!root)
            return SL_ERR_INVALID;
        json_t *v = json_object_get(root, field);
        if (v && json_is_string(v)) {
            token = json_string_value(v);
            token_len = json_string_length(v);
        }
    }
    sl_err err = SL_OK;
    if (!token || token_len == 0)
        err = say(message, message_size, "%s: a token is required", field);
    else if (token_len > SL_IDREQ_TOKEN_MAX || token_len + 1 > out_size)
        err = say(message, message_size, "%s: token is too long", field);
    else if (!token_chars_valid(token, token_len))
        err = say(message, message_size, "%s: malformed token", field);
    if (!err) {
        memcpy(out, token, token_len);
        out[token_len] = '\0';
    }
    json_decref(root);
    return err;
}
