/* Unit tests: token keys, issuing, strict verification, the verified-token
 * cache and JWKS (connectors/http/auth/{jwt,keys,cache}.c).
 *
 * Forged tokens are signed here with OpenSSL directly (not through the
 * module), so a test of "a validly signed token with a bad claim" does not
 * depend on the issuer it is checking. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "connectors/http/auth/jwt.h"

#define NOW 1700000000
#define ISS "https://sluice.test"
#define AUD "sluice-api"

static char errstr[1024];

#define assert_verdict(actual, expected)                                                           \
    do {                                                                                           \
        sl_jwt_error actual_ = (actual), expected_ = (expected);                                   \
        if (actual_ != expected_)                                                                  \
            fail_msg("verdict %s, expected %s (errstr: %s)", sl_jwt_error_name(actual_),           \
                     sl_jwt_error_name(expected_), errstr);                                        \
    } while (0)

/* Keys shared by every test: generating RSA keys takes a while under ASan. */
static struct {
    char dir[64];
    char current_path[128], previous_path[128], ec_path[128];
    sl_jwt_keys *keys;          /* current + previous, RSA */
    sl_jwt_keys *previous_only; /* the previous key as a signing key */
    sl_jwt_keys *ec;            /* an EC P-256 signing key */
    EVP_PKEY *current_private, *ec_private;
} fx;

static EVP_PKEY *read_private(const char *path) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(pkey);
    return pkey;
}

static int group_setup(void **state) {
    (void)state;
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/sluice-jwt-XXXXXX");
    if (!mkdtemp(fx.dir))
        return -1;
    snprintf(fx.current_path, sizeof(fx.current_path), "%s/current.pem", fx.dir);
    snprintf(fx.previous_path, sizeof(fx.previous_path), "%s/previous.pem", fx.dir);
    snprintf(fx.ec_path, sizeof(fx.ec_path), "%s/ec.pem", fx.dir);
    if (sl_jwt_key_generate(fx.current_path, SL_JWT_RS256, NULL, errstr, sizeof(errstr)) ||
        sl_jwt_key_generate(fx.previous_path, SL_JWT_RS256, NULL, errstr, sizeof(errstr)) ||
        sl_jwt_key_generate(fx.ec_path, SL_JWT_ES256, NULL, errstr, sizeof(errstr)))
        return -1;
    fx.keys = sl_jwt_keys_load(fx.current_path, fx.previous_path, errstr, sizeof(errstr));
    fx.previous_only = sl_jwt_keys_load(fx.previous_path, NULL, errstr, sizeof(errstr));
    fx.ec = sl_jwt_keys_load(fx.ec_path, NULL, errstr, sizeof(errstr));
    if (!fx.keys || !fx.previous_only || !fx.ec)
        return -1;
    fx.current_private = read_private(fx.current_path);
    fx.ec_private = read_private(fx.ec_path);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    sl_jwt_keys_destroy(fx.keys);
    sl_jwt_keys_destroy(fx.previous_only);
    sl_jwt_keys_destroy(fx.ec);
    EVP_PKEY_free(fx.current_private);
    EVP_PKEY_free(fx.ec_private);
    unlink(fx.current_path);
    unlink(fx.previous_path);
    unlink(fx.ec_path);
    rmdir(fx.dir);
    return 0;
}

/* ---- helpers ------------------------------------------------------------- */

static sl_jwt_expect expect_typ(sl_jwt_typ typ) {
    sl_jwt_expect e = {.iss = ISS, .aud = AUD, .typ = typ, .now = NOW, .leeway_s = 0};
    return e;
}

static sl_jwt_claims claims_of(sl_jwt_typ typ, const char *sub, int64_t ttl) {
    sl_jwt_claims c;
    assert_int_equal(
        sl_jwt_claims_init(&c, typ, sub, "session-1", ISS, AUD, NOW, ttl, errstr, sizeof(errstr)),
        SL_OK);
    return c;
}

/* Issue a token with `keys` into out (SL_JWT_MAX_TOKEN + 1 bytes). */
static void issue_with(const sl_jwt_keys *keys, const sl_jwt_claims *c, char *out) {
    assert_int_equal(sl_jwt_issue(keys, c, out, SL_JWT_MAX_TOKEN + 1, NULL, errstr, sizeof(errstr)),
                     SL_OK);
}

static void issue(sl_jwt_typ typ, char *out) {
    sl_jwt_claims c = claims_of(typ, "user-42", 900);
    issue_with(fx.keys, &c, out);
}

static sl_jwt_error verify(const sl_jwt_keys *keys, const char *token, sl_jwt_typ typ,
                           sl_jwt_claims *out) {
    sl_jwt_expect e = expect_typ(typ);
    return sl_jwt_verify(keys, token, strlen(token), &e, out, errstr, sizeof(errstr));
}

static void append_b64(char *out, size_t out_size, const void *data, size_t len) {
    size_t used = strlen(out);
    assert_int_equal(sl_jwt_b64url_encode(data, len, out + used, out_size - used), SL_OK);
}

static void sign_with(EVP_PKEY *pkey, const char *data, unsigned char *sig, size_t *sig_len) {
    unsigned char der[1024];
    size_t der_len = sizeof(der);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey), 1);
    assert_int_equal(EVP_DigestSign(ctx, der, &der_len, (const unsigned char *)data, strlen(data)),
                     1);
    EVP_MD_CTX_free(ctx);
    if (EVP_PKEY_is_a(pkey, "EC")) { /* DER -> JWS r || s */
        const unsigned char *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
        assert_non_null(es);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32), 32);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32), 32);
        ECDSA_SIG_free(es);
        *sig_len = 64;
    } else {
        memcpy(sig, der, der_len);
        *sig_len = der_len;
    }
}

/* base64url(header) "." base64url(payload) "." base64url(signature by pkey) */
static void forge(EVP_PKEY *pkey, const char *header, const char *payload, char *out,
                  size_t out_size) {
    out[0] = '\0';
    append_b64(out, out_size, header, strlen(header));
    strncat(out, ".", out_size - strlen(out) - 1);
    append_b64(out, out_size, payload, strlen(payload));
    unsigned char sig[1024];
    size_t sig_len;
    sign_with(pkey, out, sig, &sig_len);
    strncat(out, ".", out_size - strlen(out) - 1);
    append_b64(out, out_size, sig, sig_len);
}

static void rsa_header(char *out, size_t size, const char *typ) {
    snprintf(out, size, "{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":\"%s\"}",
             sl_jwt_keys_current_kid(fx.keys), typ);
}

/* A valid access-token payload; tests change it before forging. */
static json_t *valid_payload(void) {
    return json_pack("{s:s, s:I, s:I, s:s, s:s, s:I, s:s, s:s, s:s}", "aud", AUD, "exp",
                     (json_int_t)NOW + 900, "iat", (json_int_t)NOW, "iss", ISS, "jti",
                     "jti-0123456789", "nbf", (json_int_t)NOW, "sid", "session-1", "sub", "user-42",
                     "typ", "access");
}

/* Sign `payload` (taken) with the current RSA key and a correct header. */
static void forge_payload(json_t *payload, char *out, size_t out_size) {
    char header[256];
    rsa_header(header, sizeof(header), "at+jwt");
    char *text = json_dumps(payload, JSON_COMPACT);
    assert_non_null(text);
    forge(fx.current_private, header, text, out, out_size);
    free(text);
    json_decref(payload);
}

static char *part(char *token, int index) { /* start of part index (0..2) */
    char *p = token;
    for (int i = 0; i < index; i++)
        p = strchr(p, '.') + 1;
    return p;
}

/* ---- base64url ----------------------------------------------------------- */

