/*
 * jwt.c: keys, issuing, verification, the verified-token cache and JWKS.
 *
 * Design note
 * -----------
 * Verification is the hot path (every authenticated request); issuing
 * happens at login and refresh. Two things make verification fast: every key
 * is parsed into an EVP_PKEY once (libjwt 1.10 re-parses the PEM per token,
 * which costs more than the RSA operation itself), and a verified token is
 * cached by its SHA-256 so its signature is checked once, not per request.
 *
 * The verification pipeline, in order; each step returns its own verdict
 * and nothing after a failed step runs:
 *
 *   length <= SL_JWT_MAX_TOKEN ............................. TOO_LONG
 *   exactly three '.'-separated parts ..................... MALFORMED
 *   header: strict base64url -> depth-bounded JSON object,
 *           no duplicate members ........................... MALFORMED
 *           members only alg/kid/typ ........................ HEADER
 *           alg is RS256 or ES256 ........................... ALG
 *           kid present / loaded ............................ KID_MISSING / KID_UNKNOWN
 *           alg == the alg of that key ...................... ALG
 *           typ is the expected JOSE type ................... TYPE
 *   signature: length of the key's signatures, EVP_DigestVerify over
 *              "header.payload" with the parsed key ......... SIGNATURE
 *   payload (parsed only now, after the signature, so unauthenticated
 *            JSON never reaches the claim code) ............. MALFORMED
 *           required claims present and well typed .......... CLAIMS
 *           iss, aud ........................................ ISSUER, AUDIENCE
 *           typ claim, exp, nbf, iat against now ............ TYPE, EXPIRED, NOT_YET_VALID
 *
 * The last row is check_live(), the part a cache hit repeats.
 *
 * Invariants: a sl_jwt_keys never changes after sl_jwt_keys_from_pem
 * returns (so it needs no lock); OpenSSL's thread-local error queue is
 * cleared after every failed OpenSSL call, so a stream of forged tokens
 * leaves nothing behind on a worker thread; no token byte is ever copied
 * into errstr.
 */
#include "connectors/http/auth/jwt.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

/* 9999-12-31T23:59:59Z: bounds every time so that `t + leeway` cannot
 * overflow. */
#define MAX_TIME 253402300799LL
/* A key file is a few KiB; anything larger is not a key. */
#define MAX_KEY_FILE (64 * 1024)
/* Decoded header or payload: a token of SL_JWT_MAX_TOKEN bytes holds at
 * most this much. */
#define MAX_DECODED (SL_JWT_MAX_TOKEN / 4 * 3)
/* Signature bytes: RSA-8192. */
#define MAX_SIG      1024
#define MAX_RSA_BITS 8192
#define MIN_RSA_BITS 2048
/* aud as an array: at most this many entries. */
#define MAX_AUD 8
/* JSON text of an issued header or payload (claims are bounded). */
#define MAX_JSON 2048

/* ---- verdict names ------------------------------------------------------- */

static const char *const error_names[] = {
#define SL_JWT_ERROR_NAME_(code, msg) #code,
    SL_JWT_ERRORS(SL_JWT_ERROR_NAME_)
#undef SL_JWT_ERROR_NAME_
};

static const char *const error_msgs[] = {
#define SL_JWT_ERROR_MSG_(code, msg) msg,
    SL_JWT_ERRORS(SL_JWT_ERROR_MSG_)
#undef SL_JWT_ERROR_MSG_
};

const char *sl_jwt_error_name(sl_jwt_error err) {
    if ((unsigned)err >= SL_JWT_ERROR__COUNT)
        return "SL_JWT_ERR_UNKNOWN";
    return error_names[err];
}

const char *sl_jwt_error_msg(sl_jwt_error err) {
    if ((unsigned)err >= SL_JWT_ERROR__COUNT)
        return "unknown verdict";
    return error_msgs[err];
}

/* Fill errstr like sl_fail does and return a verdict. */
static sl_jwt_error reject(char *errstr, size_t errstr_size, sl_jwt_error verdict, const char *fmt,
                           ...) __attribute__((format(printf, 4, 5)));

static sl_jwt_error reject(char *errstr, size_t errstr_size, sl_jwt_error verdict, const char *fmt,
                           ...) {
    if (errstr && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return verdict;
}

/* sl_fail with OpenSSL's last error appended; clears the error queue. */
static sl_err ossl_fail(char *errstr, size_t errstr_size, sl_err err, const char *what) {
    char detail[256] = "no detail from OpenSSL";
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, detail, sizeof(detail));
    ERR_clear_error();
    return sl_fail(errstr, errstr_size, err, "%s (%s)", what, detail);
}

/* ---- base64url ----------------------------------------------------------- */

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

size_t sl_jwt_b64url_len(size_t n) {
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

sl_err sl_jwt_b64url_encode(const unsigned char *in, size_t n, char *out, size_t out_size) {
    size_t need = sl_jwt_b64url_len(n);
    if (need >= out_size)
        return SL_ERR_FULL;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return SL_OK;
}

bool sl_jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t out_size,
                          size_t *out_len) {
    if (len % 4 == 1)
        return false;
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > out_size)
        return false;
    size_t o = 0, i = 0;
    for (; i + 4 <= len; i += 4) {
        int a = b64url_value((unsigned char)in[i]), b = b64url_value((unsigned char)in[i + 1]);
        int c = b64url_value((unsigned char)in[i + 2]), d = b64url_value((unsigned char)in[i + 3]);
        if ((a | b | c | d) < 0)
            return false;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    size_t rest = len - i;
    if (rest >= 2) {
        int a = b64url_value((unsigned char)in[i]), b = b64url_value((unsigned char)in[i + 1]);
        int c = rest == 3 ? b64url_value((unsigned char)in[i + 2]) : 0;
        if ((a | b | c) < 0)
            return false;
        /* The bits past the last whole byte must be zero: otherwise several
         * texts decode to the same bytes and a token would be malleable. */
        if (rest == 2 && (b & 0x0f))
            return false;
        if (rest == 3 && (c & 0x03))
            return false;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6;
        out[o++] = (unsigned char)(v >> 16);
        if (rest == 3)
            out[o++] = (unsigned char)(v >> 8);
    }
    if (out_len)
        *out_len = o;
    return true;
}

/* ---- small checks shared by issue and verify ----------------------------- */

/* Non-empty, at most max bytes, no control characters: these values end up
 * in logs and blacklist keys. */
