/*
 * Unit tests: the identity rules shared by the gateway and the processor
 * (topology/identity/rules.c). The gateway normalizes an e-mail
 * (sl_email_normalize, through sl_register_req_parse); the processor takes
 * only an e-mail already in that form (sl_email_normalized). These tests
 * show that the two agree: whatever the gateway accepts, the processor
 * accepts in its normalized form, and what the gateway refuses, the
 * processor refuses too.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "connectors/http/identity_requests.h"
#include "topology/identity/rules.h"

/* What a client may send, and what the gateway stores it as ("" refused). */
static const struct {
    const char *sent;
    const char *normalized;
} emails[] = {
    {"ada@example.org", "ada@example.org"},
    {"  Ada.Lovelace@Example.ORG ", "ada.lovelace@example.org"},
    {"o'brien+tag@mail.example.co.uk", "o'brien+tag@mail.example.co.uk"},
    {"j\xc3\xb6rg@example.de", "j\xc3\xb6rg@example.de"}, /* UTF-8 local part is kept */
    {"\"carol\"@example.com", ""},                        /* no quoted local parts */
    {"carol\\x@example.com", ""},
    {"a,b@example.com", ""},
    {"carol@example", ""},  /* one label */
    {"carol@ex_ample.com", ""},
    {"carol@-example.com", ""},
    {"carol@example..com", ""},
    {"carol@@example.com", ""},
    {"@example.com", ""},
    {"carol@", ""},
    {"ca rol@example.com", ""},
    {"carol\x01@example.com", ""},
    {"carol@j\xc3\xb6rg.de", ""}, /* domains are ASCII (IDNA is the client's business) */
    /* one mailbox (issue 13): composed and decomposed c-cedilla are one */
    {"fran\xc3\xa7ois@example.fr", "fran\xc3\xa7ois@example.fr"},
    {"franc\xcc\xa7ois@example.fr", "fran\xc3\xa7ois@example.fr"},
    {"\xd0\xb0\xd0\xbb\xd0\xb8\xd1\x81\xd0\xb0@example.ru", /* all Cyrillic: one script */
     "\xd0\xb0\xd0\xbb\xd0\xb8\xd1\x81\xd0\xb0@example.ru"},
};

/* The look-alike and invisible samples of issue 13, each refused with a
 * reason that says why. */
static const struct {
    const char *sent;
    const char *why; /* a part of the reason */
} spoofs[] = {
    {"\xd0\xb0lice@example.com", "mixes scripts"},                /* Cyrillic a + Latin */
    {"al\xe2\x80\x8bice@example.com", "invisible"},              /* U+200B zero width space */
    {"al\xc2\xa0ice@example.com", "invisible"},                   /* U+00A0 no-break space */
    {"al\xc2\xadice@example.com", "invisible"},                   /* U+00AD soft hyphen */
    {"al\xe2\x80\xaeice@example.com", "invisible"},              /* U+202E right-to-left override */
    {"\xef\xbb\xbf" "alice@example.com", "invisible"},         /* U+FEFF byte order mark */
    {"\xef\xbd\x81\xef\xbd\x8c\xef\xbd\x89" "ce@example.com", "compatibility"}, /* fullwidth */
};

static void look_alike_and_invisible_characters_are_refused_with_the_reason(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(spoofs) / sizeof(spoofs[0]); i++) {
        char out[SL_IDENTITY_MAX_EMAIL + 1];
        const char *why = NULL;
        sl_err err = sl_email_normalize_why(spoofs[i].sent, strlen(spoofs[i].sent), out,
                                            sizeof(out), &why);
        if (err != SL_ERR_INVALID)
            fail_msg("gateway accepted sample %zu", i);
        if (!why || !strstr(why, spoofs[i].why))
            fail_msg("sample %zu: reason '%s', expected '%s'", i, why ? why : "(none)",
                     spoofs[i].why);
        if (sl_email_normalized(spoofs[i].sent))
            fail_msg("processor accepted sample %zu", i);
    }
}

static void composed_and_decomposed_addresses_are_one_account(void **state) {
    (void)state;
    char composed[SL_IDENTITY_MAX_EMAIL + 1], decomposed[SL_IDENTITY_MAX_EMAIL + 1];
    const char *a = "Fran\xc3\xa7ois@Example.fr", *b = "Franc\xcc\xa7ois@example.FR";
    assert_int_equal(sl_email_normalize(a, strlen(a), composed, sizeof(composed)), SL_OK);
    assert_int_equal(sl_email_normalize(b, strlen(b), decomposed, sizeof(decomposed)), SL_OK);
    assert_string_equal(composed, decomposed);
    /* the processor takes only the composed form */
    assert_false(sl_email_normalized("franc\xcc\xa7ois@example.fr"));
    assert_true(sl_email_normalized(composed));
}

