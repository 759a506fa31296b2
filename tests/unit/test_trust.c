/* Unit tests: the cluster secret's MACs (processor/gateway/trust.c): the hop
 * header of a forwarded request and the membership record MAC, with a
 * rotation (previous secret) and the replay window. Time is passed in. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "processor/gateway/trust.h"

static char errstr[256];
static const char SECRET_A[] = "0123456789abcdef0123456789abcdef-secret-a";
static const char SECRET_B[] = "fedcba9876543210fedcba9876543210-secret-b";
static const char BODY[] = "{\"email\":\"ada@example.com\",\"password\":\"pw\"}";
static const int64_t NOW = 1800000000;
#define WINDOW 30

static sl_trust *trust(const char *current, const char *previous) {
    sl_trust *t = sl_trust_new(current, strlen(current), previous,
                               previous ? strlen(previous) : 0, errstr, sizeof(errstr));
    assert_non_null(t);
    return t;
}

static void sign(const sl_trust *t, int64_t when, char *out) {
    assert_int_equal(sl_trust_hop_sign(t, "POST", "/v1/login?x=1", BODY, strlen(BODY), when,
                                       "instance-a", out, SL_TRUST_HOP_MAX),
                     SL_OK);
}

static sl_trust_verdict verify(const sl_trust *t, const char *header, const char *body) {
    return sl_trust_hop_verify(t, header, "POST", "/v1/login?x=1", body, strlen(body), NOW,
                               WINDOW);
}

static void a_signed_hop_is_valid_for_the_same_request(void **state) {
    (void)state;
    sl_trust *t = trust(SECRET_A, NULL);
    char header[SL_TRUST_HOP_MAX];
    sign(t, NOW, header);
    assert_int_equal(strncmp(header, "v1:1800000000:", 14), 0);
    assert_non_null(strstr(header, ":instance-a"));
    assert_int_equal(verify(t, header, BODY), SL_TRUST_VALID);
    sl_trust_destroy(t);
}

static void a_tampered_body_method_target_or_sender_is_refused(void **state) {
    (void)state;
    sl_trust *t = trust(SECRET_A, NULL);
    char header[SL_TRUST_HOP_MAX];
    sign(t, NOW, header);
    assert_int_equal(verify(t, header, "{\"email\":\"ada@example.com\",\"password\":\"pX\"}"),
                     SL_TRUST_BAD_MAC);
    assert_int_equal(sl_trust_hop_verify(t, header, "GET", "/v1/login?x=1", BODY, strlen(BODY),
                                         NOW, WINDOW),
                     SL_TRUST_BAD_MAC);
    assert_int_equal(sl_trust_hop_verify(t, header, "POST", "/v1/login?x=2", BODY, strlen(BODY),
                                         NOW, WINDOW),
                     SL_TRUST_BAD_MAC);
    char other[SL_TRUST_HOP_MAX];
    snprintf(other, sizeof(other), "%.*s:instance-b", (int)(strrchr(header, ':') - header),
             header);
    assert_int_equal(verify(t, other, BODY), SL_TRUST_BAD_MAC);
    sl_trust_destroy(t);
}

static void a_hop_signed_with_another_secret_is_refused(void **state) {
    (void)state;
    sl_trust *a = trust(SECRET_A, NULL), *b = trust(SECRET_B, NULL);
    char header[SL_TRUST_HOP_MAX];
    sign(b, NOW, header);
    assert_int_equal(verify(a, header, BODY), SL_TRUST_BAD_MAC);
    sl_trust_destroy(a);
    sl_trust_destroy(b);
}

static void a_hop_outside_the_replay_window_is_expired(void **state) {
    (void)state;
    sl_trust *t = trust(SECRET_A, NULL);
    char header[SL_TRUST_HOP_MAX];
    sign(t, NOW - WINDOW, header);
    assert_int_equal(verify(t, header, BODY), SL_TRUST_VALID);
    sign(t, NOW - WINDOW - 1, header);
    assert_int_equal(verify(t, header, BODY), SL_TRUST_EXPIRED);
    sign(t, NOW + WINDOW + 1, header); /* from the future, too */
    assert_int_equal(verify(t, header, BODY), SL_TRUST_EXPIRED);
    sl_trust_destroy(t);
}