static bool text_ok(const char *s, size_t max) {
    if (!s || !*s)
        return false;
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= max || c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

static bool time_ok(int64_t t) {
    return t > 0 && t <= MAX_TIME;
}

static bool typ_ok(sl_jwt_typ typ) {
    return typ == SL_JWT_ACCESS || typ == SL_JWT_REFRESH;
}

static const char *typ_claim(sl_jwt_typ typ) {
    return typ == SL_JWT_ACCESS ? "access" : "refresh";
}

/* RFC 9068 section 2.1 for access tokens; refresh tokens get a type of their
 * own so that no verifier configured for at+jwt can take one. */
static const char *typ_header(sl_jwt_typ typ) {
    return typ == SL_JWT_ACCESS ? "at+jwt" : "refresh+jwt";
}

/* Media types compare case-insensitively and may carry "application/"
 * (RFC 7515 section 4.1.9; RFC 9068 section 4). */
static bool header_typ_matches(const char *value, sl_jwt_typ want) {
    if (strncasecmp(value, "application/", 12) == 0)
        value += 12;
    return strcasecmp(value, typ_header(want)) == 0;
}

static const char *alg_name(sl_jwt_alg alg) {
    return alg == SL_JWT_ES256 ? "ES256" : "RS256";
}

/* Exactly the names we implement; "none", "HS256", "rs256"... are not. */
static sl_jwt_alg alg_from_name(const char *name) {
    if (strcmp(name, "RS256") == 0)
        return SL_JWT_RS256;
    if (strcmp(name, "ES256") == 0)
        return SL_JWT_ES256;
    return 0;
}

static void copy_text(char *dst, size_t dst_size, const char *src) {
    size_t n = strlen(src);
    if (n >= dst_size)
        n = dst_size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- keys ---------------------------------------------------------------- */

typedef struct jwt_key {
    EVP_PKEY *pub; /* the public half only */
    sl_jwt_alg alg;
    size_t sig_len; /* bytes of a JWS signature: the RSA modulus size, or 64 */
    char kid[SL_JWT_KID_LEN + 1];
} jwt_key;

struct sl_jwt_keys {
    EVP_PKEY *signing; /* the current private key */
    /* Fetched once: in OpenSSL 3 passing EVP_sha256() makes every
     * DigestSign/Verify/Digest call do an implicit fetch (a locked lookup). */
    EVP_MD *sha256;
    jwt_key key[2]; /* [0] current, [1] previous */
    size_t n_keys;
    char *jwks;
    size_t jwks_len;
    /* HMAC key derived from the current private key (sl_jwt_keys_mac). */
    unsigned char mac_key[32];
};

/* Never prompt on a terminal for an encrypted key: refuse it. */
static int no_passphrase(char *buf, int size, int rwflag, void *opaque) {
    (void)buf, (void)size, (void)rwflag, (void)opaque;
    return -1;
}

static EVP_PKEY *parse_pem(const char *pem, size_t len, bool public_allowed, const char *label,
                           char *errstr, size_t errstr_size) {
    if (!pem || len == 0 || len > MAX_KEY_FILE) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "%s: empty or larger than %d bytes", label,
                MAX_KEY_FILE);
        return NULL;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) {
        ossl_fail(errstr, errstr_size, SL_ERR_NOMEM, "BIO_new_mem_buf");
        return NULL;
    }
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (!pkey && public_allowed) {
        ERR_clear_error();
        bio = BIO_new_mem_buf(pem, (int)len);
        if (!bio) {
            ossl_fail(errstr, errstr_size, SL_ERR_NOMEM, "BIO_new_mem_buf");
            return NULL;
        }
        pkey = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
        BIO_free(bio);
    }
    if (!pkey) {
        char what[256];
        snprintf(what, sizeof(what),
                 "%s: no usable %s PEM key (unencrypted PKCS#8, PKCS#1 or SEC1%s)", label,
                 public_allowed ? "private or public" : "private",
                 public_allowed ? ", or SubjectPublicKeyInfo" : "");
        ossl_fail(errstr, errstr_size, SL_ERR_CONFIG, what);
        return NULL;
    }
    return pkey;
}

/* Which alg a key pins, and the length of its signatures. */
static sl_err key_kind(EVP_PKEY *pkey, const char *label, sl_jwt_alg *alg, size_t *sig_len,
                       char *errstr, size_t errstr_size) {
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                           "%s: RSA key of %d bits (must be %d..%d)", label, bits, MIN_RSA_BITS,
                           MAX_RSA_BITS);
        *alg = SL_JWT_RS256;
        *sig_len = (size_t)EVP_PKEY_get_size(pkey);
        return SL_OK;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        size_t group_len = 0;
        if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &group_len) != 1) {
            ERR_clear_error();
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "%s: EC key without a named curve",
                           label);
        }
        if (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                           "%s: EC key on curve %s (only P-256, for ES256)", label, group);
        *alg = SL_JWT_ES256;
        *sig_len = 64;
        return SL_OK;
    }
    const char *type = EVP_PKEY_get0_type_name(pkey);
    return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                   "%s: %s keys are not supported (RSA for RS256, EC P-256 for ES256)", label,
                   type ? type : "this kind of");
}

/* Fill `key` from any key holding a public half: a public-only copy (made
 * from its DER SubjectPublicKeyInfo), its alg and its kid. */
static sl_err key_init(jwt_key *key, EVP_PKEY *pkey, const EVP_MD *sha256, const char *label,
                       char *errstr, size_t errstr_size) {
    sl_err err = key_kind(pkey, label, &key->alg, &key->sig_len, errstr, errstr_size);
    if (err)
        return err;
    unsigned char *der = NULL;
    int der_len = i2d_PUBKEY(pkey, &der);
    if (der_len <= 0)
        return ossl_fail(errstr, errstr_size, SL_ERR_CONFIG, "cannot encode the public key");
    const unsigned char *p = der;
    key->pub = d2i_PUBKEY(NULL, &p, der_len);
    unsigned char digest[EVP_MAX_MD_SIZE];
    int ok = EVP_Digest(der, (size_t)der_len, digest, NULL, sha256, NULL);
    OPENSSL_free(der);
    if (!key->pub || ok != 1)
        return ossl_fail(errstr, errstr_size, SL_ERR_CONFIG, "cannot derive the key id");
    sl_jwt_b64url_encode(digest, 16, key->kid, sizeof(key->kid));
    return SL_OK;
}

/* An unsigned big-endian integer parameter of a key as base64url; `width`
 * pads to a fixed size (EC coordinates), 0 keeps the minimal form (RSA). */
static sl_err bn_param_b64(const EVP_PKEY *pkey, const char *param, int width, char *out,
                           size_t out_size) {
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1)
        return SL_ERR_CONFIG;
    unsigned char bytes[MAX_SIG];
    int n = BN_num_bytes(bn);
    sl_err err = SL_ERR_CONFIG;
    if (n <= (int)sizeof(bytes) && width <= (int)sizeof(bytes)) {
        n = width ? BN_bn2binpad(bn, bytes, width) : BN_bn2bin(bn, bytes);
        if (n > 0)
            err = sl_jwt_b64url_encode(bytes, (size_t)n, out, out_size);
    }
    BN_free(bn);
    return err;
}