static void b64url_encodes_rfc4648_vectors_without_padding(void **state) {
    (void)state;
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    char out[16];
    unsigned char back[16];
    size_t back_len;
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        assert_int_equal(sl_jwt_b64url_encode((const unsigned char *)plain[i], strlen(plain[i]),
                                              out, sizeof(out)),
                         SL_OK);
        assert_string_equal(out, coded[i]);
        assert_true(sl_jwt_b64url_decode(out, strlen(out), back, sizeof(back), &back_len));
        assert_int_equal(back_len, strlen(plain[i]));
        assert_memory_equal(back, plain[i], back_len);
    }
    const unsigned char url_safe[] = {0xfb, 0xff};
    assert_int_equal(sl_jwt_b64url_encode(url_safe, 2, out, sizeof(out)), SL_OK);
    assert_string_equal(out, "-_8");
    assert_int_equal(sl_jwt_b64url_encode(url_safe, 2, out, 3), SL_ERR_FULL);
}

static void b64url_decoder_rejects_padding_foreign_characters_and_noncanonical_bits(void **state) {
    (void)state;
    unsigned char out[16];
    size_t n;
    assert_false(sl_jwt_b64url_decode("Zg==", 4, out, sizeof(out), &n));  /* padding */
    assert_false(sl_jwt_b64url_decode("Zm8=", 4, out, sizeof(out), &n));  /* padding */
    assert_false(sl_jwt_b64url_decode("+/8", 3, out, sizeof(out), &n));   /* base64, not url */
    assert_false(sl_jwt_b64url_decode("Zm 9v", 5, out, sizeof(out), &n)); /* whitespace */
    assert_false(sl_jwt_b64url_decode("Z", 1, out, sizeof(out), &n));     /* 1 mod 4 */
    assert_false(sl_jwt_b64url_decode("Zh", 2, out, sizeof(out), &n));    /* "f" with a low bit */
    assert_false(sl_jwt_b64url_decode("Zm9", 3, out, sizeof(out), &n));   /* "fo" with a low bit */
    assert_false(sl_jwt_b64url_decode("Zm9vYmFy", 8, out, 5, &n));        /* does not fit */
    assert_true(sl_jwt_b64url_decode("Zm8", 3, out, sizeof(out), &n));
}

/* ---- issue and verify ---------------------------------------------------- */

static void access_token_round_trips(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims issued = claims_of(SL_JWT_ACCESS, "user-42", SL_JWT_ACCESS_TTL_S);
    size_t len = 0;
    assert_int_equal(
        sl_jwt_issue(fx.keys, &issued, token, sizeof(token), &len, errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(len, strlen(token));
    sl_jwt_claims got;
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, &got), SL_JWT_OK);
    assert_int_equal(got.typ, SL_JWT_ACCESS);
    assert_string_equal(got.sub, "user-42");
    assert_string_equal(got.sid, "session-1");
    assert_string_equal(got.jti, issued.jti);
    assert_int_equal(strlen(got.jti), SL_JWT_RANDOM_ID_LEN);
    assert_string_equal(got.iss, ISS);
    assert_string_equal(got.aud, AUD);
    assert_int_equal(got.iat, NOW);
    assert_int_equal(got.nbf, NOW);
    assert_int_equal(got.exp, NOW + SL_JWT_ACCESS_TTL_S);
    assert_string_equal(got.kid, sl_jwt_keys_current_kid(fx.keys));
}

static void access_token_header_is_typed_at_jwt_with_the_kid(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1], header[256];
    issue(SL_JWT_ACCESS, token);
    size_t n;
    assert_true(sl_jwt_b64url_decode(token, (size_t)(strchr(token, '.') - token),
                                     (unsigned char *)header, sizeof(header) - 1, &n));
    header[n] = '\0';
    char want[256];
    rsa_header(want, sizeof(want), "at+jwt");
    assert_string_equal(header, want);
}

static void refresh_token_round_trips(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims issued = claims_of(SL_JWT_REFRESH, "user-7", SL_JWT_REFRESH_TTL_S);
    issue_with(fx.keys, &issued, token);
    sl_jwt_claims got;
    assert_verdict(verify(fx.keys, token, SL_JWT_REFRESH, &got), SL_JWT_OK);
    assert_int_equal(got.typ, SL_JWT_REFRESH);
    assert_string_equal(got.sub, "user-7");
    assert_int_equal(got.exp, NOW + SL_JWT_REFRESH_TTL_S);
}

static void es256_token_round_trips(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims issued = claims_of(SL_JWT_ACCESS, "user-42", 900);
    issue_with(fx.ec, &issued, token);
    sl_jwt_claims got;
    assert_verdict(verify(fx.ec, token, SL_JWT_ACCESS, &got), SL_JWT_OK);
    assert_string_equal(got.jti, issued.jti);
    assert_int_equal(sl_jwt_keys_alg(fx.ec), SL_JWT_ES256);
}

static void refresh_token_is_refused_where_an_access_token_is_expected(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_REFRESH, token);
    sl_jwt_claims got;
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, &got), SL_JWT_ERR_TYPE);
    assert_string_equal(got.sub, ""); /* zeroed on refusal */
}

static void access_token_is_refused_where_a_refresh_token_is_expected(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    assert_verdict(verify(fx.keys, token, SL_JWT_REFRESH, NULL), SL_JWT_ERR_TYPE);
}

static void typ_claim_must_match_even_when_the_header_typ_does(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    json_t *payload = valid_payload();
    json_object_set_new(payload, "typ", json_string("refresh"));
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_TYPE);
}

static void header_typ_accepts_the_application_prefix_in_any_case(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1], header[256];
    rsa_header(header, sizeof(header), "Application/AT+JWT");
    json_t *payload = valid_payload();
    char *text = json_dumps(payload, JSON_COMPACT);
    forge(fx.current_private, header, text, token, sizeof(token));
    free(text);
    json_decref(payload);
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_OK);
}

static void expired_token_is_refused_and_leeway_is_honoured(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token); /* exp = NOW + 900 */
    sl_jwt_expect e = expect_typ(SL_JWT_ACCESS);
    e.now = NOW + 900;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_EXPIRED);
    e.now = NOW + 899;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_OK);
    e.now = NOW + 929;
    e.leeway_s = 30;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_OK);
    e.now = NOW + 930;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_EXPIRED);
}

static void token_before_its_nbf_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    json_t *payload = valid_payload();
    json_object_set_new(payload, "nbf", json_integer(NOW + 60));
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_NOT_YET_VALID);
    sl_jwt_expect e = expect_typ(SL_JWT_ACCESS);
    e.leeway_s = 60;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_OK);
}

static void token_issued_in_the_future_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    json_t *payload = valid_payload();
    json_object_set_new(payload, "iat", json_integer(NOW + 60));
    json_object_del(payload, "nbf");
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_NOT_YET_VALID);
}

/* auth_time (when the user logged in) is issued, read back, and bounds
 * the session: at auth_time + session_max_s the token is refused whatever
 * its exp; without auth_time, iat stands in. */
static void auth_time_bounds_the_session_whatever_the_exp(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims c = claims_of(SL_JWT_REFRESH, "user-42", 86400);
    c.auth_time = NOW - 1000;
    issue_with(fx.keys, &c, token);
    sl_jwt_claims got;
    sl_jwt_expect e = expect_typ(SL_JWT_REFRESH);
    e.session_max_s = 1100; /* the session ends at NOW + 100 */
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, &got, errstr, sizeof(errstr)),
                   SL_JWT_OK);
    assert_int_equal(got.auth_time, NOW - 1000);
    e.now = NOW + 99;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_OK);
    e.now = NOW + 100;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_SESSION_TOO_OLD);
    e.now = NOW + 129;
    e.leeway_s = 30;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_OK);
    e.session_max_s = 0; /* unbounded */
    e.now = NOW + 80000;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_OK);
    /* no auth_time: the session counts from iat */
    sl_jwt_claims old = claims_of(SL_JWT_REFRESH, "user-42", 86400);
    issue_with(fx.keys, &old, token);
    e = expect_typ(SL_JWT_REFRESH);
    e.session_max_s = 100;
    e.now = NOW + 100;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, &got, errstr, sizeof(errstr)),
                   SL_JWT_ERR_SESSION_TOO_OLD);
    e.now = NOW + 99;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, &got, errstr, sizeof(errstr)),
                   SL_JWT_OK);
    assert_int_equal(got.auth_time, 0);
}

