/*
 * jwt_int.h: private to connectors/http/auth/{jwt,keys,cache}.c: the body of
 * a key set and the helpers the three share. The public API is jwt.h.
 */
#ifndef SLUICE_JWT_INT_H
#define SLUICE_JWT_INT_H

#include <stddef.h>

#include <openssl/evp.h>

#include "connectors/http/auth/jwt.h"

/* Signature bytes: RSA-8192. */
#define MAX_SIG 1024

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

/* Fill errstr like sl_fail does and return a verdict. */
sl_jwt_error sl_jwt_reject(char *errstr, size_t errstr_size, sl_jwt_error verdict, const char *fmt,
                           ...) __attribute__((format(printf, 4, 5)));

/* sl_fail with OpenSSL's last error appended; clears the error queue. */
sl_err sl_jwt_ossl_fail(char *errstr, size_t errstr_size, sl_err err, const char *what);

/* strlen-bounded copy that always terminates dst (dst_size > 0). */
void sl_jwt_copy_text(char *dst, size_t dst_size, const char *src);

/* The loaded key named `kid`, or NULL (keys.c). */
const jwt_key *sl_jwt_find_key(const sl_jwt_keys *keys, const char *kid);

/* Everything that can change between two requests with the same token:
 * the type asked for and the clock. Shared by full verification and cache
 * hits (jwt.c). */
sl_jwt_error sl_jwt_check_live(const sl_jwt_claims *c, const sl_jwt_expect *expect, char *errstr,
                               size_t errstr_size);

/* The whole verification pipeline of the design note in jwt.c, from the
 * three-part split to the claims; the caller has run sl_jwt_check_args. */
sl_jwt_error sl_jwt_verify_full(const sl_jwt_keys *keys, const char *token, size_t len,
                                const sl_jwt_expect *expect, sl_jwt_claims *c, char *errstr,
                                size_t errstr_size);

/* Arguments a caller controls, not a client: a bad one is our bug (500).
 * Then the token's length (SL_JWT_ERR_TOO_LONG past SL_JWT_MAX_TOKEN). */
sl_jwt_error sl_jwt_check_args(const sl_jwt_keys *keys, const char *token, size_t len,
                               const sl_jwt_expect *expect, char *errstr, size_t errstr_size);

#endif