static void during_a_rotation_the_previous_secret_is_accepted(void **state) {
    (void)state;
    /* Instance "old" still signs with A; "new" has B current, A previous. */
    sl_trust *old = trust(SECRET_A, NULL), *rotated = trust(SECRET_B, SECRET_A);
    char header[SL_TRUST_HOP_MAX];
    sign(old, NOW, header);
    assert_int_equal(verify(rotated, header, BODY), SL_TRUST_VALID);
    sign(rotated, NOW, header); /* signs with the current one, B */
    assert_int_equal(verify(rotated, header, BODY), SL_TRUST_VALID);
    assert_int_equal(verify(old, header, BODY), SL_TRUST_BAD_MAC);
    sl_trust_destroy(old);
    sl_trust_destroy(rotated);
}

static void hop_headers_out_of_shape_are_malformed(void **state) {
    (void)state;
    sl_trust *t = trust(SECRET_A, NULL);
    char header[SL_TRUST_HOP_MAX], padded[SL_TRUST_HOP_MAX + 8];
    sign(t, NOW, header);
    snprintf(padded, sizeof(padded), "v1:0%s", header + 3); /* "01800000000" */
    static const char *const bad[] = {"", "1", "v1", "v1:", "v1:1800000000", "v1::ab:x",
                                      "v2:1800000000:00:instance-a", "v1:-5:00:x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(verify(t, bad[i], BODY), SL_TRUST_MALFORMED);
    assert_int_equal(verify(t, padded, BODY), SL_TRUST_MALFORMED);
    assert_int_equal(verify(t, NULL, BODY), SL_TRUST_MALFORMED);
    char out[SL_TRUST_HOP_MAX];
    assert_int_equal(sl_trust_hop_sign(t, "GET", "/", NULL, 0, NOW, "a:b", out, sizeof(out)),
                     SL_ERR_INVALID);
    sl_trust_destroy(t);
}

static void a_record_mac_covers_key_and_value_and_rotates(void **state) {
    (void)state;
    sl_trust *a = trust(SECRET_A, NULL), *b = trust(SECRET_B, NULL),
             *rotated = trust(SECRET_B, SECRET_A);
    const char key[] = "instance-a", value[] = "{\"address\":\"127.0.0.1:1\"}";
    char mac[SL_TRUST_RECORD_MAC_MAX];
    assert_int_equal(sl_trust_record_sign(a, key, strlen(key), value, strlen(value), mac,
                                          sizeof(mac)),
                     SL_OK);
    size_t n = strlen(mac);
    assert_int_equal(sl_trust_record_verify(a, mac, n, key, strlen(key), value, strlen(value)),
                     SL_TRUST_VALID);
    assert_int_equal(
        sl_trust_record_verify(rotated, mac, n, key, strlen(key), value, strlen(value)),
        SL_TRUST_VALID);
    assert_int_equal(sl_trust_record_verify(b, mac, n, key, strlen(key), value, strlen(value)),
                     SL_TRUST_BAD_MAC);
    assert_int_equal(sl_trust_record_verify(a, mac, n, "instance-b", 10, value, strlen(value)),
                     SL_TRUST_BAD_MAC);
    assert_int_equal(sl_trust_record_verify(a, mac, n, key, strlen(key), value, strlen(value) - 1),
                     SL_TRUST_BAD_MAC);
    assert_int_equal(sl_trust_record_verify(a, NULL, 0, key, strlen(key), value, strlen(value)),
                     SL_TRUST_MALFORMED);
    sl_trust_destroy(a);
    sl_trust_destroy(b);
    sl_trust_destroy(rotated);
}

static void short_secrets_are_refused(void **state) {
    (void)state;
    assert_null(sl_trust_new("short", 5, NULL, 0, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "32"));
    assert_null(sl_trust_new(SECRET_A, strlen(SECRET_A), "short", 5, errstr, sizeof(errstr)));
    sl_trust_destroy(NULL);
}

/* Sealed bodies: the plaintext is not in them, they open only with the
 * same context and an unaltered body, under either secret of a rotation. */
static void a_sealed_body_hides_the_plaintext_and_opens_only_in_its_context(void **state) {
    (void)state;
    sl_trust *a = trust(SECRET_A, NULL), *b = trust(SECRET_B, NULL);
    sl_trust *rotated = trust(SECRET_B, SECRET_A);
    unsigned char *sealed = NULL, *again = NULL;
    size_t len = 0, again_len = 0;
    assert_int_equal(sl_trust_seal(a, "request v1:1", BODY, strlen(BODY), &sealed, &len), SL_OK);
    assert_int_equal(len, strlen(BODY) + SL_TRUST_SEAL_OVERHEAD);
    assert_null(memmem(sealed, len, "password", 8));
    assert_null(memmem(sealed, len, "ada@", 4));
    /* a fresh nonce each time: the same body seals differently */
    assert_int_equal(sl_trust_seal(a, "request v1:1", BODY, strlen(BODY), &again, &again_len),
                     SL_OK);
    assert_memory_not_equal(sealed, again, len);
    char *plain = NULL;
    size_t plain_len = 0;
    assert_int_equal(sl_trust_open(a, "request v1:1", sealed, len, &plain, &plain_len),
                     SL_TRUST_VALID);
    assert_int_equal(plain_len, strlen(BODY));
    assert_string_equal(plain, BODY);
    free(plain);
    /* the previous secret of a rotation still opens it */
    assert_int_equal(sl_trust_open(rotated, "request v1:1", sealed, len, &plain, &plain_len),
                     SL_TRUST_VALID);
    free(plain);
    /* another context (another request, or the answer's direction) */
    assert_int_equal(sl_trust_open(a, "answer v1:1", sealed, len, &plain, &plain_len),
                     SL_TRUST_BAD_MAC);
    assert_null(plain);
    /* another secret */
    assert_int_equal(sl_trust_open(b, "request v1:1", sealed, len, &plain, &plain_len),
                     SL_TRUST_BAD_MAC);
    /* one bit flipped anywhere: nonce, ciphertext, tag */
    size_t at[] = {0, 30, len - 1};
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        sealed[at[i]] ^= 1;
        assert_int_equal(sl_trust_open(a, "request v1:1", sealed, len, &plain, &plain_len),
                         SL_TRUST_BAD_MAC);
        sealed[at[i]] ^= 1;
    }
    /* too short to be sealed; an empty body seals to the overhead alone */
    assert_int_equal(
        sl_trust_open(a, "request v1:1", sealed, SL_TRUST_SEAL_OVERHEAD - 1, &plain, &plain_len),
        SL_TRUST_MALFORMED);
    free(sealed);
    assert_int_equal(sl_trust_seal(a, "x", "", 0, &sealed, &len), SL_OK);
    assert_int_equal(len, SL_TRUST_SEAL_OVERHEAD);
    assert_int_equal(sl_trust_open(a, "x", sealed, len, &plain, &plain_len), SL_TRUST_VALID);
    assert_int_equal(plain_len, 0);
    free(plain);
    free(sealed);
    free(again);
    sl_trust_destroy(a);
    sl_trust_destroy(b);
    sl_trust_destroy(rotated);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_signed_hop_is_valid_for_the_same_request),
        cmocka_unit_test(a_tampered_body_method_target_or_sender_is_refused),
        cmocka_unit_test(a_hop_signed_with_another_secret_is_refused),
        cmocka_unit_test(a_hop_outside_the_replay_window_is_expired),
        cmocka_unit_test(during_a_rotation_the_previous_secret_is_accepted),
        cmocka_unit_test(hop_headers_out_of_shape_are_malformed),
        cmocka_unit_test(a_record_mac_covers_key_and_value_and_rotates),
        cmocka_unit_test(short_secrets_are_refused),
        cmocka_unit_test(a_sealed_body_hides_the_plaintext_and_opens_only_in_its_context),
    };
    return cmocka_run_group_tests_name("trust", tests, NULL, NULL);
}