static void auth_time_after_iat_or_not_an_integer_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims c = claims_of(SL_JWT_ACCESS, "user-42", 900);
    c.auth_time = NOW + 1;
    assert_int_equal(sl_jwt_issue(fx.keys, &c, token, sizeof(token), NULL, errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    json_t *payload = valid_payload();
    json_object_set_new(payload, "auth_time", json_integer(NOW + 1));
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_CLAIMS);
    const json_int_t bad[] = {0, -5};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        payload = valid_payload();
        json_object_set_new(payload, "auth_time", json_integer(bad[i]));
        forge_payload(payload, token, sizeof(token));
        assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_CLAIMS);
    }
    payload = valid_payload();
    json_object_set_new(payload, "auth_time", json_string("yesterday"));
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_CLAIMS);
    payload = valid_payload();
    json_object_set_new(payload, "auth_time", json_integer(NOW - 10));
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_OK);
}

static void wrong_issuer_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    sl_jwt_expect e = expect_typ(SL_JWT_ACCESS);
    e.iss = "https://other.test";
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_ISSUER);
}

static void wrong_audience_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    sl_jwt_expect e = expect_typ(SL_JWT_ACCESS);
    e.aud = "dialogs";
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_AUDIENCE);
}

static void audience_array_must_contain_the_expected_audience(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    json_t *payload = valid_payload();
    json_object_set_new(payload, "aud", json_pack("[s, s]", "dialogs", AUD));
    forge_payload(payload, token, sizeof(token));
    sl_jwt_claims got;
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, &got), SL_JWT_OK);
    assert_string_equal(got.aud, AUD);

    payload = valid_payload();
    json_object_set_new(payload, "aud", json_pack("[s, s]", "dialogs", "billing"));
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_AUDIENCE);

    payload = valid_payload();
    json_object_set_new(payload, "aud", json_pack("[s, i]", AUD, 7));
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_CLAIMS);
}

static void unknown_kid_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    const char *header =
        "{\"alg\":\"RS256\",\"kid\":\"AAAAAAAAAAAAAAAAAAAAAA\",\"typ\":\"at+jwt\"}";
    json_t *payload = valid_payload();
    char *text = json_dumps(payload, JSON_COMPACT);
    forge(fx.current_private, header, text, token, sizeof(token));
    free(text);
    json_decref(payload);
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_KID_UNKNOWN);
}

static void token_without_kid_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    json_t *payload = valid_payload();
    char *text = json_dumps(payload, JSON_COMPACT);
    forge(fx.current_private, "{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}", text, token, sizeof(token));
    free(text);
    json_decref(payload);
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_KID_MISSING);
}

/* header.payload. with the given alg and no signature at all */
static void unsigned_token(const char *alg, char *out, size_t out_size) {
    char header[256];
    snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"at+jwt\"}", alg,
             sl_jwt_keys_current_kid(fx.keys));
    json_t *payload = valid_payload();
    char *text = json_dumps(payload, JSON_COMPACT);
    out[0] = '\0';
    append_b64(out, out_size, header, strlen(header));
    strncat(out, ".", out_size - strlen(out) - 1);
    append_b64(out, out_size, text, strlen(text));
    strncat(out, ".", out_size - strlen(out) - 1);
    free(text);
    json_decref(payload);
}

static void alg_none_is_refused(void **state) {
    (void)state;
    static const char *const algs[] = {"none", "None", "NONE", "nOnE", ""};
    char token[SL_JWT_MAX_TOKEN + 1];
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        unsigned_token(algs[i], token, sizeof(token));
        assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_ALG);
    }
}

static void unsupported_algs_are_refused(void **state) {
    (void)state;
    static const char *const algs[] = {"rs256", "RS384", "RS512", "PS256", "HS512", "EdDSA"};
    char token[SL_JWT_MAX_TOKEN + 1];
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        unsigned_token(algs[i], token, sizeof(token));
        assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_ALG);
    }
}

/* The classic confusion attack: HS256 with the verifier's RSA public key
 * (as PEM text, and as DER) used as the HMAC secret. */
static void hs256_keyed_with_the_rsa_public_key_is_refused(void **state) {
    (void)state;
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(bio, fx.current_private), 1);
    char *pem;
    long pem_len = BIO_get_mem_data(bio, &pem);
    unsigned char *der = NULL;
    int der_len = i2d_PUBKEY(fx.current_private, &der);
    assert_true(der_len > 0);
    const struct {
        const void *secret;
        int len;
    } secrets[] = {{pem, (int)pem_len}, {der, der_len}};
    for (size_t i = 0; i < 2; i++) {
        char token[SL_JWT_MAX_TOKEN + 1];
        unsigned_token("HS256", token, sizeof(token));
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        size_t signed_len = strlen(token) - 1; /* without the last '.' */
        assert_non_null(HMAC(EVP_sha256(), secrets[i].secret, secrets[i].len,
                             (const unsigned char *)token, signed_len, mac, &mac_len));
        append_b64(token, sizeof(token), mac, mac_len);
        assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_ALG);
    }
    OPENSSL_free(der);
    BIO_free(bio);
}

static void alg_must_be_the_alg_of_the_key_named_by_kid(void **state) {
    (void)state;
    /* ES256 signed with a real EC key, but naming the RSA key's kid. */
    char token[SL_JWT_MAX_TOKEN + 1], header[256];
    snprintf(header, sizeof(header), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"at+jwt\"}",
             sl_jwt_keys_current_kid(fx.keys));
    json_t *payload = valid_payload();
    char *text = json_dumps(payload, JSON_COMPACT);
    forge(fx.ec_private, header, text, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_ALG);
    /* and RS256 naming the EC key's kid */
    snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":\"at+jwt\"}",
             sl_jwt_keys_current_kid(fx.ec));
    forge(fx.current_private, header, text, token, sizeof(token));
    assert_verdict(verify(fx.ec, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_ALG);
    free(text);
    json_decref(payload);
}

static void header_parameters_beyond_alg_kid_typ_are_refused(void **state) {
    (void)state;
    static const char *const extras[] = {
        "\"crit\":[\"exp\"]", "\"jku\":\"https://evil.test/jwks.json\"",
        "\"x5u\":\"https://evil.test/cert.pem\"", "\"jwk\":{\"kty\":\"oct\",\"k\":\"AAAA\"}",
        "\"x5c\":[\"MIIB\"]"};
    json_t *payload = valid_payload();
    char *text = json_dumps(payload, JSON_COMPACT);
    for (size_t i = 0; i < sizeof(extras) / sizeof(extras[0]); i++) {
        char token[SL_JWT_MAX_TOKEN + 1], header[512];
        snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":\"at+jwt\",%s}",
                 sl_jwt_keys_current_kid(fx.keys), extras[i]);
        forge(fx.current_private, header, text, token, sizeof(token));
        assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_HEADER);
    }
    free(text);
    json_decref(payload);
}

/* Replace one base64url character by another valid one with the same low
 * bits, so the text stays canonical and only the decoded bytes change. */
