/*
 * identity_requests.h: parsing and validation of the identity HTTP requests
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

#include "connectors/http/auth/passwords.h"
#include "processor/base/error.h"
#include "processor/base/text.h"
#include "topology/identity/rules.h"

/* Bounds, in bytes (text is UTF-8). The field limits are the identity
 * topology's (SL_IDENTITY_MAX_* in topology/identity/rules.h), so the
 * gateway refuses with a 400 what the processor would reject; the longest
 * password is the hasher's (SL_PASSWORD_MAX_LEN); e-mail, UUID, UTF-8 and
 * date checks are in rules.h and processor/base/text.h. */
#define SL_IDREQ_MAX_DEPTH    4
#define SL_IDREQ_PASSWORD_MIN 8 /* characters (code points), ASVS 5.0 6.2.1 */
#define SL_IDREQ_TOKEN_MAX    8192

typedef struct sl_register_req {
    char first_name[SL_IDENTITY_MAX_NAME + 1];
    char second_name[SL_IDENTITY_MAX_NAME + 1];
    char birthdate[11]; /* "YYYY-MM-DD" or "" */
    char biography[SL_IDENTITY_MAX_BIOGRAPHY + 1];
    char city[SL_IDENTITY_MAX_NAME + 1];
    char email[SL_IDENTITY_MAX_EMAIL + 1]; /* normalized, or "" */
    char password[SL_PASSWORD_MAX_LEN + 1];
    size_t password_len;
} sl_register_req;

typedef struct sl_login_req {
    char user_id[SL_UUID_LEN + 1]; /* lower-case, or "" */
    char email[SL_IDENTITY_MAX_EMAIL + 1];  /* normalized, or "" */
    char password[SL_PASSWORD_MAX_LEN + 1];
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

typedef struct sl_password_req {
    char current[SL_PASSWORD_MAX_LEN + 1];
    size_t current_len;
    char next[SL_PASSWORD_MAX_LEN + 1];
    size_t next_len;
} sl_password_req;

/* Parse {"current_password", "new_password"} (POST /user/password): the
 * current one by its shape only (as a login), the new one by the rules of
 * a registration. As sl_register_req_parse. */
sl_err sl_password_req_parse(const char *body, size_t len, sl_password_req *out, char *message,
                             size_t message_size);
void sl_password_req_clear(sl_password_req *req);

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

/* sl_date_valid, and from 1900-01-01 to today (UTC): the gateway's check
 * (it reads the clock, so the processor checks sl_date_valid only). */
bool sl_birthdate_valid(const char *s);

#endif
