/*
 * Unit tests: identity request parsing and validation
 * (connectors/http/identity_requests.c), and the text and e-mail checks it
 * applies (processor/base/text.c, topology/identity/rules.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connectors/http/identity_requests.h"
#include "processor/base/text.h"
#include "topology/identity/rules.h"

static char message[256];

#define REGISTER_OK                                                                                \
    "{\"first_name\":\"Ada\",\"second_name\":\"Lovelace\",\"birthdate\":\"1985-12-10\","         \
    "\"biography\":\"Maths.\\nEngines.\",\"city\":\"London\",\"password\":\"correct horse\","    \
    "\"email\":\"  Ada.Lovelace@Example.ORG \",\"age\":36}"

static sl_err parse_register(const char *body, sl_register_req *req) {
    message[0] = '\0';
    return sl_register_req_parse(body, strlen(body), req, message, sizeof(message));
}

static void register_body_is_parsed_and_the_email_normalized(void **state) {
    (void)state;
    sl_register_req req;
    assert_int_equal(parse_register(REGISTER_OK, &req), SL_OK);
    assert_string_equal(req.first_name, "Ada");
    assert_string_equal(req.second_name, "Lovelace");
    assert_string_equal(req.birthdate, "1985-12-10");
    assert_string_equal(req.biography, "Maths.\nEngines.");
    assert_string_equal(req.city, "London");
    assert_string_equal(req.email, "ada.lovelace@example.org");
    assert_string_equal(req.password, "correct horse");
    assert_int_equal(req.password_len, 13);
    sl_register_req_clear(&req);
    assert_int_equal(req.password[0], 0); /* wiped */
}

static void register_without_email_is_accepted(void **state) {
    (void)state;
    sl_register_req req;
    assert_int_equal(
        parse_register("{\"first_name\":\"A\",\"second_name\":\"B\",\"password\":\"12345678\"}",
                       &req),
        SL_OK);
    assert_string_equal(req.email, "");
    assert_string_equal(req.birthdate, "");
    sl_register_req_clear(&req);
}

