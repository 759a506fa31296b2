/*
 * jwt.c: issuing and verification of tokens, and base64url. The key set is
 * in keys.c, the verified-token cache in cache.c (jwt_int.h joins them).
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
 *           auth_time (iat without) + session_max_s > now ... SESSION_TOO_OLD
 *
 * The last row is sl_jwt_check_live(), the part a cache hit repeats.
 *
 * Invariants: a sl_jwt_keys never changes after sl_jwt_keys_from_pem
 * returns (so it needs no lock); OpenSSL's thread-local error queue is
 * cleared after every failed OpenSSL call, so a stream of forged tokens
 * leaves nothing behind on a worker thread; no token byte is ever copied
 * into errstr.
 */
#include "connectors/http/auth/jwt.h"
#include "connectors/http/auth/jwt_int.h"
#include "processor/base/text.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

/* 9999-12-31T23:59:59Z: bounds every time so that `t + leeway` cannot
 * overflow. */
#define MAX_TIME 253402300799LL
/* Decoded header or payload: a token of SL_JWT_MAX_TOKEN bytes holds at
 * most this much. */
#define MAX_DECODED (SL_JWT_MAX_TOKEN / 4 * 3)
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
sl_jwt_error sl_jwt_reject(char *errstr, size_t errstr_size, sl_jwt_error verdict, const char *fmt,
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
sl_err sl_jwt_ossl_fail(char *errstr, size_t errstr_size, sl_err err, const char *what) {
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

void sl_jwt_copy_text(char *dst, size_t dst_size, const char *src) {
    size_t n = strlen(src);
    if (n >= dst_size)
        n = dst_size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
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
    sl_jwt_copy_text(claims->sub, sizeof(claims->sub), sub);
    sl_jwt_copy_text(claims->sid, sizeof(claims->sid), sid);
    sl_jwt_copy_text(claims->iss, sizeof(claims->iss), iss);
    sl_jwt_copy_text(claims->aud, sizeof(claims->aud), aud);
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
        return sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_IO, "signing failed");
    }
    EVP_MD_CTX_free(ctx);
    if (keys->key[0].alg == SL_JWT_ES256) {
        if (!ecdsa_der_to_raw(der, der_len, sig))
            return sl_jwt_ossl_fail(errstr, errstr_size, SL_ERR_IO, "bad ECDSA signature");
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
           c->exp > c->iat && (c->nbf == 0 || time_ok(c->nbf)) &&
           (c->auth_time == 0 || (time_ok(c->auth_time) && c->auth_time <= c->iat));
}

sl_err sl_jwt_issue(const sl_jwt_keys *keys, const sl_jwt_claims *claims, char *out,
                    size_t out_size, size_t *out_len, char *errstr, size_t errstr_size) {
    if (!keys || !claims || !out)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "issue: NULL argument");
    if (!claims_ok_for_issue(claims))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID,
                       "issue: claims incomplete or out of bounds (typ, sub, sid, jti, iss, aud, "
                       "iat, exp > iat, auth_time <= iat)");
    json_t *header = json_pack("{s:s, s:s, s:s}", "alg", alg_name(keys->key[0].alg), "kid",
                               keys->key[0].kid, "typ", typ_header(claims->typ));
    json_t *payload = json_pack("{s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s}", "aud", claims->aud,
                                "exp", (json_int_t)claims->exp, "iat", (json_int_t)claims->iat,
                                "iss", claims->iss, "jti", claims->jti, "sid", claims->sid, "sub",
                                claims->sub, "typ", typ_claim(claims->typ));
    sl_err err = SL_OK;
    if (!header || !payload ||
        (claims->nbf && json_object_set_new(payload, "nbf", json_integer(claims->nbf)) != 0) ||
        (claims->auth_time &&
         json_object_set_new(payload, "auth_time", json_integer(claims->auth_time)) != 0)) {
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

/* Decode a base64url part and parse it as a JSON object. */
static sl_jwt_error decode_object(const char *b64, size_t b64_len, const char *what, json_t **out,
                                  char *errstr, size_t errstr_size) {
    unsigned char text[MAX_DECODED];
    size_t len = 0;
    if (b64_len == 0 || !sl_jwt_b64url_decode(b64, b64_len, text, sizeof(text), &len))
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED, "%s is not base64url",
                             what);
    if (!sl_json_depth_ok((const char *)text, len, SL_JWT_MAX_DEPTH))
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED,
                             "%s JSON is nested deeper than %d", what, SL_JWT_MAX_DEPTH);
    json_error_t jerr;
    json_t *value = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!value || !json_is_object(value)) {
        json_decref(value);
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED,
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
            return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_HEADER,
                                 "header has a parameter other than alg, kid and typ");
    }
    json_t *alg = json_object_get(header, "alg");
    if (!json_is_string(alg))
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_ALG, "header has no alg string");
    sl_jwt_alg token_alg = alg_from_name(json_string_value(alg));
    if (!token_alg)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_ALG, "alg is not RS256 or ES256");
    json_t *kid = json_object_get(header, "kid");
    if (!kid)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_KID_MISSING, "header has no kid");
    if (!json_is_string(kid))
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED, "kid is not a string");
    const jwt_key *key = sl_jwt_find_key(keys, json_string_value(kid));
    if (!key)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_KID_UNKNOWN,
                             "kid names no loaded key");
    /* The alg is pinned by the key, never chosen by the token. */
    if (key->alg != token_alg)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_ALG,
                             "alg %s does not match key %s (%s)", alg_name(token_alg), key->kid,
                             alg_name(key->alg));
    json_t *typ = json_object_get(header, "typ");
    if (!json_is_string(typ) || !header_typ_matches(json_string_value(typ), want))
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_TYPE, "header typ is not %s",
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
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED,
                             "signature is not base64url of at most %d bytes", MAX_SIG);
    if (sig_len != key->sig_len)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_SIGNATURE,
                             "signature is not %zu bytes long", key->sig_len);
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
            return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_INTERNAL,
                                 "ECDSA signature conversion");
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
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_INTERNAL, "cannot start verification");
    }
    int rc = EVP_DigestVerify(ctx, to_verify, to_verify_len, (const unsigned char *)data, data_len);
    EVP_MD_CTX_free(ctx);
    if (rc != 1) {
        /* 0 is a wrong signature, < 0 one OpenSSL could not even parse: to
         * the client both are a bad signature. */
        ERR_clear_error();
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_SIGNATURE,
                             "signature does not verify");
    }
    return SL_JWT_OK;
}

