/*
 * identity_req.c: parsing and validation of identity HTTP requests. See
 * identity_req.h for the contract; the notes here are about why.
 *
 * jansson (2.14 in bookworm) nests up to 2048 levels before it refuses a
 * document; our bodies are flat objects, so a cheap byte scan bounds the
 * nesting first and jansson never builds a deep tree for an attacker.
 */
#include "connectors/http/identity_requests.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- text ---------------------------------------------------------------- */

/* Decode the code point at p (before end) into *cp: the bytes it takes, or
 * 0 if it is not well-formed UTF-8 (truncated, overlong, a surrogate, or
 * above U+10FFFF). */
static size_t utf8_next(const unsigned char *p, const unsigned char *end, uint32_t *cp) {
    unsigned c = *p;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t n;
    uint32_t v, min;
    if ((c & 0xe0) == 0xc0)
        n = 2, v = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        n = 3, v = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        n = 4, v = c & 0x07, min = 0x10000;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return n;
}

bool sl_utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        uint32_t cp;
        size_t n = utf8_next(p, end, &cp);
        if (n == 0 || cp == 0)
            return false;
        p += n;
    }
    return true;
}

bool sl_text_valid(const char *s, size_t len, bool multiline) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        uint32_t cp;
        size_t n = utf8_next(p, end, &cp);
        if (n == 0)
            return false;
        bool allowed_control = multiline && (cp == '\t' || cp == '\n' || cp == '\r');
        if ((cp < 0x20 && !allowed_control) || (cp >= 0x7f && cp <= 0x9f)) /* C0, DEL, C1 */
            return false;
        p += n;
    }
    return true;
}

size_t sl_utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            n++;
    return n;
}

/* ---- e-mail, ids, dates ---------------------------------------------------- */

static bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool domain_valid(const char *d, size_t len) {
    if (len == 0 || len > 253)
        return false;
    size_t label = 0, labels = 0;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? d[i] : '.';
        if (c == '.') {
            if (label == 0 || label > 63 || d[i - 1] == '-' || d[i - label] == '-')
                return false;
            label = 0;
            labels++;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
        if (!ok)
            return false;
        label++;
    }
    return labels >= 2;
}

sl_err sl_email_normalize(const char *in, size_t len, char *out, size_t out_size) {
    while (len > 0 && is_ws(in[0]))
        in++, len--;
    while (len > 0 && is_ws(in[len - 1]))
        len--;
    if (len == 0 || len > SL_IDREQ_EMAIL_MAX || len + 1 > out_size)
        return SL_ERR_INVALID;
    if (!sl_text_valid(in, len, false))
        return SL_ERR_INVALID;
    size_t at = len;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (is_ws(c))
            return SL_ERR_INVALID;
        if (c == '@') {
            if (at != len)
                return SL_ERR_INVALID; /* a second @ */
            at = i;
        }
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    out[len] = '\0';
    if (at == 0 || at == len || at > 64 || !domain_valid(out + at + 1, len - at - 1)) {
        out[0] = '\0';
        return SL_ERR_INVALID;
    }
    return SL_OK;
}