static void register_errors_name_the_field(void **state) {
    (void)state;
    static const struct {
        const char *body, *field;
    } cases[] = {
        {"{\"first_name\":1,\"second_name\":\"B\",\"password\":\"12345678\"}", "first_name"},
        {"{\"first_name\":\"A\",\"password\":\"12345678\"}", "second_name"},
        {"{\"first_name\":\"A\",\"second_name\":\"B\"}", "password"},
        {"{\"first_name\":\"A\",\"second_name\":\"B\",\"password\":\"1234567\"}", "password"},
        {"{\"first_name\":\"A\",\"second_name\":\"B\",\"password\":\"12345678\","
         "\"birthdate\":\"1999-02-29\"}",
         "birthdate"},
        {"{\"first_name\":\"A\",\"second_name\":\"B\",\"password\":\"12345678\","
         "\"birthdate\":\"2999-01-01\"}",
         "birthdate"},
        {"{\"first_name\":\"A\",\"second_name\":\"B\",\"password\":\"12345678\","
         "\"email\":\"no-at-sign\"}",
         "email"},
        /* jansson refuses \u0000 itself (no JSON_ALLOW_NUL) */
        {"{\"first_name\":\"A\\u0000\",\"second_name\":\"B\",\"password\":\"12345678\"}",
         "request body is not valid JSON"},
        {"{\"first_name\":\"A\",\"second_name\":\"B\",\"password\":\"1234\\u00005678\"}",
         "request body is not valid JSON"},
        {"{\"first_name\":\"A\",\"second_name\":\"B\",\"password\":\"\\u0001234567\"}",
         "password"},
        {"{\"first_name\":\"A\",\"second_name\":\"B\",\"password\":\"12345678\","
         "\"birthdate\":\"1815-12-10\"}",
         "birthdate"},
        {"{\"first_name\":\"A\",\"second_name\":\"B\",\"city\":\"x\\ny\","
         "\"password\":\"12345678\"}",
         "city"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sl_register_req req;
        assert_int_equal(parse_register(cases[i].body, &req), SL_ERR_INVALID);
        if (strncmp(message, cases[i].field, strlen(cases[i].field)) != 0)
            fail_msg("case %zu: message '%s' does not start with '%s'", i, message,
                     cases[i].field);
        assert_int_equal(req.password[0], 0);
    }
}

static void register_refuses_non_objects_deep_nesting_and_duplicate_keys(void **state) {
    (void)state;
    sl_register_req req;
    assert_int_equal(parse_register("", &req), SL_ERR_INVALID);
    assert_int_equal(parse_register("{", &req), SL_ERR_INVALID);
    assert_string_equal(message, "request body is not valid JSON");
    assert_int_equal(parse_register("[1]", &req), SL_ERR_INVALID);
    assert_string_equal(message, "request body must be a JSON object");
    assert_int_equal(parse_register("{\"a\":[[[[[1]]]]]}", &req), SL_ERR_INVALID);
    assert_string_equal(message, "request body is nested too deeply");
    /* brackets inside strings do not count */
    assert_int_equal(parse_register("{\"first_name\":\"[[[[[[\",\"second_name\":\"B\","
                                    "\"password\":\"12345678\"}",
                                    &req),
                     SL_OK);
    sl_register_req_clear(&req);
    assert_int_equal(parse_register("{\"first_name\":\"A\",\"first_name\":\"B\"}", &req),
                     SL_ERR_INVALID);
}

static void login_takes_exactly_one_of_id_and_email(void **state) {
    (void)state;
    sl_login_req req;
    const char *by_id = "{\"id\":\"E4D2E6B0-CDE2-42C5-AAC3-0B8316F21E58\",\"password\":\"x\"}";
    assert_int_equal(sl_login_req_parse(by_id, strlen(by_id), &req, message, sizeof(message)),
                     SL_OK);
    assert_string_equal(req.user_id, "e4d2e6b0-cde2-42c5-aac3-0b8316f21e58");
    assert_string_equal(req.password, "x");
    sl_login_req_clear(&req);
    const char *by_email = "{\"email\":\"A@B.CO\",\"password\":\"secret\"}";
    assert_int_equal(
        sl_login_req_parse(by_email, strlen(by_email), &req, message, sizeof(message)), SL_OK);
    assert_string_equal(req.email, "a@b.co");
    sl_login_req_clear(&req);
    const char *both = "{\"email\":\"a@b.co\",\"id\":\"e4d2e6b0-cde2-42c5-aac3-0b8316f21e58\","
                       "\"password\":\"x\"}";
    assert_int_equal(sl_login_req_parse(both, strlen(both), &req, message, sizeof(message)),
                     SL_ERR_INVALID);
    const char *neither = "{\"password\":\"x\"}";
    assert_int_equal(
        sl_login_req_parse(neither, strlen(neither), &req, message, sizeof(message)),
        SL_ERR_INVALID);
    const char *bad_id = "{\"id\":\"42\",\"password\":\"x\"}";
    assert_int_equal(sl_login_req_parse(bad_id, strlen(bad_id), &req, message, sizeof(message)),
                     SL_ERR_INVALID);
    assert_string_equal(message, "id: not a user id");
}

static void a_password_change_takes_the_current_and_a_valid_new_password(void **state) {
    (void)state;
    sl_password_req req;
    const char *ok = "{\"current_password\":\"old\",\"new_password\":\"new horse battery\"}";
    assert_int_equal(sl_password_req_parse(ok, strlen(ok), &req, message, sizeof(message)), SL_OK);
    assert_string_equal(req.current, "old"); /* any stored password may be the current one */
    assert_int_equal(req.current_len, 3);
    assert_string_equal(req.next, "new horse battery");
    sl_password_req_clear(&req);
    assert_int_equal(req.current[0], '\0');
    const char *short_new = "{\"current_password\":\"old\",\"new_password\":\"short\"}";
    assert_int_equal(
        sl_password_req_parse(short_new, strlen(short_new), &req, message, sizeof(message)),
        SL_ERR_INVALID);
    assert_string_equal(message, "new_password: at least 8 characters of valid UTF-8");
    assert_int_equal(req.current[0], '\0'); /* wiped on error too */
    const char *no_current = "{\"new_password\":\"new horse battery\"}";
    assert_int_equal(
        sl_password_req_parse(no_current, strlen(no_current), &req, message, sizeof(message)),
        SL_ERR_INVALID);
    assert_string_equal(message, "current_password: a non-empty string is required");
    const char *twice = "{\"current_password\":\"a\",\"current_password\":\"b\","
                        "\"new_password\":\"new horse battery\"}";
    assert_int_equal(sl_password_req_parse(twice, strlen(twice), &req, message, sizeof(message)),
                     SL_ERR_INVALID);
}

static void email_normalization(void **state) {
    (void)state;
    char out[SL_IDENTITY_MAX_EMAIL + 1];
    assert_int_equal(sl_email_normalize(" X@Y.Z1 ", 8, out, sizeof(out)), SL_OK);
    assert_string_equal(out, "x@y.z1");
    static const char *const bad[] = {"@b.co", "a@", "a@b", "a@@b.co", "a b@c.co", "a@-b.co",
                                      "a@b-.co", "a@b..co", "a@b_c.co", "a\x01@b.co"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (sl_email_normalize(bad[i], strlen(bad[i]), out, sizeof(out)) != SL_ERR_INVALID)
            fail_msg("'%s' was accepted", bad[i]);
    char local[80];
    memset(local, 'a', 65);
    strcpy(local + 65, "@b.co");
    assert_int_equal(sl_email_normalize(local, strlen(local), out, sizeof(out)), SL_ERR_INVALID);
}

static void uuids_are_canonical_and_random_ones_valid(void **state) {
    (void)state;
    assert_true(sl_uuid_valid("e4d2e6b0-cde2-42c5-aac3-0b8316f21e58"));
    assert_false(sl_uuid_valid("E4D2E6B0-CDE2-42C5-AAC3-0B8316F21E58"));
    assert_false(sl_uuid_valid("e4d2e6b0cde242c5aac30b8316f21e58"));
    assert_false(sl_uuid_valid("e4d2e6b0-cde2-42c5-aac3-0b8316f21e5"));
    char a[37], b[37];
    assert_int_equal(sl_uuid_v4(a), SL_OK);
    assert_int_equal(sl_uuid_v4(b), SL_OK);
    assert_true(sl_uuid_valid(a));
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4');
    unsigned char digest[32] = {0};
    sl_uuid_from_digest(digest, a);
    assert_true(sl_uuid_valid(a));
    assert_string_equal(a, "00000000-0000-8000-8000-000000000000");
}

static void dates_are_checked_on_the_calendar_and_birthdates_against_today(void **state) {
    (void)state;
    assert_true(sl_date_valid("2024-02-29"));
    assert_false(sl_date_valid("2023-02-29"));
    assert_false(sl_date_valid("1900-02-29")); /* not a leap year */
    assert_true(sl_date_valid("2000-02-29"));
    assert_false(sl_date_valid("2024-13-01"));
    assert_false(sl_date_valid("2024-1-01"));
    assert_true(sl_date_valid("2999-01-01")); /* the processor does not read the clock */
    assert_false(sl_birthdate_valid("2999-01-01"));
    assert_false(sl_birthdate_valid("1899-12-31"));
    assert_true(sl_birthdate_valid("1900-01-01"));
}

static void text_validation_rejects_bad_utf8_and_controls(void **state) {
    (void)state;
    assert_true(sl_text_valid("Привет, мир", strlen("Привет, мир"), false));
    assert_true(sl_text_valid("a\nb", 3, true));
    assert_false(sl_text_valid("a\nb", 3, false));
    assert_false(sl_text_valid("\xc0\xaf", 2, false));         /* overlong '/' */
    assert_false(sl_text_valid("\xed\xa0\x80", 3, false));     /* surrogate */
    assert_false(sl_text_valid("\xf4\x90\x80\x80", 4, false)); /* > U+10FFFF */
    assert_false(sl_text_valid("\xc2\x85", 2, true));          /* C1 NEL */
    assert_false(sl_text_valid("ab\xe2\x82", 4, false));       /* truncated */
    assert_int_equal(sl_utf8_chars("Привет", strlen("Привет")), 6);
    /* message text: any well-formed UTF-8 but NUL, controls included */
    assert_true(sl_utf8_valid("a\x01\tb\xc2\x85", 6));
    assert_false(sl_utf8_valid("a\0b", 3));
    assert_false(sl_utf8_valid("\xc0\xaf", 2));
    assert_false(sl_utf8_valid("\xed\xa0\x80", 3));
    assert_false(sl_utf8_valid("\xf4\x90\x80\x80", 4));
    assert_false(sl_utf8_valid("ab\xe2\x82", 4));
}

static void tokens_come_from_json_or_form_bodies(void **state) {
    (void)state;
    char out[SL_IDREQ_TOKEN_MAX + 1];
    const char *json = "{\"refresh_token\":\"aa.bb.cc\"}";
    assert_int_equal(sl_token_req_parse(json, strlen(json), false, "refresh_token", out,
                                        sizeof(out), message, sizeof(message)),
                     SL_OK);
    assert_string_equal(out, "aa.bb.cc");
    const char *form = "token_type_hint=access_token&token=x-y_z.1.2";
    assert_int_equal(sl_token_req_parse(form, strlen(form), true, "token", out, sizeof(out),
                                        message, sizeof(message)),
                     SL_OK);
    assert_string_equal(out, "x-y_z.1.2");
    const char *twice = "token=a&token=b";
    assert_int_equal(sl_token_req_parse(twice, strlen(twice), true, "token", out, sizeof(out),
                                        message, sizeof(message)),
                     SL_ERR_INVALID);
    const char *bad = "{\"token\":\"a b\"}";
    assert_int_equal(sl_token_req_parse(bad, strlen(bad), false, "token", out, sizeof(out),
                                        message, sizeof(message)),
                     SL_ERR_INVALID);
    const char *missing = "{}";
    assert_int_equal(sl_token_req_parse(missing, strlen(missing), false, "token", out,
                                        sizeof(out), message, sizeof(message)),
                     SL_ERR_INVALID);
}

static void hex_round_trips_and_refuses_malformed_text(void **state) {
    (void)state;
    const unsigned char bytes[] = {0x00, 0x7f, 0x80, 0xff, 'a'};
    char hex[2 * sizeof(bytes) + 1];
    sl_hex_encode(bytes, sizeof(bytes), hex);
    assert_string_equal(hex, "007f80ff61");
    unsigned char back[8];
    assert_int_equal(sl_hex_decode(hex, back, sizeof(back)), sizeof(bytes));
    assert_memory_equal(back, bytes, sizeof(bytes));
    assert_int_equal(sl_hex_decode("7F80Ff", back, sizeof(back)), 3); /* either case */
    assert_int_equal(back[2], 0xff);
    assert_int_equal(sl_hex_decode("", back, sizeof(back)), 0);
    assert_int_equal(sl_hex_decode("abc", back, sizeof(back)), -1); /* odd */
    assert_int_equal(sl_hex_decode("0g", back, sizeof(back)), -1);  /* not hex */
    assert_int_equal(sl_hex_decode("+1", back, sizeof(back)), -1);  /* sscanf took this */
    assert_int_equal(sl_hex_decode(" 1", back, sizeof(back)), -1);
    assert_int_equal(sl_hex_decode("0011", back, 1), -1); /* too long */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hex_round_trips_and_refuses_malformed_text),
        cmocka_unit_test(register_body_is_parsed_and_the_email_normalized),
        cmocka_unit_test(register_without_email_is_accepted),
        cmocka_unit_test(register_errors_name_the_field),
        cmocka_unit_test(register_refuses_non_objects_deep_nesting_and_duplicate_keys),
        cmocka_unit_test(login_takes_exactly_one_of_id_and_email),
        cmocka_unit_test(a_password_change_takes_the_current_and_a_valid_new_password),
        cmocka_unit_test(email_normalization),
        cmocka_unit_test(uuids_are_canonical_and_random_ones_valid),
        cmocka_unit_test(dates_are_checked_on_the_calendar_and_birthdates_against_today),
        cmocka_unit_test(text_validation_rejects_bad_utf8_and_controls),
        cmocka_unit_test(tokens_come_from_json_or_form_bodies),
    };
    return cmocka_run_group_tests_name("identity_req", tests, NULL, NULL);
}