static json_t *jwk_of(const jwt_key *key) {
    char a[MAX_SIG * 2], b[MAX_SIG * 2];
    if (key->alg == SL_JWT_RS256) {
        if (bn_param_b64(key->pub, OSSL_PKEY_PARAM_RSA_N, 0, a, sizeof(a)) ||
            bn_param_b64(key->pub, OSSL_PKEY_PARAM_RSA_E, 0, b, sizeof(b)))
            return NULL;
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "use", "sig", "alg",
                         "RS256", "kid", key->kid, "n", a, "e", b);
    }
    if (bn_param_b64(key->pub, OSSL_PKEY_PARAM_EC_PUB_X, 32, a, sizeof(a)) ||
        bn_param_b64(key->pub, OSSL_PKEY_PARAM_EC_PUB_Y, 32, b, sizeof(b)))
        return NULL;
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "use", "sig", "alg",
                     "ES256", "kid", key->kid, "crv", "P-256", "x", a, "y", b);
}

static sl_err build_jwks(sl_jwt_keys *keys, char *errstr, size_t errstr_size) {
    json_t *list = json_array();
    json_t *root = json_pack("{s:o}", "keys", list);
    if (!root) {
        json_decref(list);
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "JWKS: out of memory");
    }
    for (size_t i = 0; i < keys->n_keys; i++) {
        json_t *jwk = jwk_of(&keys->key[i]);
        if (!jwk || json_array_append_new(list, jwk) != 0) {
            ERR_clear_error();
            json_decref(root);
            return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "JWKS: cannot export key %s",
                           keys->key[i].kid);
        }
    }
    keys->jwks = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (!keys->jwks)
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "JWKS: out of memory");
    keys->jwks_len = strlen(keys->jwks);
    return SL_OK;
}

/* mac_key = HMAC-SHA256(key: the private key's DER, "sluice/v1 mac key").
 * Every instance configured with the same signing key derives the same
 * secret, with nothing more to distribute; the DER is wiped at once. */
static sl_err derive_mac_key(sl_jwt_keys *keys, char *errstr, size_t errstr_size) {
    unsigned char *der = NULL;
    int der_len = i2d_PrivateKey(keys->signing, &der);
    if (der_len <= 0)
        return ossl_fail(errstr, errstr_size, SL_ERR_CONFIG, "cannot encode the current key");
    static const char label[] = "sluice/v1 mac key";
    unsigned int out_len = 0;
    unsigned char *ok = HMAC(EVP_sha256(), der, der_len, (const unsigned char *)label,
                             sizeof(label) - 1, keys->mac_key, &out_len);
    OPENSSL_clear_free(der, (size_t)der_len);
    if (!ok || out_len != sizeof(keys->mac_key))
        return ossl_fail(errstr, errstr_size, SL_ERR_CONFIG, "cannot derive the MAC key");
    return SL_OK;
}

sl_err sl_jwt_keys_mac(const sl_jwt_keys *keys, const char *label, const void *data, size_t len,
                       unsigned char out[32]) {
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t out_len = 0;
    /* The label and the data are separated by a NUL, which a label never
     * contains: ("a", "bc") and ("ab", "c") give different MACs. */
    bool ok = ctx && EVP_MAC_init(ctx, keys->mac_key, sizeof(keys->mac_key), params) == 1 &&
              EVP_MAC_update(ctx, (const unsigned char *)label, strlen(label) + 1) == 1 &&
              (len == 0 || EVP_MAC_update(ctx, data, len) == 1) &&
              EVP_MAC_final(ctx, out, &out_len, 32) == 1 && out_len == 32;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    if (!ok) {
        ERR_clear_error();
        return SL_ERR_IO;
    }
    return SL_OK;
}

static sl_jwt_keys *keys_build(const char *current_pem, size_t current_len,
                               const char *current_label, const char *previous_pem,
                               size_t previous_len, const char *previous_label, char *errstr,
                               size_t errstr_size) {
    sl_jwt_keys *keys = calloc(1, sizeof(*keys));
    if (!keys) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    keys->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!keys->sha256) {
        ossl_fail(errstr, errstr_size, SL_ERR_CONFIG, "OpenSSL has no SHA256");
        goto fail;
    }
    keys->signing = parse_pem(current_pem, current_len, false, current_label, errstr, errstr_size);
    if (!keys->signing)
        goto fail;
    if (key_init(&keys->key[0], keys->signing, keys->sha256, current_label, errstr, errstr_size))
        goto fail;
    keys->n_keys = 1;
    if (previous_pem && previous_len > 0) {
        EVP_PKEY *previous =
            parse_pem(previous_pem, previous_len, true, previous_label, errstr, errstr_size);
        if (!previous)
            goto fail;
        sl_err err =
            key_init(&keys->key[1], previous, keys->sha256, previous_label, errstr, errstr_size);
        EVP_PKEY_free(previous); /* key[1].pub is a public-only copy */
        keys->n_keys = 2;        /* so that destroy frees key[1].pub */
        if (err)
            goto fail;
        if (strcmp(keys->key[0].kid, keys->key[1].kid) == 0) {
            sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "%s is the same key as the %s",
                    previous_label, current_label);
            goto fail;
        }
    }
    if (build_jwks(keys, errstr, errstr_size))
        goto fail;
    if (derive_mac_key(keys, errstr, errstr_size))
        goto fail;
    return keys;
fail:
    sl_jwt_keys_destroy(keys);
    return NULL;
}

sl_jwt_keys *sl_jwt_keys_from_pem(const char *current_pem, size_t current_len,
                                  const char *previous_pem, size_t previous_len, char *errstr,
                                  size_t errstr_size) {
    return keys_build(current_pem, current_len, "current key", previous_pem, previous_len,
                      "previous key", errstr, errstr_size);
}

/* Read a whole (small) file into a fresh buffer of *len + 1 bytes. */
static char *read_key_file(const char *path, size_t *len, char *errstr, size_t errstr_size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "key file '%s': cannot open: %s", path,
                strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        st.st_size > MAX_KEY_FILE) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                "key file '%s': not a regular file of 1..%d bytes", path, MAX_KEY_FILE);
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    size_t got = 0;
    while (buf && got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!buf || got != size) {
        if (buf)
            OPENSSL_cleanse(buf, size);
        free(buf);
        sl_fail(errstr, errstr_size, buf ? SL_ERR_IO : SL_ERR_NOMEM,
                "key file '%s': cannot read it", path);
        return NULL;
    }
    buf[size] = '\0';
    *len = size;
    return buf;
}

sl_jwt_keys *sl_jwt_keys_load(const char *current_path, const char *previous_path, char *errstr,
                              size_t errstr_size) {
    if (!current_path || !*current_path) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "no signing key file given");
        return NULL;
    }
    char current_label[PATH_MAX + 32], previous_label[PATH_MAX + 32] = "previous key";
    snprintf(current_label, sizeof(current_label), "key file '%s'", current_path);
    size_t current_len = 0, previous_len = 0;
    char *previous = NULL;
    char *current = read_key_file(current_path, &current_len, errstr, errstr_size);
    if (!current)
        return NULL;
    if (previous_path && *previous_path) {
        snprintf(previous_label, sizeof(previous_label), "previous key file '%s'", previous_path);
        previous = read_key_file(previous_path, &previous_len, errstr, errstr_size);
        if (!previous) {
            OPENSSL_cleanse(current, current_len);
            free(current);
            return NULL;
        }
    }
    sl_jwt_keys *keys = keys_build(current, current_len, current_label, previous, previous_len,
                                   previous_label, errstr, errstr_size);
    /* Private key material does not linger in freed heap memory. */
    OPENSSL_cleanse(current, current_len);
    free(current);
    if (previous) {
        OPENSSL_cleanse(previous, previous_len);
        free(previous);
    }
    return keys;
}