static void flip(char *c) {
    *c = *c == 'A' ? 'Q' : 'A';
}

static void tampered_payload_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    char *payload = part(token, 1);
    flip(payload + 10);
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_SIGNATURE);
}

static void payload_swapped_from_another_token_is_refused(void **state) {
    (void)state;
    char victim[SL_JWT_MAX_TOKEN + 1], attacker[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims admin = claims_of(SL_JWT_ACCESS, "admin", 900);
    issue_with(fx.keys, &admin, victim);
    issue(SL_JWT_ACCESS, attacker);
    /* attacker's header and signature around the admin payload */
    char forged[3 * SL_JWT_MAX_TOKEN];
    char *a_payload = part(attacker, 1), *a_sig = part(attacker, 2), *v_payload = part(victim, 1);
    snprintf(forged, sizeof(forged), "%.*s%.*s%s", (int)(a_payload - attacker), attacker,
             (int)(part(victim, 2) - v_payload), v_payload, a_sig);
    assert_verdict(verify(fx.keys, forged, SL_JWT_ACCESS, NULL), SL_JWT_ERR_SIGNATURE);
}

static void tampered_signature_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    flip(part(token, 2) + 5);
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_SIGNATURE);
}

static void signature_with_noncanonical_trailing_bits_is_malformed(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    /* 256 bytes encode to 342 characters; the last one carries 4 unused bits */
    char *last = token + strlen(token) - 1;
    int v =
        (int)(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *last) -
              "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
    assert_int_equal(v & 0x0f, 0);
    *last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[v | 1];
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_MALFORMED);
}

static void truncated_token_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    size_t len = strlen(token);
    sl_jwt_expect e = expect_typ(SL_JWT_ACCESS);
    /* one character short: 341 characters cannot be base64url */
    assert_verdict(sl_jwt_verify(fx.keys, token, len - 1, &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_MALFORMED);
    /* two short: 340 characters are exactly 255 bytes, one byte missing */
    assert_verdict(sl_jwt_verify(fx.keys, token, len - 2, &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_SIGNATURE);
    /* no signature */
    size_t unsigned_len = (size_t)(part(token, 2) - token);
    assert_verdict(sl_jwt_verify(fx.keys, token, unsigned_len, &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_SIGNATURE);
    /* no signature part */
    assert_verdict(
        sl_jwt_verify(fx.keys, token, unsigned_len - 1, &e, NULL, errstr, sizeof(errstr)),
        SL_JWT_ERR_MALFORMED);
    assert_verdict(sl_jwt_verify(fx.keys, token, 0, &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_MALFORMED);
}

static void extra_part_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 8];
    issue(SL_JWT_ACCESS, token);
    strncat(token, ".", sizeof(token) - strlen(token) - 1);
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_MALFORMED);
    strncat(token, "AAAA.AAAA", sizeof(token) - strlen(token) - 1); /* JWE-like, 5 parts */
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_MALFORMED);
}

static void base64_padding_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1], padded[SL_JWT_MAX_TOKEN + 8];
    issue(SL_JWT_ACCESS, token);
    /* the signature (342 characters, 2 mod 4) padded to a multiple of 4 */
    snprintf(padded, sizeof(padded), "%s==", token);
    assert_verdict(verify(fx.keys, padded, SL_JWT_ACCESS, NULL), SL_JWT_ERR_MALFORMED);
    /* the header padded */
    char *dot = strchr(token, '.');
    snprintf(padded, sizeof(padded), "%.*s=%s", (int)(dot - token), token, dot);
    assert_verdict(verify(fx.keys, padded, SL_JWT_ACCESS, NULL), SL_JWT_ERR_MALFORMED);
}

static void overlong_token_is_refused_before_parsing(void **state) {
    (void)state;
    char *big = malloc(SL_JWT_MAX_TOKEN + 2);
    assert_non_null(big);
    issue(SL_JWT_ACCESS, big);
    size_t len = strlen(big);
    memset(big + len, 'A', SL_JWT_MAX_TOKEN + 1 - len); /* grow the signature */
    big[SL_JWT_MAX_TOKEN + 1] = '\0';
    assert_verdict(verify(fx.keys, big, SL_JWT_ACCESS, NULL), SL_JWT_ERR_TOO_LONG);
    free(big);
}

static void deeply_nested_json_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    json_t *payload = valid_payload(); /* depth 1; [[[1]]] makes 4: the limit */
    json_object_set_new(payload, "x", json_pack("[[[i]]]", 1));
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_OK);

    payload = valid_payload();
    json_object_set_new(payload, "x", json_pack("[[[{s:i}]]]", "y", 1));
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_MALFORMED);

    /* 1000 levels in the (unsigned, parsed first) header */
    char header[2100];
    size_t n = 0;
    n += (size_t)snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"x\":");
    for (int i = 0; i < 1000; i++)
        header[n++] = '[';
    for (int i = 0; i < 1000; i++)
        header[n++] = ']';
    header[n++] = '}';
    header[n] = '\0';
    token[0] = '\0';
    append_b64(token, sizeof(token), header, n);
    strncat(token, ".e30.AAAA", sizeof(token) - strlen(token) - 1);
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_MALFORMED);
}

static void brackets_inside_strings_do_not_count_as_nesting(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    json_t *payload = valid_payload();
    json_object_set_new(payload, "note", json_string("[[[[[{{{{\\\"]]]]"));
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_OK);
}

static void duplicate_claims_are_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1], header[256], text[1024];
    rsa_header(header, sizeof(header), "at+jwt");
    json_t *payload = valid_payload();
    char *valid = json_dumps(payload, JSON_COMPACT);
    /* a second "sub" in front: a parser keeping the last one would see
     * user-42, one keeping the first would see admin */
    snprintf(text, sizeof(text), "{\"sub\":\"admin\",%s", valid + 1);
    forge(fx.current_private, header, text, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_MALFORMED);
    /* and in the header */
    snprintf(text, sizeof(text), "{\"alg\":\"none\",%s", header + 1);
    forge(fx.current_private, text, valid, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_MALFORMED);
    free(valid);
    json_decref(payload);
}

static void every_required_claim_is_required(void **state) {
    (void)state;
    static const char *const required[] = {"typ", "sub", "sid", "jti", "iss", "aud", "exp", "iat"};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        char token[SL_JWT_MAX_TOKEN + 1];
        json_t *payload = valid_payload();
        json_object_del(payload, required[i]);
        forge_payload(payload, token, sizeof(token));
        sl_jwt_error verdict = verify(fx.keys, token, SL_JWT_ACCESS, NULL);
        if (verdict != SL_JWT_ERR_CLAIMS)
            fail_msg("without %s: %s", required[i], sl_jwt_error_name(verdict));
    }
}

static void claims_of_the_wrong_shape_are_refused(void **state) {
    (void)state;
    char long_id[SL_JWT_MAX_ID + 2];
    memset(long_id, 'x', SL_JWT_MAX_ID + 1);
    long_id[SL_JWT_MAX_ID + 1] = '\0';
    struct {
        const char *name;
        json_t *value;
    } bad[] = {
        {"exp", json_string("1700000900")},
        {"exp", json_real(1700000900.5)},
        {"iat", json_integer(-1)},
        {"exp", json_integer(NOW - 1)}, /* before iat */
        {"sub", json_integer(42)},
        {"sub", json_string("")},
        {"sub", json_string(long_id)},
        {"jti", json_string("a\nb")},
        {"typ", json_string("id")},
        {"nbf", json_string("now")},
        {"aud", json_array()},
        {"iss", json_null()},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char token[SL_JWT_MAX_TOKEN + 1];
        json_t *payload = valid_payload();
        json_object_set_new(payload, bad[i].name, bad[i].value);
        forge_payload(payload, token, sizeof(token));
        sl_jwt_error verdict = verify(fx.keys, token, SL_JWT_ACCESS, NULL);
        if (verdict != SL_JWT_ERR_CLAIMS)
            fail_msg("bad %s (case %zu): %s", bad[i].name, i, sl_jwt_error_name(verdict));
    }
}