static bool get_text(json_t *obj, const char *name, size_t max, char *out, size_t out_size) {
    json_t *v = json_object_get(obj, name);
    if (!json_is_string(v) || !text_ok(json_string_value(v), max))
        return false;
    sl_jwt_copy_text(out, out_size, json_string_value(v));
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
sl_jwt_error sl_jwt_check_live(const sl_jwt_claims *c, const sl_jwt_expect *expect, char *errstr,
                               size_t errstr_size) {
    if (c->typ != expect->typ)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_TYPE,
                             "a %s token where %s is expected", typ_claim(c->typ),
                             typ_claim(expect->typ));
    if (c->exp <= expect->now - expect->leeway_s)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_EXPIRED,
                             "expired at %lld (now %lld, leeway %lld s)", (long long)c->exp,
                             (long long)expect->now, (long long)expect->leeway_s);
    if (c->nbf > expect->now + expect->leeway_s)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_NOT_YET_VALID,
                             "not before %lld (now %lld, leeway %lld s)", (long long)c->nbf,
                             (long long)expect->now, (long long)expect->leeway_s);
    if (c->iat > expect->now + expect->leeway_s)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_NOT_YET_VALID,
                             "issued in the future at %lld (now %lld, leeway %lld s)",
                             (long long)c->iat, (long long)expect->now,
                             (long long)expect->leeway_s);
    int64_t session_start = c->auth_time ? c->auth_time : c->iat;
    if (expect->session_max_s > 0 &&
        expect->now - expect->leeway_s >= session_start + expect->session_max_s)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_SESSION_TOO_OLD,
                             "session began at %lld, more than %lld s ago (now %lld)",
                             (long long)session_start, (long long)expect->session_max_s,
                             (long long)expect->now);
    return SL_JWT_OK;
}