void sl_jwt_keys_destroy(sl_jwt_keys *keys) {
    if (!keys)
        return;
    for (size_t i = 0; i < keys->n_keys; i++)
        EVP_PKEY_free(keys->key[i].pub);
    EVP_PKEY_free(keys->signing);
    EVP_MD_free(keys->sha256);
    free(keys->jwks);
    OPENSSL_cleanse(keys->mac_key, sizeof(keys->mac_key));
    free(keys);
}

const char *sl_jwt_keys_current_kid(const sl_jwt_keys *keys) {
    return keys->key[0].kid;
}

const char *sl_jwt_keys_previous_kid(const sl_jwt_keys *keys) {
    return keys->n_keys > 1 ? keys->key[1].kid : NULL;
}

sl_jwt_alg sl_jwt_keys_alg(const sl_jwt_keys *keys) {
    return keys->key[0].alg;
}

const char *sl_jwt_jwks_json(const sl_jwt_keys *keys, size_t *len) {
    if (len)
        *len = keys->jwks_len;
    return keys->jwks;
}

static const jwt_key *find_key(const sl_jwt_keys *keys, const char *kid) {
    for (size_t i = 0; i < keys->n_keys; i++)
        if (strcmp(keys->key[i].kid, kid) == 0)
            return &keys->key[i];
    return NULL;
}

/* ---- key generation ------------------------------------------------------ */

static sl_err write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return SL_ERR_IO;
        data += n;
        len -= (size_t)n;
    }
    return SL_OK;
}

/* fsync the directory holding `path`, so the new name survives a crash. */
static void sync_parent_dir(const char *path) {
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        copy_text(dir, sizeof(dir), ".");
    else if (slash == path)
        copy_text(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

sl_err sl_jwt_key_generate(const char *path, sl_jwt_alg alg, bool *created, char *errstr,
                           size_t errstr_size) {
    if (created)
        *created = false;
    if (!path || !*path || (alg != SL_JWT_RS256 && alg != SL_JWT_ES256))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "key generation: bad arguments");
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "key file path is too long");
    if (access(path, F_OK) == 0)
        return SL_OK; /* never replace a key: that would log everybody out */

    EVP_PKEY *pkey = alg == SL_JWT_RS256 ? EVP_RSA_gen(MIN_RSA_BITS) : EVP_EC_gen("P-256");
    if (!pkey)
        return ossl_fail(errstr, errstr_size, SL_ERR_IO, "key generation failed");
    /* secmem: the PEM text is wiped when the BIO is freed. */
    BIO *bio = BIO_new(BIO_s_secmem());
    sl_err err = SL_OK;
    if (!bio || PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1) {
        err = ossl_fail(errstr, errstr_size, SL_ERR_IO, "cannot encode the new key as PEM");
        goto done;
    }
    char *pem = NULL;
    long pem_len = BIO_get_mem_data(bio, &pem);
    if (pem_len <= 0) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot encode the new key as PEM");
        goto done;
    }
    int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
    if (fd < 0) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "key file '%s': cannot create %s: %s", path,
                      tmp, strerror(errno));
        goto done;
    }
    if (fchmod(fd, 0600) != 0 || write_all(fd, pem, (size_t)pem_len) != SL_OK || fsync(fd) != 0) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "key file '%s': cannot write %s: %s", path,
                      tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    close(fd);
    /* link() rather than rename(): it fails instead of replacing a key that
     * another process created meanwhile. */
    if (link(tmp, path) == 0) {
        if (created)
            *created = true;
        sync_parent_dir(path);
    } else if (errno != EEXIST) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "key file '%s': cannot create it: %s", path,
                      strerror(errno));
    }
    unlink(tmp);
done:
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    return err;
}

/* ---- signing ------------------------------------------------------------- */

sl_err sl_jwt_random_id(char *out, size_t out_size) {
    if (!out || out_size < SL_JWT_RANDOM_ID_LEN + 1)
        return SL_ERR_FULL;
    unsigned char bytes[16];
    if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
        ERR_clear_error();
        return SL_ERR_IO;
    }
    return sl_jwt_b64url_encode(bytes, sizeof(bytes), out, out_size);
}

sl_err sl_jwt_claims_init(sl_jwt_claims *claims, sl_jwt_typ typ, const char *sub, const char *sid,
                          const char *iss, const char *aud, int64_t now, int64_t ttl_s,
                          char *errstr, size_t errstr_size) {
    memset(claims, 0, sizeof(*claims));
    if (!typ_ok(typ))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "token type must be access or refresh");
    if (!text_ok(sub, SL_JWT_MAX_ID) || !text_ok(sid, SL_JWT_MAX_ID))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID,
                       "sub and sid must be 1..%d printable bytes", SL_JWT_MAX_ID);
    if (!text_ok(iss, SL_JWT_MAX_NAME) || !text_ok(aud, SL_JWT_MAX_NAME))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID,
                       "iss and aud must be 1..%d printable bytes", SL_JWT_MAX_NAME);
    if (!time_ok(now) || ttl_s <= 0 || ttl_s > MAX_TIME - now)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "bad time %lld or lifetime %lld",
                       (long long)now, (long long)ttl_s);
    if (sl_jwt_random_id(claims->jti, sizeof(claims->jti)) != SL_OK)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "no random bytes for the jti");
    claims->typ = typ;
    copy_text(claims->sub, sizeof(claims->sub), sub);
    copy_text(claims->sid, sizeof(claims->sid), sid);
    copy_text(claims->iss, sizeof(claims->iss), iss);
    copy_text(claims->aud, sizeof(claims->aud), aud);
    claims->iat = now;
    claims->nbf = now;
    claims->exp = now + ttl_s;
    return SL_OK;
}

/* JWS ES256 signatures are r || s (32 bytes each), OpenSSL's are DER. */
static bool ecdsa_der_to_raw(const unsigned char *der, size_t der_len, unsigned char raw[64]) {
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (!sig)
        return false;
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(sig, &r, &s);
    bool ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;
    ECDSA_SIG_free(sig);
    return ok;
}