static void payload_that_is_not_an_object_is_malformed(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1], header[256];
    rsa_header(header, sizeof(header), "at+jwt");
    forge(fx.current_private, header, "[1,2]", token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_MALFORMED);
    forge(fx.current_private, header, "{\"sub\":", token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_MALFORMED);
}

static void errstr_never_contains_token_content(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    json_t *payload = valid_payload();
    json_object_set_new(payload, "iss", json_string("SECRET-ISSUER"));
    json_object_set_new(payload, "sub", json_string("SECRET-SUB"));
    forge_payload(payload, token, sizeof(token));
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_ISSUER);
    assert_null(strstr(errstr, "SECRET"));
    assert_null(strstr(errstr, part(token, 2)));
    flip(part(token, 1) + 3);
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_SIGNATURE);
    assert_null(strstr(errstr, "SECRET"));
    assert_true(strlen(errstr) < 100);
}

static void caller_mistakes_are_internal_errors_not_client_errors(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    sl_jwt_expect e = expect_typ(SL_JWT_ACCESS);
    e.aud = NULL;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_INTERNAL);
    e = expect_typ(0);
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_INTERNAL);
    e = expect_typ(SL_JWT_ACCESS);
    e.leeway_s = SL_JWT_MAX_LEEWAY_S + 1;
    assert_verdict(sl_jwt_verify(fx.keys, token, strlen(token), &e, NULL, errstr, sizeof(errstr)),
                   SL_JWT_ERR_INTERNAL);
    assert_string_equal(sl_jwt_error_name(SL_JWT_ERR_INTERNAL), "SL_JWT_ERR_INTERNAL");
    assert_string_equal(sl_jwt_error_msg(SL_JWT_ERR_EXPIRED), "token has expired");
}

static void issue_reports_a_buffer_too_small(void **state) {
    (void)state;
    char token[64];
    sl_jwt_claims c = claims_of(SL_JWT_ACCESS, "user-42", 900);
    assert_int_equal(sl_jwt_issue(fx.keys, &c, token, sizeof(token), NULL, errstr, sizeof(errstr)),
                     SL_ERR_FULL);
}

static void issue_refuses_incomplete_claims(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims c = claims_of(SL_JWT_ACCESS, "user-42", 900);
    c.jti[0] = '\0';
    assert_int_equal(sl_jwt_issue(fx.keys, &c, token, sizeof(token), NULL, errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    c = claims_of(SL_JWT_ACCESS, "user-42", 900);
    c.exp = c.iat;
    assert_int_equal(sl_jwt_issue(fx.keys, &c, token, sizeof(token), NULL, errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
}

static void claims_init_refuses_bad_values(void **state) {
    (void)state;
    sl_jwt_claims c;
    assert_int_equal(sl_jwt_claims_init(&c, SL_JWT_ACCESS, "user\n42", "s", ISS, AUD, NOW, 900,
                                        errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    assert_int_equal(
        sl_jwt_claims_init(&c, SL_JWT_ACCESS, "u", "", ISS, AUD, NOW, 900, errstr, sizeof(errstr)),
        SL_ERR_INVALID);
    assert_int_equal(
        sl_jwt_claims_init(&c, SL_JWT_ACCESS, "u", "s", ISS, AUD, NOW, 0, errstr, sizeof(errstr)),
        SL_ERR_INVALID);
    assert_int_equal(
        sl_jwt_claims_init(&c, 3, "u", "s", ISS, AUD, NOW, 900, errstr, sizeof(errstr)),
        SL_ERR_INVALID);
}

static void random_ids_are_distinct_and_url_safe(void **state) {
    (void)state;
    char a[SL_JWT_RANDOM_ID_LEN + 1], b[SL_JWT_RANDOM_ID_LEN + 1];
    assert_int_equal(sl_jwt_random_id(a, sizeof(a)), SL_OK);
    assert_int_equal(sl_jwt_random_id(b, sizeof(b)), SL_OK);
    assert_int_equal(strlen(a), SL_JWT_RANDOM_ID_LEN);
    assert_string_not_equal(a, b);
    assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     SL_JWT_RANDOM_ID_LEN);
    assert_int_equal(sl_jwt_random_id(a, SL_JWT_RANDOM_ID_LEN), SL_ERR_FULL);
}

/* ---- keys and rotation --------------------------------------------------- */

static void token_signed_by_the_previous_key_still_verifies(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims c = claims_of(SL_JWT_ACCESS, "user-42", 900);
    issue_with(fx.previous_only, &c, token);
    sl_jwt_claims got;
    assert_verdict(verify(fx.keys, token, SL_JWT_ACCESS, &got), SL_JWT_OK);
    assert_string_equal(got.kid, sl_jwt_keys_previous_kid(fx.keys));
    assert_string_equal(sl_jwt_keys_current_kid(fx.previous_only),
                        sl_jwt_keys_previous_kid(fx.keys));
}

static void token_of_a_key_no_longer_loaded_is_refused(void **state) {
    (void)state;
    char token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims c = claims_of(SL_JWT_ACCESS, "user-42", 900);
    issue_with(fx.keys, &c, token);
    assert_verdict(verify(fx.previous_only, token, SL_JWT_ACCESS, NULL), SL_JWT_ERR_KID_UNKNOWN);
}

static void kid_is_a_thumbprint_of_the_public_key(void **state) {
    (void)state;
    unsigned char *der = NULL;
    int der_len = i2d_PUBKEY(fx.current_private, &der);
    unsigned char digest[32];
    assert_int_equal(EVP_Digest(der, (size_t)der_len, digest, NULL, EVP_sha256(), NULL), 1);
    OPENSSL_free(der);
    char kid[SL_JWT_KID_LEN + 1];
    assert_int_equal(sl_jwt_b64url_encode(digest, 16, kid, sizeof(kid)), SL_OK);
    assert_string_equal(sl_jwt_keys_current_kid(fx.keys), kid);
    assert_null(sl_jwt_keys_previous_kid(fx.previous_only));
}

static void previous_key_may_be_given_as_a_public_key(void **state) {
    (void)state;
    EVP_PKEY *previous = read_private(fx.previous_path);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(bio, previous), 1);
    char *pub;
    long pub_len = BIO_get_mem_data(bio, &pub);
    BIO *cur = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(cur, fx.current_private, NULL, NULL, 0, NULL, NULL),
                     1);
    char *cur_pem;
    long cur_len = BIO_get_mem_data(cur, &cur_pem);
    sl_jwt_keys *keys = sl_jwt_keys_from_pem(cur_pem, (size_t)cur_len, pub, (size_t)pub_len, errstr,
                                             sizeof(errstr));
    assert_non_null(keys);
    assert_string_equal(sl_jwt_keys_previous_kid(keys), sl_jwt_keys_previous_kid(fx.keys));
    /* a public key cannot be the signing key */
    assert_null(sl_jwt_keys_from_pem(pub, (size_t)pub_len, NULL, 0, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "current key"));
    sl_jwt_keys_destroy(keys);
    BIO_free(bio);
    BIO_free(cur);
    EVP_PKEY_free(previous);
}

static void loading_explains_what_is_wrong_with_a_key_file(void **state) {
    (void)state;
    char path[160];
    snprintf(path, sizeof(path), "%s/missing.pem", fx.dir);
    assert_null(sl_jwt_keys_load(path, NULL, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "missing.pem"));
    assert_non_null(strstr(errstr, "cannot open"));

    snprintf(path, sizeof(path), "%s/garbage.pem", fx.dir);
    FILE *f = fopen(path, "w");
    fputs("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n", f);
    fclose(f);
    assert_null(sl_jwt_keys_load(path, NULL, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "garbage.pem"));
    assert_null(sl_jwt_keys_load(fx.current_path, path, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "previous key file"));
    unlink(path);

    /* the same key twice is a configuration mistake */
    assert_null(sl_jwt_keys_load(fx.current_path, fx.current_path, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "same key"));
}

static void rsa_keys_below_2048_bits_are_refused(void **state) {
    (void)state;
    EVP_PKEY *weak = EVP_RSA_gen(1024);
    assert_non_null(weak);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(bio, weak, NULL, NULL, 0, NULL, NULL), 1);
    char *pem;
    long len = BIO_get_mem_data(bio, &pem);
    assert_null(sl_jwt_keys_from_pem(pem, (size_t)len, NULL, 0, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "1024 bits"));
    BIO_free(bio);
    EVP_PKEY_free(weak);
}

static void key_generation_writes_a_0600_file_that_loads(void **state) {
    (void)state;
    char path[160];
    snprintf(path, sizeof(path), "%s/generated.pem", fx.dir);
    bool created = false;
    assert_int_equal(sl_jwt_key_generate(path, SL_JWT_RS256, &created, errstr, sizeof(errstr)),
                     SL_OK);
    assert_true(created);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    sl_jwt_keys *keys = sl_jwt_keys_load(path, NULL, errstr, sizeof(errstr));
    assert_non_null(keys);
    assert_int_equal(sl_jwt_keys_alg(keys), SL_JWT_RS256);
    sl_jwt_keys_destroy(keys);
    /* no temporary file left behind */
    DIR *dir = opendir(fx.dir);
    assert_non_null(dir);
    for (struct dirent *entry; (entry = readdir(dir));)
        assert_null(strstr(entry->d_name, ".tmp."));
    closedir(dir);
    unlink(path);
}

static void key_generation_never_replaces_an_existing_key(void **state) {
    (void)state;
    char path[160];
    snprintf(path, sizeof(path), "%s/existing.pem", fx.dir);
    bool created = false;
    assert_int_equal(sl_jwt_key_generate(path, SL_JWT_ES256, &created, errstr, sizeof(errstr)),
                     SL_OK);
    assert_true(created);
    sl_jwt_keys *before = sl_jwt_keys_load(path, NULL, errstr, sizeof(errstr));
    assert_non_null(before);
    assert_int_equal(sl_jwt_key_generate(path, SL_JWT_ES256, &created, errstr, sizeof(errstr)),
                     SL_OK);
    assert_false(created);
    sl_jwt_keys *after = sl_jwt_keys_load(path, NULL, errstr, sizeof(errstr));
    assert_non_null(after);
    assert_string_equal(sl_jwt_keys_current_kid(before), sl_jwt_keys_current_kid(after));
    sl_jwt_keys_destroy(before);
    sl_jwt_keys_destroy(after);
    unlink(path);
}

/* ---- JWKS ---------------------------------------------------------------- */

static BIGNUM *jwk_bn(json_t *jwk, const char *name) {
    const char *text = json_string_value(json_object_get(jwk, name));
    assert_non_null(text);
    unsigned char bytes[1024];
    size_t n;
    assert_true(sl_jwt_b64url_decode(text, strlen(text), bytes, sizeof(bytes), &n));
    BIGNUM *bn = BN_bin2bn(bytes, (int)n, NULL);
    assert_non_null(bn);
    return bn;
}

/* An EVP_PKEY from a JWK, built with OpenSSL alone. */
static EVP_PKEY *import_jwk(json_t *jwk) {
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    BIGNUM *a, *b = NULL;
    unsigned char point[65];
    if (strcmp(kty, "RSA") == 0) {
        a = jwk_bn(jwk, "n");
        b = jwk_bn(jwk, "e");
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, a);
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, b);
    } else {
        assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "P-256");
        a = jwk_bn(jwk, "x");
        b = jwk_bn(jwk, "y");
        point[0] = 0x04;
        assert_int_equal(BN_bn2binpad(a, point + 1, 32), 32);
        assert_int_equal(BN_bn2binpad(b, point + 33, 32), 32);
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point));
    }
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, kty, NULL);
    EVP_PKEY *pkey = NULL;
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params), 1);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(a);
    BN_free(b);
    return pkey;
}

