/*
 * identity_req.h: parsing and validation of the identity HTTP requests
 * (register, login, refresh, introspect) and of the values they carry
 * (e-mail, user id, birthdate, profile text, password).
 *
 * Pure functions of their input: no I/O, no allocation that outlives a call
 * except the caller's sl_register_req / sl_login_req (released with their
 * _clear functions, which wipe the password). Any thread. They never put
 * request content into error messages except the name of the offending
 * field, so a message is safe to send back and to log.
 *
 * JSON: a body is at most the HTTP server's body cap; on top of that its
 * nesting is bounded (SL_IDREQ_MAX_DEPTH) before jansson sees it, duplicate
 * keys are refused, every known field must have the documented type, and
 * unknown fields are ignored (the OpenAPI spec's deprecated "age" among
 * them), so newer clients keep working.
 */
#ifndef SLUICE_IDENTITY_REQ_H
#define SLUICE_IDENTITY_REQ_H

#include <stdbool.h>
#include <jansson.h>
#include <stddef.h>

#include "processor/base/error.h"

/* Bounds, in bytes (text is UTF-8). */
#define SL_IDREQ_MAX_DEPTH     4
#define SL_IDREQ_EMAIL_MAX     254 /* RFC 5321 path limit */
/* The identity topology's limits (topology/identity.h SL_IDENTITY_MAX_*),
 * so the gateway refuses with a 400 what the processor would reject. */
#define SL_IDREQ_NAME_MAX      100 /* first_name, second_name, city */
#define SL_IDREQ_BIOGRAPHY_MAX 2000
#define SL_IDREQ_PASSWORD_MIN  8 /* characters (code points), ASVS 5.0 6.2.1 */
#define SL_IDREQ_PASSWORD_MAX  1024
#define SL_IDREQ_UUID_LEN      36
#define SL_IDREQ_TOKEN_MAX     8192

typedef struct sl_register_req {
    char first_name[SL_IDREQ_NAME_MAX + 1];
    char second_name[SL_IDREQ_NAME_MAX + 1];
    char birthdate[11]; /* "YYYY-MM-DD" or "" */
    char biography[SL_IDREQ_BIOGRAPHY_MAX + 1];
    char city[SL_IDREQ_NAME_MAX + 1];
    char email[SL_IDREQ_EMAIL_MAX + 1]; /* normalized, or "" */
    char password[SL_IDREQ_PASSWORD_MAX + 1];
    size_t password_len;
} sl_register_req;

typedef struct sl_login_req {
    char user_id[SL_IDREQ_UUID_LEN + 1]; /* lower-case, or "" */
    char email[SL_IDREQ_EMAIL_MAX + 1];  /* normalized, or "" */
    char password[SL_IDREQ_PASSWORD_MAX + 1];
    size_t password_len;
} sl_login_req;

/* Parse a register body into *out (caller's; wiped first). SL_OK, or
 * SL_ERR_INVALID with `message` ("first_name: must be a string", "body is
 * not valid JSON", ...) for a 400. Call sl_register_req_clear after use,
 * whatever the result. */
sl_err sl_register_req_parse(const char *body, size_t len, sl_register_req *out, char *message,
                             size_t message_size);
void sl_register_req_clear(sl_register_req *req);

/* Parse {"id", "password"} or {"email", "password"} (exactly one of id and
 * email). As sl_register_req_parse. */
sl_err sl_login_req_parse(const char *body, size_t len, sl_login_req *out, char *message,
                          size_t message_size);
void sl_login_req_clear(sl_login_req *req);

/* The token of {"<field>": "<token>"} (JSON), or of field=<token> in an
 * application/x-www-form-urlencoded body (RFC 7662 introspection), copied
 * NUL-terminated into out (SL_IDREQ_TOKEN_MAX + 1 bytes). Tokens are
 * base64url and dots only; anything else is SL_ERR_INVALID. */
sl_err sl_token_req_parse(const char *body, size_t len, bool form, const char *field, char *out,
                          size_t out_size, char *message, size_t message_size);

/* Parse a request body that must be one JSON object, with its nesting
 * bounded (SL_IDREQ_MAX_DEPTH) before jansson sees it and duplicate keys
 * refused. The object (caller's, json_decref), or NULL with a 400 message. */
json_t *sl_json_object_parse(const char *body, size_t len, char *message, size_t message_size);

/* An Idempotency-Key header value: 1..255 visible ASCII characters. */
bool sl_idempotency_key_valid(const char *key);

/* Trim ASCII white space and lower-case `in` into out (SL_IDREQ_EMAIL_MAX
 * + 1 bytes). SL_ERR_INVALID unless it is local@domain with a non-empty
 * local part of at most 64 bytes, a domain of dot-separated labels (letters,
 * digits, hyphens, 1..63 bytes, no leading or trailing hyphen), no white
 * space or control bytes, at most SL_IDREQ_EMAIL_MAX bytes in all. Only the
 * case of ASCII letters is folded: the local part is otherwise kept. */
sl_err sl_email_normalize(const char *in, size_t len, char *out, size_t out_size);

/* True for a canonical UUID: 8-4-4-4-12 hex digits, lower case. */
bool sl_uuid_valid(const char *s);
/* A random (version 4) UUID, lower case, into out (37 bytes). */
sl_err sl_uuid_v4(char out[SL_IDREQ_UUID_LEN + 1]);
/* The UUID (version 8, RFC 9562 custom) whose 122 free bits are the first
 * bytes of `digest` (at least 16): a stable id derived from a MAC. */
void sl_uuid_from_digest(const unsigned char *digest, char out[SL_IDREQ_UUID_LEN + 1]);

/* True for "YYYY-MM-DD", a real calendar date (no clock involved, so a
 * processor replaying old commands decides the same way). */
bool sl_date_valid(const char *s);
/* sl_date_valid, and from 1900-01-01 to today (UTC): the gateway's check. */
bool sl_birthdate_valid(const char *s);

/* True if `len` bytes of s are valid UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF) without NUL or C0/C1 controls other
 * than TAB, LF, CR (allowed only when multiline). */
bool sl_text_valid(const char *s, size_t len, bool multiline);

/* True if `len` bytes of s are well-formed UTF-8 without a NUL (controls
 * allowed: message text). */
bool sl_utf8_valid(const char *s, size_t len);

/* Code points in `len` bytes of valid UTF-8. */
size_t sl_utf8_chars(const char *s, size_t len);

#endif