static size_t ecdsa_raw_to_der(const unsigned char raw[64], unsigned char *der, size_t der_size) {
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
    size_t len = 0;
    if (sig && r && s && ECDSA_SIG_set0(sig, r, s) == 1) {
        r = s = NULL; /* owned by sig now */
        int need = i2d_ECDSA_SIG(sig, NULL);
        unsigned char *p = der;
        if (need > 0 && (size_t)need <= der_size && i2d_ECDSA_SIG(sig, &p) == need)
            len = (size_t)need;
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return len;
}

static sl_err sign(const sl_jwt_keys *keys, const char *data, size_t len, unsigned char *sig,
                   size_t *sig_len, char *errstr, size_t errstr_size) {
    unsigned char der[MAX_SIG];
    size_t der_len = sizeof(der);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestSignInit(ctx, NULL, keys->sha256, NULL, keys->signing) != 1 ||
        EVP_DigestSign(ctx, der, &der_len, (const unsigned char *)data, len) != 1) {
        EVP_MD_CTX_free(ctx);
        return ossl_fail(errstr, errstr_size, SL_ERR_IO, "signing failed");
    }
    EVP_MD_CTX_free(ctx);
    if (keys->key[0].alg == SL_JWT_ES256) {
        if (!ecdsa_der_to_raw(der, der_len, sig))
            return ossl_fail(errstr, errstr_size, SL_ERR_IO, "bad ECDSA signature");
        *sig_len = 64;
    } else {
        memcpy(sig, der, der_len);
        *sig_len = der_len;
    }
    return SL_OK;
}

/* Serialize `value` (compact, sorted members: one canonical text), then
 * append it base64url-encoded at out + *pos. */
static sl_err append_json_b64(json_t *value, char *out, size_t out_size, size_t *pos) {
    char text[MAX_JSON];
    size_t n = json_dumpb(value, text, sizeof(text), JSON_COMPACT | JSON_SORT_KEYS);
    if (n == 0 || n > sizeof(text))
        return SL_ERR_INVALID;
    if (*pos >= out_size)
        return SL_ERR_FULL;
    sl_err err = sl_jwt_b64url_encode((const unsigned char *)text, n, out + *pos, out_size - *pos);
    if (err)
        return err;
    *pos += sl_jwt_b64url_len(n);
    return SL_OK;
}

static bool claims_ok_for_issue(const sl_jwt_claims *c) {
    return typ_ok(c->typ) && text_ok(c->sub, SL_JWT_MAX_ID) && text_ok(c->sid, SL_JWT_MAX_ID) &&
           text_ok(c->jti, SL_JWT_MAX_ID) && text_ok(c->iss, SL_JWT_MAX_NAME) &&
           text_ok(c->aud, SL_JWT_MAX_NAME) && time_ok(c->iat) && time_ok(c->exp) &&
           c->exp > c->iat && (c->nbf == 0 || time_ok(c->nbf));
}

sl_err sl_jwt_issue(const sl_jwt_keys *keys, const sl_jwt_claims *claims, char *out,
                    size_t out_size, size_t *out_len, char *errstr, size_t errstr_size) {
    if (!keys || !claims || !out)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "issue: NULL argument");
    if (!claims_ok_for_issue(claims))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID,
                       "issue: claims incomplete or out of bounds (typ, sub, sid, jti, iss, aud, "
                       "iat, exp > iat)");
    json_t *header = json_pack("{s:s, s:s, s:s}", "alg", alg_name(keys->key[0].alg), "kid",
                               keys->key[0].kid, "typ", typ_header(claims->typ));
    json_t *payload = json_pack("{s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s}", "aud", claims->aud,
                                "exp", (json_int_t)claims->exp, "iat", (json_int_t)claims->iat,
                                "iss", claims->iss, "jti", claims->jti, "sid", claims->sid, "sub",
                                claims->sub, "typ", typ_claim(claims->typ));
    sl_err err = SL_OK;
    if (!header || !payload ||
        (claims->nbf && json_object_set_new(payload, "nbf", json_integer(claims->nbf)) != 0)) {
        /* json_pack also fails on invalid UTF-8 */
        err = sl_fail(errstr, errstr_size, SL_ERR_INVALID,
                      "issue: claims are not valid UTF-8, or out of memory");
        goto done;
    }
    size_t pos = 0;
    if ((err = append_json_b64(header, out, out_size, &pos)) != SL_OK)
        goto full;
    if (pos + 1 >= out_size)
        goto full;
    out[pos++] = '.';
    if ((err = append_json_b64(payload, out, out_size, &pos)) != SL_OK)
        goto full;
    unsigned char sig[MAX_SIG];
    size_t sig_len = 0;
    if ((err = sign(keys, out, pos, sig, &sig_len, errstr, errstr_size)) != SL_OK)
        goto done;
    if (pos + 1 >= out_size)
        goto full;
    out[pos++] = '.';
    if ((err = sl_jwt_b64url_encode(sig, sig_len, out + pos, out_size - pos)) != SL_OK)
        goto full;
    pos += sl_jwt_b64url_len(sig_len);
    if (out_len)
        *out_len = pos;
    goto done;
full:
    err = sl_fail(errstr, errstr_size, SL_ERR_FULL, "issue: token does not fit in %zu bytes",
                  out_size);
    if (out_size > 0)
        out[0] = '\0';
done:
    json_decref(header);
    json_decref(payload);
    return err;
}

/* ---- verification -------------------------------------------------------- */

/* Nesting depth of a JSON text, counted before jansson sees it: jansson's
 * own limit (JSON_PARSER_MAX_DEPTH, 2048) is a compile-time constant with no
 * decode flag. Brackets inside strings do not count. Balance and everything
 * else is jansson's to check. */
static bool json_depth_ok(const unsigned char *text, size_t len, int max_depth) {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = text[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth)
                return false;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return true;
}

/* Decode a base64url part and parse it as a JSON object. */
static sl_jwt_error decode_object(const char *b64, size_t b64_len, const char *what, json_t **out,
                                  char *errstr, size_t errstr_size) {
    unsigned char text[MAX_DECODED];
    size_t len = 0;
    if (b64_len == 0 || !sl_jwt_b64url_decode(b64, b64_len, text, sizeof(text), &len))
        return reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED, "%s is not base64url", what);
    if (!json_depth_ok(text, len, SL_JWT_MAX_DEPTH))
        return reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED, "%s JSON is nested deeper than %d",
                      what, SL_JWT_MAX_DEPTH);
    json_error_t jerr;
    json_t *value = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!value || !json_is_object(value)) {
        json_decref(value);
        return reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED,
                      "%s is not a JSON object without duplicate members", what);
    }
    *out = value;
    return SL_JWT_OK;
}