/* Verify an issued token's signature with `pkey` using OpenSSL alone. */
static bool openssl_verifies(EVP_PKEY *pkey, const char *token) {
    const char *sig_b64 = strrchr(token, '.') + 1;
    unsigned char sig[1024], der[128];
    size_t sig_len;
    assert_true(sl_jwt_b64url_decode(sig_b64, strlen(sig_b64), sig, sizeof(sig), &sig_len));
    const unsigned char *to_verify = sig;
    size_t to_verify_len = sig_len;
    if (EVP_PKEY_is_a(pkey, "EC")) {
        ECDSA_SIG *es = ECDSA_SIG_new();
        ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
        unsigned char *p = der;
        to_verify_len = (size_t)i2d_ECDSA_SIG(es, &p);
        ECDSA_SIG_free(es);
        to_verify = der;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey), 1);
    int rc = EVP_DigestVerify(ctx, to_verify, to_verify_len, (const unsigned char *)token,
                              (size_t)(sig_b64 - 1 - token));
    EVP_MD_CTX_free(ctx);
    return rc == 1;
}

static void jwks_lists_the_current_and_the_previous_key(void **state) {
    (void)state;
    size_t len;
    const char *text = sl_jwt_jwks_json(fx.keys, &len);
    assert_int_equal(len, strlen(text));
    json_error_t jerr;
    json_t *jwks = json_loads(text, 0, &jerr);
    assert_non_null(jwks);
    json_t *keys = json_object_get(jwks, "keys");
    assert_int_equal(json_array_size(keys), 2);
    const char *kids[2] = {sl_jwt_keys_current_kid(fx.keys), sl_jwt_keys_previous_kid(fx.keys)};
    for (size_t i = 0; i < 2; i++) {
        json_t *jwk = json_array_get(keys, i);
        assert_string_equal(json_string_value(json_object_get(jwk, "kid")), kids[i]);
        assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "RSA");
        assert_string_equal(json_string_value(json_object_get(jwk, "alg")), "RS256");
        assert_string_equal(json_string_value(json_object_get(jwk, "use")), "sig");
        assert_null(json_object_get(jwk, "d")); /* nothing private */
        assert_null(json_object_get(jwk, "p"));
    }
    json_decref(jwks);
}

static void jwks_modulus_and_exponent_rebuild_the_public_key(void **state) {
    (void)state;
    json_error_t jerr;
    json_t *jwks = json_loads(sl_jwt_jwks_json(fx.keys, NULL), 0, &jerr);
    EVP_PKEY *current = import_jwk(json_array_get(json_object_get(jwks, "keys"), 0));
    EVP_PKEY *previous = import_jwk(json_array_get(json_object_get(jwks, "keys"), 1));
    assert_int_equal(EVP_PKEY_eq(current, fx.current_private), 1);

    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    assert_true(openssl_verifies(current, token));
    assert_false(openssl_verifies(previous, token));
    sl_jwt_claims c = claims_of(SL_JWT_ACCESS, "user-42", 900);
    issue_with(fx.previous_only, &c, token);
    assert_true(openssl_verifies(previous, token));

    EVP_PKEY_free(current);
    EVP_PKEY_free(previous);
    json_decref(jwks);
}