static sl_jwt_error check_claims(json_t *payload, const sl_jwt_expect *expect, sl_jwt_claims *c,
                                 char *errstr, size_t errstr_size) {
    char typ[16];
    if (!get_text(payload, "typ", sizeof(typ) - 1, typ, sizeof(typ)) ||
        (strcmp(typ, "access") != 0 && strcmp(typ, "refresh") != 0))
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS,
                             "typ is not access or refresh");
    c->typ = strcmp(typ, "access") == 0 ? SL_JWT_ACCESS : SL_JWT_REFRESH;
    if (!get_text(payload, "sub", SL_JWT_MAX_ID, c->sub, sizeof(c->sub)) ||
        !get_text(payload, "sid", SL_JWT_MAX_ID, c->sid, sizeof(c->sid)) ||
        !get_text(payload, "jti", SL_JWT_MAX_ID, c->jti, sizeof(c->jti)))
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS,
                             "sub, sid and jti must be strings of 1..%d printable bytes",
                             SL_JWT_MAX_ID);
    bool has_exp, has_iat, has_nbf, has_auth_time;
    if (!get_time(payload, "exp", &has_exp, &c->exp) ||
        !get_time(payload, "iat", &has_iat, &c->iat) ||
        !get_time(payload, "nbf", &has_nbf, &c->nbf) ||
        !get_time(payload, "auth_time", &has_auth_time, &c->auth_time) || !has_exp || !has_iat)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS,
                             "exp and iat are required, and exp/iat/nbf/auth_time must be "
                             "integer times");
    if (c->exp <= c->iat)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS, "exp is not after iat");
    if (has_auth_time && c->auth_time > c->iat)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS, "auth_time is after iat");
    json_t *iss = json_object_get(payload, "iss");
    if (!json_is_string(iss))
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS, "iss is missing");
    if (strcmp(json_string_value(iss), expect->iss) != 0)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_ISSUER,
                             "iss is not the expected issuer");
    sl_jwt_copy_text(c->iss, sizeof(c->iss), expect->iss);
    json_t *aud = json_object_get(payload, "aud");
    bool aud_well_formed;
    if (!aud)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS, "aud is missing");
    if (!audience_matches(aud, expect->aud, &aud_well_formed))
        return aud_well_formed
                   ? sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_AUDIENCE,
                                   "aud does not contain the expected audience")
                   : sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_CLAIMS,
                                   "aud is not a string or an array of 1..%d strings", MAX_AUD);
    sl_jwt_copy_text(c->aud, sizeof(c->aud), expect->aud);
    return sl_jwt_check_live(c, expect, errstr, errstr_size);
}

sl_jwt_error sl_jwt_verify_full(const sl_jwt_keys *keys, const char *token, size_t len,
                                const sl_jwt_expect *expect, sl_jwt_claims *c, char *errstr,
                                size_t errstr_size) {
    const char *end = token + len;
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_MALFORMED,
                             "not three dot-separated parts");

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
    sl_jwt_copy_text(c->kid, sizeof(c->kid), key->kid);
    return SL_JWT_OK;
}

/* Arguments a caller controls, not a client: a bad one is our bug (500).
 * Then the token's length, the first check of the pipeline. */
sl_jwt_error sl_jwt_check_args(const sl_jwt_keys *keys, const char *token, size_t len,
                               const sl_jwt_expect *expect, char *errstr, size_t errstr_size) {
    if (!keys || !token || !expect || !typ_ok(expect->typ) ||
        !text_ok(expect->iss, SL_JWT_MAX_NAME) || !text_ok(expect->aud, SL_JWT_MAX_NAME) ||
        !time_ok(expect->now) || expect->leeway_s < 0 || expect->leeway_s > SL_JWT_MAX_LEEWAY_S)
        return sl_jwt_reject(
            errstr, errstr_size, SL_JWT_ERR_INTERNAL,
            "verify: bad arguments (keys, token, expect: iss, aud, typ, now, leeway)");
    if (len > SL_JWT_MAX_TOKEN)
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_TOO_LONG,
                             "token of %zu bytes (max %d)", len, SL_JWT_MAX_TOKEN);
    return SL_JWT_OK;
}

sl_jwt_error sl_jwt_verify(const sl_jwt_keys *keys, const char *token, size_t len,
                           const sl_jwt_expect *expect, sl_jwt_claims *out, char *errstr,
                           size_t errstr_size) {
    sl_jwt_claims claims;
    memset(&claims, 0, sizeof(claims));
    if (out)
        memset(out, 0, sizeof(*out));
    sl_jwt_error verdict = sl_jwt_check_args(keys, token, len, expect, errstr, errstr_size);
    if (verdict)
        return verdict;
    verdict = sl_jwt_verify_full(keys, token, len, expect, &claims, errstr, errstr_size);
    if (verdict == SL_JWT_OK && out)
        *out = claims;
    return verdict;
}