/* The header checks; *key_out is the key its kid names. */
static sl_jwt_error check_header(const sl_jwt_keys *keys, json_t *header, sl_jwt_typ want,
                                 const jwt_key **key_out, char *errstr, size_t errstr_size) {
    /* A whitelist rather than a list of dangers: we issue alg, kid and typ
     * only, so anything else (crit, jku, jwk, x5u, x5c, b64, zip...) is
     * refused, never acted upon (RFC 8725 sections 2.1 and 3.10). */
    const char *name;
    json_t *value;
    json_object_foreach(header, name, value) {
        if (strcmp(name, "alg") != 0 && strcmp(name, "kid") != 0 && strcmp(name, "typ") != 0)
            return reject(errstr, errstr_size, SL_JWT_ERR_HEADER,
                          "header has a parameter other than alg, kid and typ");
    }
    json_t *alg = json_object_get(header, "alg");
    if (!json_is_string(alg))
        return reject(errstr, errstr_size, SL_JWT_ERR_ALG, "header has no alg string");
    sl_jwt_alg token_alg = alg_from_name(json_string_value(alg));
    if (!token_alg)
        return reject(errstr, errstr_size, SL_JWT_ERR_ALG, "alg is not RS256 or ES256");
    json_t *kid = json_object_get(header, "kid");
    if (!kid)
        return reject(errstr, errstr_size, SL_JWT_ERR_KID_MISSING, "header has no kid");
    if (!json_is_string(kid))
        return reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED, "kid is not a string");
    const jwt_key *key = find_key(keys, json_string_value(kid));
    if (!key)
        return reject(errstr, errstr_size, SL_JWT_ERR_KID_UNKNOWN, "kid names no loaded key");
    /* The alg is pinned by the key, never chosen by the token. */
    if (key->alg != token_alg)
        return reject(errstr, errstr_size, SL_JWT_ERR_ALG, "alg %s does not match key %s (%s)",
                      alg_name(token_alg), key->kid, alg_name(key->alg));
    json_t *typ = json_object_get(header, "typ");
    if (!json_is_string(typ) || !header_typ_matches(json_string_value(typ), want))
        return reject(errstr, errstr_size, SL_JWT_ERR_TYPE, "header typ is not %s",
                      typ_header(want));
    *key_out = key;
    return SL_JWT_OK;
}

static sl_jwt_error check_signature(const sl_jwt_keys *keys, const jwt_key *key, const char *data,
                                    size_t data_len, const char *sig_b64, size_t sig_b64_len,
                                    char *errstr, size_t errstr_size) {
    unsigned char sig[MAX_SIG];
    size_t sig_len = 0;
    if (!sl_jwt_b64url_decode(sig_b64, sig_b64_len, sig, sizeof(sig), &sig_len))
        return reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED,
                      "signature is not base64url of at most %d bytes", MAX_SIG);
    if (sig_len != key->sig_len)
        return reject(errstr, errstr_size, SL_JWT_ERR_SIGNATURE, "signature is not %zu bytes long",
                      key->sig_len);
    unsigned char der[128];
    const unsigned char *to_verify = sig;
    size_t to_verify_len = sig_len;
    if (key->alg == SL_JWT_ES256) {
        /* ECDSA signatures are malleable ((r, n - s) verifies too), so a
         * token is identified by its jti, never by its bytes: the blacklist
         * is keyed by jti, and the cache only ever holds valid tokens. */
        to_verify_len = ecdsa_raw_to_der(sig, der, sizeof(der));
        if (!to_verify_len) {
            ERR_clear_error();
            return reject(errstr, errstr_size, SL_JWT_ERR_INTERNAL, "ECDSA signature conversion");
        }
        to_verify = der;
    }
    /* A fresh context per call, as OpenSSL documents for sharing an
     * EVP_PKEY between threads. Copying a per-key template context
     * (EVP_MD_CTX_copy_ex) would save ~2.5 us of the ~20 us of an RSA-2048
     * verification, but copying one context from many threads at once is
     * not a documented guarantee, and the cache already spares most calls. */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestVerifyInit(ctx, NULL, keys->sha256, NULL, key->pub) != 1) {
        EVP_MD_CTX_free(ctx);
        ERR_clear_error();
        return reject(errstr, errstr_size, SL_JWT_ERR_INTERNAL, "cannot start verification");
    }
    int rc = EVP_DigestVerify(ctx, to_verify, to_verify_len, (const unsigned char *)data, data_len);
    EVP_MD_CTX_free(ctx);
    if (rc != 1) {
        /* 0 is a wrong signature, < 0 one OpenSSL could not even parse: to
         * the client both are a bad signature. */
        ERR_clear_error();
        return reject(errstr, errstr_size, SL_JWT_ERR_SIGNATURE, "signature does not verify");
    }
    return SL_JWT_OK;
}

static bool get_text(json_t *obj, const char *name, size_t max, char *out, size_t out_size) {
    json_t *v = json_object_get(obj, name);
    if (!json_is_string(v) || !text_ok(json_string_value(v), max))
        return false;
    copy_text(out, out_size, json_string_value(v));
    return true;
}

/* present: false if the claim is absent (then *t = 0); the call fails if it
 * is present but not an integer time. */
static bool get_time(json_t *obj, const char *name, bool *present, int64_t *t) {
    json_t *v = json_object_get(obj, name);
    *t = 0;
    *present = v != NULL;
    if (!v)
        return true;
    if (!json_is_integer(v) || !time_ok(json_integer_value(v)))
        return false;
    *t = json_integer_value(v);
    return true;
}

static bool audience_matches(json_t *aud, const char *want, bool *well_formed) {
    *well_formed = true;
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    size_t n = json_array_size(aud);
    if (!json_is_array(aud) || n == 0 || n > MAX_AUD) {
        *well_formed = false;
        return false;
    }
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        json_t *entry = json_array_get(aud, i);
        if (!json_is_string(entry)) {
            *well_formed = false;
            return false;
        }
        if (strcmp(json_string_value(entry), want) == 0)
            found = true;
    }
    return found;
}

/* Everything that can change between two requests with the same token:
 * the type asked for and the clock. Shared by full verification and cache
 * hits. */
static sl_jwt_error check_live(const sl_jwt_claims *c, const sl_jwt_expect *expect, char *errstr,
                               size_t errstr_size) {
    if (c->typ != expect->typ)
        return reject(errstr, errstr_size, SL_JWT_ERR_TYPE, "a %s token where %s is expected",
                      typ_claim(c->typ), typ_claim(expect->typ));
    if (c->exp <= expect->now - expect->leeway_s)
        return reject(errstr, errstr_size, SL_JWT_ERR_EXPIRED,
                      "expired at %lld (now %lld, leeway %lld s)", (long long)c->exp,
                      (long long)expect->now, (long long)expect->leeway_s);
    if (c->nbf > expect->now + expect->leeway_s)
        return reject(errstr, errstr_size, SL_JWT_ERR_NOT_YET_VALID,
                      "not before %lld (now %lld, leeway %lld s)", (long long)c->nbf,
                      (long long)expect->now, (long long)expect->leeway_s);
    if (c->iat > expect->now + expect->leeway_s)
        return reject(errstr, errstr_size, SL_JWT_ERR_NOT_YET_VALID,
                      "issued in the future at %lld (now %lld, leeway %lld s)", (long long)c->iat,
                      (long long)expect->now, (long long)expect->leeway_s);
    return SL_JWT_OK;
}