static void jwks_ec_coordinates_rebuild_the_public_key(void **state) {
    (void)state;
    json_error_t jerr;
    json_t *jwks = json_loads(sl_jwt_jwks_json(fx.ec, NULL), 0, &jerr);
    json_t *jwk = json_array_get(json_object_get(jwks, "keys"), 0);
    assert_string_equal(json_string_value(json_object_get(jwk, "alg")), "ES256");
    EVP_PKEY *pub = import_jwk(jwk);
    assert_int_equal(EVP_PKEY_eq(pub, fx.ec_private), 1);
    char token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims c = claims_of(SL_JWT_ACCESS, "user-42", 900);
    issue_with(fx.ec, &c, token);
    assert_true(openssl_verifies(pub, token));
    EVP_PKEY_free(pub);
    json_decref(jwks);
}

/* ---- the cache ----------------------------------------------------------- */

static int cache_setup(void **state) {
    *state = sl_jwt_cache_new(64, errstr, sizeof(errstr));
    return *state ? 0 : -1;
}

static int cache_teardown(void **state) {
    sl_jwt_cache_destroy(*state);
    return 0;
}

static sl_jwt_error verify_cached_at(sl_jwt_cache *cache, const sl_jwt_keys *keys,
                                     const char *token, sl_jwt_typ typ, int64_t now,
                                     sl_jwt_claims *out) {
    sl_jwt_expect e = expect_typ(typ);
    e.now = now;
    return sl_jwt_verify_cached(keys, cache, token, strlen(token), &e, out, errstr, sizeof(errstr));
}

static void cache_hit_returns_the_same_claims(void **state) {
    sl_jwt_cache *cache = *state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    sl_jwt_claims first, second;
    assert_verdict(verify_cached_at(cache, fx.keys, token, SL_JWT_ACCESS, NOW, &first), SL_JWT_OK);
    assert_verdict(verify_cached_at(cache, fx.keys, token, SL_JWT_ACCESS, NOW + 1, &second),
                   SL_JWT_OK);
    assert_memory_equal(&first, &second, sizeof(first));
    uint64_t hits, misses;
    sl_jwt_cache_stats(cache, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 1);
    assert_int_equal(sl_jwt_cache_count(cache), 1);
}

static void cache_hit_for_an_expired_token_is_refused(void **state) {
    sl_jwt_cache *cache = *state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    assert_verdict(verify_cached_at(cache, fx.keys, token, SL_JWT_ACCESS, NOW, NULL), SL_JWT_OK);
    sl_jwt_claims got;
    assert_verdict(verify_cached_at(cache, fx.keys, token, SL_JWT_ACCESS, NOW + 900, &got),
                   SL_JWT_ERR_EXPIRED);
    assert_string_equal(got.sub, "");
    uint64_t hits;
    sl_jwt_cache_stats(cache, &hits, NULL);
    assert_int_equal(hits, 1);
    assert_int_equal(sl_jwt_cache_count(cache), 0); /* dropped */
}

static void cache_hit_rechecks_type_and_not_before(void **state) {
    sl_jwt_cache *cache = *state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_REFRESH, token);
    assert_verdict(verify_cached_at(cache, fx.keys, token, SL_JWT_REFRESH, NOW, NULL), SL_JWT_OK);
    assert_verdict(verify_cached_at(cache, fx.keys, token, SL_JWT_ACCESS, NOW, NULL),
                   SL_JWT_ERR_TYPE);
    assert_verdict(verify_cached_at(cache, fx.keys, token, SL_JWT_REFRESH, NOW - 10, NULL),
                   SL_JWT_ERR_NOT_YET_VALID);
    assert_verdict(verify_cached_at(cache, fx.keys, token, SL_JWT_REFRESH, NOW + 10, NULL),
                   SL_JWT_OK);
}

static void cache_hit_rechecks_the_session_lifetime(void **state) {
    sl_jwt_cache *cache = *state;
    char token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims c = claims_of(SL_JWT_ACCESS, "user-42", 900);
    c.auth_time = NOW - 50;
    issue_with(fx.keys, &c, token);
    sl_jwt_expect e = expect_typ(SL_JWT_ACCESS);
    e.session_max_s = 100;
    assert_verdict(sl_jwt_verify_cached(fx.keys, cache, token, strlen(token), &e, NULL, errstr,
                                        sizeof(errstr)),
                   SL_JWT_OK);
    e.now = NOW + 50;
    assert_verdict(sl_jwt_verify_cached(fx.keys, cache, token, strlen(token), &e, NULL, errstr,
                                        sizeof(errstr)),
                   SL_JWT_ERR_SESSION_TOO_OLD);
    uint64_t hits;
    sl_jwt_cache_stats(cache, &hits, NULL);
    assert_int_equal(hits, 1);
}

static void cache_hit_rechecks_issuer_and_audience(void **state) {
    sl_jwt_cache *cache = *state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    assert_verdict(verify_cached_at(cache, fx.keys, token, SL_JWT_ACCESS, NOW, NULL), SL_JWT_OK);
    sl_jwt_expect e = expect_typ(SL_JWT_ACCESS);
    e.aud = "dialogs";
    assert_verdict(sl_jwt_verify_cached(fx.keys, cache, token, strlen(token), &e, NULL, errstr,
                                        sizeof(errstr)),
                   SL_JWT_ERR_AUDIENCE);
    e = expect_typ(SL_JWT_ACCESS);
    e.iss = "https://other.test";
    assert_verdict(sl_jwt_verify_cached(fx.keys, cache, token, strlen(token), &e, NULL, errstr,
                                        sizeof(errstr)),
                   SL_JWT_ERR_ISSUER);
}

static void cache_does_not_answer_for_a_key_set_without_the_signing_key(void **state) {
    sl_jwt_cache *cache = *state;
    char token[SL_JWT_MAX_TOKEN + 1];
    sl_jwt_claims c = claims_of(SL_JWT_ACCESS, "user-42", 900);
    issue_with(fx.keys, &c, token);
    assert_verdict(verify_cached_at(cache, fx.keys, token, SL_JWT_ACCESS, NOW, NULL), SL_JWT_OK);
    assert_verdict(verify_cached_at(cache, fx.previous_only, token, SL_JWT_ACCESS, NOW, NULL),
                   SL_JWT_ERR_KID_UNKNOWN);
}

static void cache_never_caches_a_refused_token(void **state) {
    sl_jwt_cache *cache = *state;
    char token[SL_JWT_MAX_TOKEN + 1];
    issue(SL_JWT_ACCESS, token);
    flip(part(token, 2) + 5);
    for (int i = 0; i < 3; i++)
        assert_verdict(verify_cached_at(cache, fx.keys, token, SL_JWT_ACCESS, NOW, NULL),
                       SL_JWT_ERR_SIGNATURE);
    assert_int_equal(sl_jwt_cache_count(cache), 0);
}

static void cache_never_grows_past_its_capacity(void **state) {
    sl_jwt_cache *cache = *state;
    assert_int_equal(sl_jwt_cache_capacity(cache), 64);
    char token[SL_JWT_MAX_TOKEN + 1];
    for (int i = 0; i < 400; i++) {
        char sub[32];
        snprintf(sub, sizeof(sub), "user-%d", i);
        sl_jwt_claims c = claims_of(SL_JWT_ACCESS, sub, 900);
        issue_with(fx.ec, &c, token); /* ECDSA signs fast */
        assert_verdict(verify_cached_at(cache, fx.ec, token, SL_JWT_ACCESS, NOW, NULL), SL_JWT_OK);
        assert_true(sl_jwt_cache_count(cache) <= 64);
    }
    assert_true(sl_jwt_cache_count(cache) > 32); /* and it is used */
    sl_jwt_cache_clear(cache);
    assert_int_equal(sl_jwt_cache_count(cache), 0);
}