static void gateway_and_processor_agree_on_every_address(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(emails) / sizeof(emails[0]); i++) {
        char out[SL_IDENTITY_MAX_EMAIL + 1];
        sl_err err = sl_email_normalize(emails[i].sent, strlen(emails[i].sent), out, sizeof(out));
        if (!emails[i].normalized[0]) {
            if (err != SL_ERR_INVALID)
                fail_msg("gateway accepted '%s'", emails[i].sent);
            if (sl_email_normalized(emails[i].sent))
                fail_msg("processor accepted '%s'", emails[i].sent);
            continue;
        }
        if (err != SL_OK)
            fail_msg("gateway refused '%s'", emails[i].sent);
        assert_string_equal(out, emails[i].normalized);
        if (!sl_email_normalized(out))
            fail_msg("processor refused '%s', which the gateway sends", out);
    }
}

static void the_processor_refuses_an_address_that_is_not_normalized(void **state) {
    (void)state;
    assert_false(sl_email_normalized("Ada@example.org"));
    assert_false(sl_email_normalized(" ada@example.org"));
    assert_false(sl_email_normalized("ada@example.org\n"));
    assert_false(sl_email_normalized(""));
    assert_true(sl_email_normalized("ada@example.org"));
    char longest[SL_IDENTITY_MAX_EMAIL + 2];
    memset(longest, 'a', sizeof(longest));
    memcpy(longest, "a@", 2);
    for (size_t i = 2 + 63; i < SL_IDENTITY_MAX_EMAIL - 4; i += 64)
        longest[i] = '.';
    memcpy(longest + SL_IDENTITY_MAX_EMAIL - 4, ".com", 5); /* 254 bytes */
    assert_true(sl_email_normalized(longest));
    memcpy(longest + SL_IDENTITY_MAX_EMAIL - 4, "a.com", 6); /* 255 bytes */
    assert_false(sl_email_normalized(longest));
}

static void a_quoted_local_part_is_a_400_at_the_gateway(void **state) {
    (void)state;
    const char *body = "{\"first_name\":\"Carol\",\"second_name\":\"C\","
                       "\"email\":\"\\\"carol\\\"@example.com\",\"password\":\"correct horse\"}";
    sl_register_req req;
    char message[256] = "";
    assert_int_equal(sl_register_req_parse(body, strlen(body), &req, message, sizeof(message)),
                     SL_ERR_INVALID);
    assert_string_equal(message, "email: not a valid e-mail address");
    sl_register_req_clear(&req);
    assert_false(sl_email_normalized("\"carol\"@example.com"));
}

static void a_look_alike_address_is_a_400_that_says_why(void **state) {
    (void)state;
    const char *body = "{\"first_name\":\"Alice\",\"second_name\":\"A\","
                       "\"email\":\"\xd0\xb0lice@example.com\",\"password\":\"correct horse\"}";
    sl_register_req req;
    char message[256] = "";
    assert_int_equal(sl_register_req_parse(body, strlen(body), &req, message, sizeof(message)),
                     SL_ERR_INVALID);
    assert_non_null(strstr(message, "email: the local part mixes scripts"));
    sl_register_req_clear(&req);
}

static void stored_hashes_are_bounded_by_the_floors_given(void **state) {
    (void)state;
    const char *weak = "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$"
                       "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    sl_phc parsed;
    char errstr[128] = "";
    assert_int_equal(sl_phc_parse(weak, sl_argon2_floors_production, &parsed, errstr,
                                  sizeof(errstr)),
                     SL_ERR_INVALID);
    assert_non_null(strstr(errstr, "argon2 memory"));
    assert_false(sl_password_hash_acceptable(weak));
    sl_argon2_floors test_floors = {.m_min = 8, .t_min = 1, .p_min = 1};
    assert_int_equal(sl_phc_parse(weak, test_floors, &parsed, NULL, 0), SL_OK);
    assert_int_equal(parsed.m, 64);
    assert_int_equal(parsed.salt_len, 16);
    assert_int_equal(parsed.tag_len, 32);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gateway_and_processor_agree_on_every_address),
        cmocka_unit_test(the_processor_refuses_an_address_that_is_not_normalized),
        cmocka_unit_test(look_alike_and_invisible_characters_are_refused_with_the_reason),
        cmocka_unit_test(composed_and_decomposed_addresses_are_one_account),
        cmocka_unit_test(a_quoted_local_part_is_a_400_at_the_gateway),
        cmocka_unit_test(a_look_alike_address_is_a_400_that_says_why),
        cmocka_unit_test(stored_hashes_are_bounded_by_the_floors_given),
    };
    return cmocka_run_group_tests_name("rules", tests, NULL, NULL);
}