static sl_jwt_error check_claims(json_t *payload, const sl_jwt_expect *expect, sl_jwt_claims *c,
                                 char *errstr, size_t errstr_size) {
    char typ[16];
    if (!get_text(payload, "typ", sizeof(typ) - 1, typ, sizeof(typ)) ||
        (strcmp(typ, "access") != 0 && strcmp(typ, "refresh") != 0))
        return reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS, "typ is not access or refresh");
    c->typ = strcmp(typ, "access") == 0 ? SL_JWT_ACCESS : SL_JWT_REFRESH;
    if (!get_text(payload, "sub", SL_JWT_MAX_ID, c->sub, sizeof(c->sub)) ||
        !get_text(payload, "sid", SL_JWT_MAX_ID, c->sid, sizeof(c->sid)) ||
        !get_text(payload, "jti", SL_JWT_MAX_ID, c->jti, sizeof(c->jti)))
        return reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS,
                      "sub, sid and jti must be strings of 1..%d printable bytes", SL_JWT_MAX_ID);
    bool has_exp, has_iat, has_nbf;
    if (!get_time(payload, "exp", &has_exp, &c->exp) ||
        !get_time(payload, "iat", &has_iat, &c->iat) ||
        !get_time(payload, "nbf", &has_nbf, &c->nbf) || !has_exp || !has_iat)
        return reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS,
                      "exp and iat are required, and exp/iat/nbf must be integer times");
    if (c->exp <= c->iat)
        return reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS, "exp is not after iat");
    json_t *iss = json_object_get(payload, "iss");
    if (!json_is_string(iss))
        return reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS, "iss is missing");
    if (strcmp(json_string_value(iss), expect->iss) != 0)
        return reject(errstr, errstr_size, SL_JWT_ERR_ISSUER, "iss is not the expected issuer");
    copy_text(c->iss, sizeof(c->iss), expect->iss);
    json_t *aud = json_object_get(payload, "aud");
    bool aud_well_formed;
    if (!aud)
        return reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS, "aud is missing");
    if (!audience_matches(aud, expect->aud, &aud_well_formed))
        return aud_well_formed
                   ? reject(errstr, errstr_size, SL_JWT_ERR_AUDIENCE,
                            "aud does not contain the expected audience")
                   : reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS,
                            "aud is not a string or an array of 1..%d strings", MAX_AUD);
    copy_text(c->aud, sizeof(c->aud), expect->aud);
    return check_live(c, expect, errstr, errstr_size);
}

static sl_jwt_error verify_full(const sl_jwt_keys *keys, const char *token, size_t len,
                                const sl_jwt_expect *expect, sl_jwt_claims *c, char *errstr,
                                size_t errstr_size) {
    const char *end = token + len;
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
        return reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED, "not three dot-separated parts");

    json_t *header = NULL;
    sl_jwt_error verdict =
        decode_object(token, (size_t)(dot1 - token), "header", &header, errstr, errstr_size);
    if (verdict)
        return verdict;
    const jwt_key *key = NULL;
    verdict = check_header(keys, header, expect->typ, &key, errstr, errstr_size);
    json_decref(header);
    if (verdict)
        return verdict;

    verdict = check_signature(keys, key, token, (size_t)(dot2 - token), dot2 + 1,
                              (size_t)(end - dot2 - 1), errstr, errstr_size);
    if (verdict)
        return verdict;

    json_t *payload = NULL;
    verdict = decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1), "payload", &payload, errstr,
                            errstr_size);
    if (verdict)
        return verdict;
    verdict = check_claims(payload, expect, c, errstr, errstr_size);
    json_decref(payload);
    if (verdict)
        return verdict;
    copy_text(c->kid, sizeof(c->kid), key->kid);
    return SL_JWT_OK;
}

/* Arguments a caller controls, not a client: a bad one is our bug (500). */
static sl_jwt_error check_args(const sl_jwt_keys *keys, const char *token,
                               const sl_jwt_expect *expect, char *errstr, size_t errstr_size) {
    if (!keys || !token || !expect || !typ_ok(expect->typ) ||
        !text_ok(expect->iss, SL_JWT_MAX_NAME) || !text_ok(expect->aud, SL_JWT_MAX_NAME) ||
        !time_ok(expect->now) || expect->leeway_s < 0 || expect->leeway_s > SL_JWT_MAX_LEEWAY_S)
        return reject(errstr, errstr_size, SL_JWT_ERR_INTERNAL,
                      "verify: bad arguments (keys, token, expect: iss, aud, typ, now, leeway)");
    return SL_JWT_OK;
}

sl_jwt_error sl_jwt_verify(const sl_jwt_keys *keys, const char *token, size_t len,
                           const sl_jwt_expect *expect, sl_jwt_claims *out, char *errstr,
                           size_t errstr_size) {
    sl_jwt_claims claims;
    memset(&claims, 0, sizeof(claims));
    if (out)
        memset(out, 0, sizeof(*out));
    sl_jwt_error verdict = check_args(keys, token, expect, errstr, errstr_size);
    if (verdict)
        return verdict;
    if (len > SL_JWT_MAX_TOKEN)
        return reject(errstr, errstr_size, SL_JWT_ERR_TOO_LONG, "token of %zu bytes (max %d)", len,
                      SL_JWT_MAX_TOKEN);
    verdict = verify_full(keys, token, len, expect, &claims, errstr, errstr_size);
    if (verdict == SL_JWT_OK && out)
        *out = claims;
    return verdict;
}

/* ---- the verified-token cache -------------------------------------------- */

#define CACHE_WAYS         8
#define CACHE_MAX_SHARDS   16
#define CACHE_MAX_CAPACITY ((size_t)1 << 24)
#define HASH_LEN           32

typedef struct cache_entry {
    uint64_t last_used; /* the shard's tick at the last use; 0: empty */
    unsigned char hash[HASH_LEN];
    sl_jwt_claims claims;
} cache_entry;

typedef struct cache_shard {
    pthread_mutex_t lock;
    cache_entry *entries; /* sets_per_shard * CACHE_WAYS, borrowed from the cache */
    size_t count;
    uint64_t tick, hits, misses;
    char pad[64]; /* keeps two shards' locks off one cache line */
} cache_shard;

struct sl_jwt_cache {
    size_t capacity, n_shards, sets_per_shard;
    cache_entry *entries;
    cache_shard shard[CACHE_MAX_SHARDS];
};