static void cache_capacity_is_rounded_down_and_bounded(void **state) {
    (void)state;
    sl_jwt_cache *cache = sl_jwt_cache_new(1000, errstr, sizeof(errstr));
    assert_non_null(cache);
    assert_int_equal(sl_jwt_cache_capacity(cache), 512);
    sl_jwt_cache_destroy(cache);
    assert_null(sl_jwt_cache_new(7, errstr, sizeof(errstr)));
    assert_null(sl_jwt_cache_new((size_t)1 << 30, errstr, sizeof(errstr)));
}

typedef struct worker_arg {
    sl_jwt_cache *cache;
    char (*tokens)[SL_JWT_MAX_TOKEN + 1];
    int n_tokens, ok;
} worker_arg;

static void *verify_worker(void *opaque) {
    worker_arg *arg = opaque;
    for (int i = 0; i < 200; i++) {
        const char *token = arg->tokens[i % arg->n_tokens];
        sl_jwt_expect e = expect_typ(SL_JWT_ACCESS);
        sl_jwt_claims c;
        if (sl_jwt_verify_cached(fx.ec, arg->cache, token, strlen(token), &e, &c, NULL, 0) ==
                SL_JWT_OK &&
            strncmp(c.sub, "user-", 5) == 0)
            arg->ok++;
    }
    return NULL;
}

static void threads_share_keys_and_cache(void **state) {
    sl_jwt_cache *cache = *state;
    static char tokens[100][SL_JWT_MAX_TOKEN + 1];
    for (int i = 0; i < 100; i++) {
        char sub[32];
        snprintf(sub, sizeof(sub), "user-%d", i);
        sl_jwt_claims c = claims_of(SL_JWT_ACCESS, sub, 900);
        issue_with(fx.ec, &c, tokens[i]);
    }
    pthread_t threads[4];
    worker_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (worker_arg){.cache = cache, .tokens = tokens, .n_tokens = 100, .ok = 0};
        assert_int_equal(pthread_create(&threads[t], NULL, verify_worker, &args[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(threads[t], NULL);
        assert_int_equal(args[t].ok, 200);
    }
    assert_true(sl_jwt_cache_count(cache) <= sl_jwt_cache_capacity(cache));
}

/* ---- derived MAC ---------------------------------------------------------- */

static void mac_is_shared_by_keys_loaded_from_the_same_pem_and_separates_inputs(void **state) {
    (void)state;
    sl_jwt_keys *again = sl_jwt_keys_load(fx.current_path, NULL, errstr, sizeof(errstr));
    assert_non_null(again);
    unsigned char a[32], b[32], c[32], d[32], e[32], f[32];
    assert_int_equal(sl_jwt_keys_mac(fx.keys, "register", "k1", 2, a), SL_OK);
    assert_int_equal(sl_jwt_keys_mac(again, "register", "k1", 2, b), SL_OK);
    assert_memory_equal(a, b, 32); /* another instance with the same key file */
    assert_int_equal(sl_jwt_keys_mac(fx.keys, "register", "k2", 2, c), SL_OK);
    assert_memory_not_equal(a, c, 32); /* other data */
    assert_int_equal(sl_jwt_keys_mac(fx.keys, "login", "k1", 2, d), SL_OK);
    assert_memory_not_equal(a, d, 32); /* other label */
    assert_int_equal(sl_jwt_keys_mac(fx.keys, "registerk", "1", 1, e), SL_OK);
    assert_memory_not_equal(a, e, 32); /* the label/data boundary counts */
    assert_int_equal(sl_jwt_keys_mac(fx.previous_only, "register", "k1", 2, f), SL_OK);
    assert_memory_not_equal(a, f, 32); /* another signing key */
    sl_jwt_keys_destroy(again);
}

#define T(f) cmocka_unit_test(f)
#define C(f) cmocka_unit_test_setup_teardown(f, cache_setup, cache_teardown)
int main(void) {
    const struct CMUnitTest tests[] = {
        T(b64url_encodes_rfc4648_vectors_without_padding),
        T(mac_is_shared_by_keys_loaded_from_the_same_pem_and_separates_inputs),
        T(b64url_decoder_rejects_padding_foreign_characters_and_noncanonical_bits),
        T(access_token_round_trips),
        T(access_token_header_is_typed_at_jwt_with_the_kid),
        T(refresh_token_round_trips),
        T(es256_token_round_trips),
        T(refresh_token_is_refused_where_an_access_token_is_expected),
        T(access_token_is_refused_where_a_refresh_token_is_expected),
        T(typ_claim_must_match_even_when_the_header_typ_does),
        T(header_typ_accepts_the_application_prefix_in_any_case),
        T(expired_token_is_refused_and_leeway_is_honoured),
        T(token_before_its_nbf_is_refused),
        T(token_issued_in_the_future_is_refused),
        T(auth_time_bounds_the_session_whatever_the_exp),
        T(auth_time_after_iat_or_not_an_integer_is_refused),
        T(wrong_issuer_is_refused),
        T(wrong_audience_is_refused),
        T(audience_array_must_contain_the_expected_audience),
        T(unknown_kid_is_refused),
        T(token_without_kid_is_refused),
        T(alg_none_is_refused),
        T(unsupported_algs_are_refused),
        T(hs256_keyed_with_the_rsa_public_key_is_refused),
        T(alg_must_be_the_alg_of_the_key_named_by_kid),
        T(header_parameters_beyond_alg_kid_typ_are_refused),
        T(tampered_payload_is_refused),
        T(payload_swapped_from_another_token_is_refused),
        T(tampered_signature_is_refused),
        T(signature_with_noncanonical_trailing_bits_is_malformed),
        T(truncated_token_is_refused),
        T(extra_part_is_refused),
        T(base64_padding_is_refused),
        T(overlong_token_is_refused_before_parsing),
        T(deeply_nested_json_is_refused),
        T(brackets_inside_strings_do_not_count_as_nesting),
        T(duplicate_claims_are_refused),
        T(every_required_claim_is_required),
        T(claims_of_the_wrong_shape_are_refused),
        T(payload_that_is_not_an_object_is_malformed),
        T(errstr_never_contains_token_content),
        T(caller_mistakes_are_internal_errors_not_client_errors),
        T(issue_reports_a_buffer_too_small),
        T(issue_refuses_incomplete_claims),
        T(claims_init_refuses_bad_values),
        T(random_ids_are_distinct_and_url_safe),
        T(token_signed_by_the_previous_key_still_verifies),
        T(token_of_a_key_no_longer_loaded_is_refused),
        T(kid_is_a_thumbprint_of_the_public_key),
        T(previous_key_may_be_given_as_a_public_key),
        T(loading_explains_what_is_wrong_with_a_key_file),
        T(rsa_keys_below_2048_bits_are_refused),
        T(key_generation_writes_a_0600_file_that_loads),
        T(key_generation_never_replaces_an_existing_key),
        T(jwks_lists_the_current_and_the_previous_key),
        T(jwks_modulus_and_exponent_rebuild_the_public_key),
        T(jwks_ec_coordinates_rebuild_the_public_key),
        C(cache_hit_returns_the_same_claims),
        C(cache_hit_for_an_expired_token_is_refused),
        C(cache_hit_rechecks_type_and_not_before),
        C(cache_hit_rechecks_the_session_lifetime),
        C(cache_hit_rechecks_issuer_and_audience),
        C(cache_does_not_answer_for_a_key_set_without_the_signing_key),
        C(cache_never_caches_a_refused_token),
        C(cache_never_grows_past_its_capacity),
        T(cache_capacity_is_rounded_down_and_bounded),
        C(threads_share_keys_and_cache),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
