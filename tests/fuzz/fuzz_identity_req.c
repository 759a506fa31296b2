/*
 * fuzz_identity_req.c: the identity request parsers (connectors/http/identity_requests.h)
 * on untrusted bodies: register, login, and token bodies as JSON and as a
 * form. Whatever the input, a parser answers SL_OK or SL_ERR_INVALID; on
 * SL_OK every field it filled is valid text within its bound (and the
 * e-mail normalizes to itself), on SL_ERR_INVALID it left a message and no
 * password behind.
 */
#include <string.h>

#include "connectors/http/identity_requests.h"
#include "tests/fuzz/fuzz.h"

static void check_text(const char *s, size_t max, bool multiline) {
    size_t len = strlen(s);
    FUZZ_CHECK(len <= max);
    FUZZ_CHECK(sl_text_valid(s, len, multiline));
}

static void check_email(const char *email) {
    if (!email[0])
        return;
    char again[SL_IDENTITY_MAX_EMAIL + 1];
    FUZZ_CHECK(sl_email_normalize(email, strlen(email), again, sizeof(again)) == SL_OK);
    FUZZ_CHECK(strcmp(email, again) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *body = (const char *)data;
    char message[256];

    sl_register_req reg;
    message[0] = '\0';
    sl_err err = sl_register_req_parse(body, size, &reg, message, sizeof(message));
    FUZZ_CHECK(err == SL_OK || err == SL_ERR_INVALID);
    if (err == SL_OK) {
        check_text(reg.first_name, SL_IDENTITY_MAX_NAME, false);
        check_text(reg.second_name, SL_IDENTITY_MAX_NAME, false);
        check_text(reg.city, SL_IDENTITY_MAX_NAME, false);
        check_text(reg.biography, SL_IDENTITY_MAX_BIOGRAPHY, true);
        FUZZ_CHECK(!reg.birthdate[0] || sl_birthdate_valid(reg.birthdate));
        check_email(reg.email);
        FUZZ_CHECK(reg.password_len == strlen(reg.password));
        FUZZ_CHECK(sl_utf8_chars(reg.password, reg.password_len) >= SL_IDREQ_PASSWORD_MIN);
    } else {
        FUZZ_CHECK(message[0] != '\0');
        FUZZ_CHECK(reg.password[0] == '\0');
    }
    sl_register_req_clear(&reg);

    sl_password_req change;
    message[0] = '\0';
    err = sl_password_req_parse(body, size, &change, message, sizeof(message));
    FUZZ_CHECK(err == SL_OK || err == SL_ERR_INVALID);
    if (err == SL_OK) {
        FUZZ_CHECK(change.current_len > 0 && change.current_len == strlen(change.current));
        FUZZ_CHECK(change.next_len == strlen(change.next));
        FUZZ_CHECK(sl_utf8_chars(change.next, change.next_len) >= SL_IDREQ_PASSWORD_MIN);
    } else {
        FUZZ_CHECK(message[0] != '\0');
        FUZZ_CHECK(change.current[0] == '\0' && change.next[0] == '\0');
    }
    sl_password_req_clear(&change);

    sl_login_req login;
    err = sl_login_req_parse(body, size, &login, message, sizeof(message));
    FUZZ_CHECK(err == SL_OK || err == SL_ERR_INVALID);
    if (err == SL_OK) {
        FUZZ_CHECK(!login.user_id[0] != !login.email[0]);
        FUZZ_CHECK(!login.user_id[0] || sl_uuid_valid(login.user_id));
        check_email(login.email);
        FUZZ_CHECK(login.password_len > 0 && login.password_len == strlen(login.password));
    } else {
        FUZZ_CHECK(login.password[0] == '\0');
    }
    sl_login_req_clear(&login);

    char token[SL_IDREQ_TOKEN_MAX + 1];
    for (int form = 0; form < 2; form++) {
        err = sl_token_req_parse(body, size, form, "token", token, sizeof(token), message,
                                 sizeof(message));
        FUZZ_CHECK(err == SL_OK || err == SL_ERR_INVALID);
        if (err == SL_OK)
            FUZZ_CHECK(token[0] && strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstu"
                                                 "vwxyz0123456789-_.") == strlen(token));
    }
    return 0;
}