bool sl_uuid_valid(const char *s) {
    if (!s || strlen(s) != SL_IDREQ_UUID_LEN)
        return false;
    for (size_t i = 0; i < SL_IDREQ_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

static void uuid_format(unsigned char b[16], int version, char out[SL_IDREQ_UUID_LEN + 1]) {
    b[6] = (unsigned char)((b[6] & 0x0f) | (version << 4));
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 9562 variant */
    snprintf(out, SL_IDREQ_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

sl_err sl_uuid_v4(char out[SL_IDREQ_UUID_LEN + 1]) {
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        return SL_ERR_IO;
    uuid_format(b, 4, out);
    return SL_OK;
}

void sl_uuid_from_digest(const unsigned char *digest, char out[SL_IDREQ_UUID_LEN + 1]) {
    unsigned char b[16];
    memcpy(b, digest, sizeof(b));
    uuid_format(b, 8, out);
}

bool sl_date_valid(const char *s) {
    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return false;
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0');
    int d = (s[8] - '0') * 10 + (s[9] - '0');
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || m < 1 || m > 12 || d < 1)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d <= days[m - 1] + (m == 2 && leap);
}

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

/* Nesting depth of a JSON text, counted outside strings; -1 if it exceeds
 * max (the scan stops there). Malformed text is jansson's business. */
static int json_depth(const char *body, size_t len, int max) {
    int depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (size_t i = 0; i < len; i++) {
        char c = body[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                return -1;
            if (depth > deepest)
                deepest = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return deepest;
}

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
    if (json_depth(body, len, SL_IDREQ_MAX_DEPTH) < 0) {
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

static sl_err get_password(json_t *root, char *out, size_t *out_len, char *message,
                           size_t message_size) {
    json_t *v = json_object_get(root, "password");
    if (!v || !json_is_string(v))
        return say(message, message_size, "%s", "password: a string is required");
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (len > SL_IDREQ_PASSWORD_MAX)
        return say(message, message_size, "password: longer than %d bytes", SL_IDREQ_PASSWORD_MAX);
    /* Any Unicode is allowed (ASVS 5.0 6.2.9), NUL is not: argon2 hashes
     * bytes, and a NUL would make C strings disagree with the hash. */
    if (memchr(s, '\0', len) || !sl_text_valid(s, len, true) ||
        sl_utf8_chars(s, len) < SL_IDREQ_PASSWORD_MIN)
        return say(message, message_size, "password: at least %d characters of valid UTF-8",
                   SL_IDREQ_PASSWORD_MIN);
    memcpy(out, s, len);
    out[len] = '\0';
    *out_len = len;
    return SL_OK;
}

static sl_err get_email(json_t *root, char *out, char *message, size_t message_size) {
    char raw[SL_IDREQ_EMAIL_MAX * 2 + 1];
    sl_err err = get_text(root, "email", raw, sizeof(raw) - 1, false, message, message_size);
    if (err)
        return err;
    if (!raw[0]) {
        out[0] = '\0';
        return SL_OK;
    }
    if (sl_email_normalize(raw, strlen(raw), out, SL_IDREQ_EMAIL_MAX + 1))
        return say(message, message_size, "%s", "email: not a valid e-mail address");
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

/* jansson keeps its own copy of the body's strings: wipe the password in
 * it before the tree is freed. */
static void wipe_and_free(json_t *root) {
    json_t *v = json_object_get(root, "password");
    if (v && json_is_string(v)) {
        size_t len = json_string_length(v);
        explicit_bzero((char *)json_string_value(v), len);
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
    if ((err = get_text(root, "first_name", out->first_name, SL_IDREQ_NAME_MAX, false, message,
                        message_size)) ||
        (err = get_text(root, "second_name", out->second_name, SL_IDREQ_NAME_MAX, false, message,
                        message_size)) ||
        (err = get_text(root, "birthdate", out->birthdate, 10, false, message, message_size)) ||
        (err = get_text(root, "biography", out->biography, SL_IDREQ_BIOGRAPHY_MAX, true, message,
                        message_size)) ||
        (err = get_text(root, "city", out->city, SL_IDREQ_NAME_MAX, false, message,
                        message_size)) ||
        (err = get_email(root, out->email, message, message_size)) ||
        (err = get_password(root, out->password, &out->password_len, message, message_size)))
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
    char id[SL_IDREQ_UUID_LEN * 2 + 1];
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
        memcpy(out->user_id, id, SL_IDREQ_UUID_LEN + 1);
    }
    /* Login accepts any stored password, so only the shape is checked: a
     * password set under an older, shorter minimum must still log in. */
    json_t *v = json_object_get(root, "password");
    size_t plen = v && json_is_string(v) ? json_string_length(v) : 0;
    if (!v || !json_is_string(v) || plen == 0 || plen > SL_IDREQ_PASSWORD_MAX ||
        memchr(json_string_value(v), '\0', plen)) {
        err = say(message, message_size, "%s", "password: a non-empty string is required");
        goto done;
    }
    memcpy(out->password, json_string_value(v), plen);
    out->password[plen] = '\0';
    out->password_len = plen;
done:
    wipe_and_free(root);
    if (err)
        sl_login_req_clear(out);
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