sl_jwt_cache *sl_jwt_cache_new(size_t capacity, char *errstr, size_t errstr_size) {
    if (capacity < CACHE_WAYS || capacity > CACHE_MAX_CAPACITY) {
        sl_fail(errstr, errstr_size, SL_ERR_INVALID, "token cache capacity %zu not in %d..%zu",
                capacity, CACHE_WAYS, CACHE_MAX_CAPACITY);
        return NULL;
    }
    size_t sets = 1;
    while (sets * 2 * CACHE_WAYS <= capacity)
        sets *= 2;
    sl_jwt_cache *cache = calloc(1, sizeof(*cache));
    cache_entry *entries = calloc(sets * CACHE_WAYS, sizeof(*entries));
    if (!cache || !entries) {
        free(cache);
        free(entries);
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "token cache: out of memory");
        return NULL;
    }
    cache->entries = entries;
    cache->capacity = sets * CACHE_WAYS;
    cache->n_shards = sets < CACHE_MAX_SHARDS ? sets : CACHE_MAX_SHARDS;
    cache->sets_per_shard = sets / cache->n_shards;
    for (size_t i = 0; i < cache->n_shards; i++) {
        pthread_mutex_init(&cache->shard[i].lock, NULL);
        cache->shard[i].entries = entries + i * cache->sets_per_shard * CACHE_WAYS;
    }
    return cache;
}

void sl_jwt_cache_destroy(sl_jwt_cache *cache) {
    if (!cache)
        return;
    for (size_t i = 0; i < cache->n_shards; i++)
        pthread_mutex_destroy(&cache->shard[i].lock);
    free(cache->entries);
    free(cache);
}

size_t sl_jwt_cache_capacity(const sl_jwt_cache *cache) {
    return cache->capacity;
}

size_t sl_jwt_cache_count(sl_jwt_cache *cache) {
    size_t total = 0;
    for (size_t i = 0; i < cache->n_shards; i++) {
        pthread_mutex_lock(&cache->shard[i].lock);
        total += cache->shard[i].count;
        pthread_mutex_unlock(&cache->shard[i].lock);
    }
    return total;
}

void sl_jwt_cache_stats(sl_jwt_cache *cache, uint64_t *hits, uint64_t *misses) {
    uint64_t h = 0, m = 0;
    for (size_t i = 0; i < cache->n_shards; i++) {
        pthread_mutex_lock(&cache->shard[i].lock);
        h += cache->shard[i].hits;
        m += cache->shard[i].misses;
        pthread_mutex_unlock(&cache->shard[i].lock);
    }
    if (hits)
        *hits = h;
    if (misses)
        *misses = m;
}

void sl_jwt_cache_clear(sl_jwt_cache *cache) {
    for (size_t i = 0; i < cache->n_shards; i++) {
        cache_shard *shard = &cache->shard[i];
        pthread_mutex_lock(&shard->lock);
        memset(shard->entries, 0, cache->sets_per_shard * CACHE_WAYS * sizeof(cache_entry));
        shard->count = 0;
        pthread_mutex_unlock(&shard->lock);
    }
}

static uint64_t load64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* The shard and the set (CACHE_WAYS entries) for a hash. SHA-256 output is
 * uniform, so its bytes are the index directly. */
static cache_shard *cache_locate(sl_jwt_cache *cache, const unsigned char *hash,
                                 cache_entry **set) {
    cache_shard *shard = &cache->shard[load64(hash) & (cache->n_shards - 1)];
    *set = shard->entries + (load64(hash + 8) & (cache->sets_per_shard - 1)) * CACHE_WAYS;
    return shard;
}

static cache_entry *set_find(cache_entry *set, const unsigned char *hash) {
    for (int w = 0; w < CACHE_WAYS; w++)
        if (set[w].last_used && memcmp(set[w].hash, hash, HASH_LEN) == 0)
            return &set[w];
    return NULL;
}

/* Caller holds the shard lock. Same token: overwrite; else an empty way,
 * else one already expired, else the least recently used. */
static void cache_insert(cache_shard *shard, cache_entry *set, const unsigned char *hash,
                         const sl_jwt_claims *claims, int64_t expired_before) {
    cache_entry *victim = set_find(set, hash);
    for (int w = 0; !victim && w < CACHE_WAYS; w++)
        if (!set[w].last_used)
            victim = &set[w];
    for (int w = 0; !victim && w < CACHE_WAYS; w++)
        if (set[w].claims.exp <= expired_before)
            victim = &set[w];
    if (!victim) {
        victim = &set[0];
        for (int w = 1; w < CACHE_WAYS; w++)
            if (set[w].last_used < victim->last_used)
                victim = &set[w];
    }
    if (!victim->last_used)
        shard->count++;
    victim->last_used = ++shard->tick;
    memcpy(victim->hash, hash, HASH_LEN);
    victim->claims = *claims;
}

sl_jwt_error sl_jwt_verify_cached(const sl_jwt_keys *keys, sl_jwt_cache *cache, const char *token,
                                  size_t len, const sl_jwt_expect *expect, sl_jwt_claims *out,
                                  char *errstr, size_t errstr_size) {
    if (!cache)
        return sl_jwt_verify(keys, token, len, expect, out, errstr, errstr_size);
    if (out)
        memset(out, 0, sizeof(*out));
    sl_jwt_error verdict = check_args(keys, token, expect, errstr, errstr_size);
    if (verdict)
        return verdict;
    if (len > SL_JWT_MAX_TOKEN)
        return reject(errstr, errstr_size, SL_JWT_ERR_TOO_LONG, "token of %zu bytes (max %d)", len,
                      SL_JWT_MAX_TOKEN);
    unsigned char hash[EVP_MAX_MD_SIZE];
    if (EVP_Digest(token, len, hash, NULL, keys->sha256, NULL) != 1) {
        ERR_clear_error();
        return reject(errstr, errstr_size, SL_JWT_ERR_INTERNAL, "cannot hash the token");
    }

    cache_entry *set;
    cache_shard *shard = cache_locate(cache, hash, &set);
    pthread_mutex_lock(&shard->lock);
    cache_entry *hit = set_find(set, hash);
    /* An entry answers only for the same key set and expectation it was
     * verified under; otherwise verify afresh (a token with several
     * audiences may be valid for another one). */
    if (hit && find_key(keys, hit->claims.kid) && strcmp(hit->claims.iss, expect->iss) == 0 &&
        strcmp(hit->claims.aud, expect->aud) == 0) {
        shard->hits++;
        hit->last_used = ++shard->tick;
        verdict = check_live(&hit->claims, expect, errstr, errstr_size);
        if (verdict == SL_JWT_OK && out)
            *out = hit->claims;
        if (verdict == SL_JWT_ERR_EXPIRED) { /* it will never be valid again */
            memset(hit, 0, sizeof(*hit));
            shard->count--;
        }
        pthread_mutex_unlock(&shard->lock);
        return verdict;
    }
    shard->misses++;
    pthread_mutex_unlock(&shard->lock);

    /* Verified outside the lock: a signature check is far longer than a
     * lookup. Two threads may verify the same new token at once; both insert
     * the same claims, which is harmless. */
    sl_jwt_claims claims;
    memset(&claims, 0, sizeof(claims));
    verdict = verify_full(keys, token, len, expect, &claims, errstr, errstr_size);
    if (verdict != SL_JWT_OK)
        return verdict;
    pthread_mutex_lock(&shard->lock);
    cache_insert(shard, set, hash, &claims, expect->now - expect->leeway_s);
    pthread_mutex_unlock(&shard->lock);
    if (out)
        *out = claims;
    return SL_JWT_OK;
}
