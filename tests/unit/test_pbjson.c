/* Unit tests: stored values as JSON through protobuf-c descriptors
 * (processor/gateway/pbjson.c), and the base64 of the state endpoint. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "processor/gateway/pbjson.h"
#include "sluice/v1/dialogs.pb-c.h"
#include "sluice/v1/identity.pb-c.h"

static json_t *render(const ProtobufCMessage *m) {
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len + 1);
    protobuf_c_message_pack(m, buf);
    json_t *j = sl_pbjson_render(m->descriptor, buf, len);
    free(buf);
    return j;
}

/* Nested messages, 64-bit integers, every field (defaults included), and
 * a password hash never shown. */
static void a_user_record_renders_by_field_name_with_the_hash_redacted(void **state) {
    (void)state;
    Sluice__V1__Profile profile = SLUICE__V1__PROFILE__INIT;
    profile.first_name = "Ada";
    profile.city = "London";
    Sluice__V1__UserRecord user = SLUICE__V1__USER_RECORD__INIT;
    user.user_id = "9d2c1c7e-0000-4000-8000-000000000001";
    user.password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    user.profile = &profile;
    user.registered_at_ms = 1764720000123LL;
    json_t *j = render(&user.base);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "user_id")), user.user_id);
    assert_string_equal(json_string_value(json_object_get(j, "password_hash")), "[redacted]");
    assert_int_equal(json_integer_value(json_object_get(j, "registered_at_ms")), 1764720000123LL);
    assert_int_equal(json_integer_value(json_object_get(j, "password_changed_at_ms")), 0);
    assert_string_equal(json_string_value(json_object_get(j, "email")), "");
    json_t *p = json_object_get(j, "profile");
    assert_string_equal(json_string_value(json_object_get(p, "first_name")), "Ada");
    char *text = json_dumps(j, 0);
    assert_null(strstr(text, "argon2"));
    free(text);
    json_decref(j);
    /* bytes that are not a message of the type */
    assert_null(sl_pbjson_render(&sluice__v1__user_record__descriptor, "\xff\xff\xff", 3));
}

/* bytes as base64, and the decoder's strictness */
static void base64_round_trips_and_refuses_what_is_not_base64(void **state) {
    (void)state;
    const unsigned char bytes[] = {0, 1, 2, 0xfe, 0xff};
    for (size_t n = 0; n <= sizeof(bytes); n++) {
        json_t *b = sl_pbjson_base64(bytes, n);
        unsigned char *back = NULL;
        size_t len = 99;
        assert_true(sl_pbjson_base64_decode(json_string_value(b), &back, &len));
        assert_int_equal(len, n);
        if (n)
            assert_memory_equal(back, bytes, n);
        free(back);
        json_decref(b);
    }
    const char *bad[] = {"abc", "ab=c", "a===", "!!!!", "ab-_", "YQ==YQ=="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned char *out = NULL;
        size_t len;
        if (sl_pbjson_base64_decode(bad[i], &out, &len))
            fail_msg("accepted \"%s\"", bad[i]);
        free(out);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_user_record_renders_by_field_name_with_the_hash_redacted),
        cmocka_unit_test(base64_round_trips_and_refuses_what_is_not_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
