/*
 * jwt.h: signed access and refresh tokens (JWS compact serialization) for
 * the HTTP gateway and the dialog service: keys, issuing, strict
 * verification, a bounded verified-token cache and the JWKS document.
 * Implemented in jwt.c (issuing, verification, base64url), keys.c (the key
 * set, JWKS, key files) and cache.c (the verified-token cache).
 *
 * Built on OpenSSL 3 (signatures, digests, randomness) and jansson (JSON);
 * libjwt is deliberately not used: the libjwt 1.10 in Debian bookworm parses
 * the PEM key on every verification (~2.7k tokens/s against ~54k/s for
 * OpenSSL with a loaded RSA key, DESIGN.md 9), does not check claims, and
 * must never be handed a NULL key. Here every key is parsed once.
 *
 * Tokens (RFC 7519, RFC 8725, RFC 9068):
 *   header  {"alg":"RS256"|"ES256","kid":<kid>,"typ":"at+jwt"|"refresh+jwt"}
 *   payload {"aud","exp","iat","iss","jti","nbf","sid","sub","typ"}
 *           typ is "access" or "refresh"; exp/iat/nbf are integer seconds.
 * The type is carried twice (the JOSE typ for explicit typing, RFC 8725
 * 3.11, and the typ claim) and both must match what the caller expects, so
 * an access token is never accepted as a refresh token or the reverse.
 *
 * Keys: a current key (a private PEM: RSA of 2048..8192 bits for RS256, or
 * EC P-256 for ES256) signs; an optional previous key (public or private
 * PEM) still verifies, so a key rotation logs nobody out. Each key's alg is
 * pinned by its type: a token whose alg is not the alg of the key its kid
 * names is refused. kid = base64url(first 16 bytes of SHA-256(DER
 * SubjectPublicKeyInfo)), 22 characters.
 *
 * Threading: an sl_jwt_keys is immutable after it is built and may be used
 * by any number of threads at once (each call makes its own EVP contexts).
 * An sl_jwt_cache is internally locked (sharded mutexes). Nothing here
 * prints, logs or exits; errors come back as codes plus an errstr.
 *
 * Secrets: no function writes a token, a key or a password into errstr.
 * Verification errstr texts contain only fixed words and numbers (times),
 * never content taken from the token, so they are safe to log.
 */
#ifndef SLUICE_JWT_H
#define SLUICE_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/base/error.h"

/* Longest token accepted by verify (bytes, without a NUL). Issued tokens
 * are far below it (~650 bytes with RSA-2048). */
#define SL_JWT_MAX_TOKEN 8192
/* Longest sub, sid and jti (bytes). */
#define SL_JWT_MAX_ID 64
/* Longest iss and aud (bytes). */
#define SL_JWT_MAX_NAME 128
/* Length of a kid and of a 128-bit random id (base64url, no padding). */
#define SL_JWT_KID_LEN       22
#define SL_JWT_RANDOM_ID_LEN 22
/* Deepest JSON nesting accepted in a header or payload ({"aud":[...]} is 2). */
#define SL_JWT_MAX_DEPTH 4
/* Largest leeway accepted in sl_jwt_expect (seconds). */
#define SL_JWT_MAX_LEEWAY_S 300
/* Default lifetimes (DESIGN.md 9: access tokens live 15 minutes). */
#define SL_JWT_ACCESS_TTL_S  900
#define SL_JWT_REFRESH_TTL_S (14 * 24 * 3600)

typedef enum sl_jwt_alg { SL_JWT_RS256 = 1, SL_JWT_ES256 = 2 } sl_jwt_alg;

typedef enum sl_jwt_typ { SL_JWT_ACCESS = 1, SL_JWT_REFRESH = 2 } sl_jwt_typ;

/* The verdict of a verification. It is a separate enum from sl_err because
 * it is the answer of the function, not its failure: the gateway answers 401
 * for every code but SL_JWT_ERR_INTERNAL (500: the server, not the client,
 * is at fault) and may tell the client which one (sl_jwt_error_msg is safe
 * to send). */
#define SL_JWT_ERRORS(X)                                                                           \
    X(SL_JWT_OK, "token is valid")                                                                 \
    X(SL_JWT_ERR_MALFORMED, "malformed token")                                                     \
    X(SL_JWT_ERR_TOO_LONG, "token is too long")                                                    \
    X(SL_JWT_ERR_HEADER, "token header has a parameter that is not accepted")                      \
    X(SL_JWT_ERR_ALG, "token algorithm is not accepted")                                           \
    X(SL_JWT_ERR_KID_MISSING, "token has no key id")                                               \
    X(SL_JWT_ERR_KID_UNKNOWN, "token is signed with an unknown key")                               \
    X(SL_JWT_ERR_SIGNATURE, "token signature is invalid")                                          \
    X(SL_JWT_ERR_CLAIMS, "token lacks a required claim or has an invalid one")                     \
    X(SL_JWT_ERR_TYPE, "wrong token type")                                                         \
    X(SL_JWT_ERR_ISSUER, "token issuer is not accepted")                                           \
    X(SL_JWT_ERR_AUDIENCE, "token audience is not accepted")                                       \
    X(SL_JWT_ERR_EXPIRED, "token has expired")                                                     \
    X(SL_JWT_ERR_NOT_YET_VALID, "token is not valid yet")                                          \
    X(SL_JWT_ERR_SESSION_TOO_OLD, "the session has reached its maximum lifetime: log in again")    \
    X(SL_JWT_ERR_INTERNAL, "token could not be verified")

typedef enum sl_jwt_error {
#define SL_JWT_ERROR_ENUM_(code, msg) code,
    SL_JWT_ERRORS(SL_JWT_ERROR_ENUM_)
#undef SL_JWT_ERROR_ENUM_
        SL_JWT_ERROR__COUNT
} sl_jwt_error;

/* Stable name ("SL_JWT_ERR_EXPIRED", for logs and metric labels) and a
 * message safe to return to a client. Static strings, never NULL. */
const char *sl_jwt_error_name(sl_jwt_error err);
const char *sl_jwt_error_msg(sl_jwt_error err);

/* The claims of a token. Self-contained (no pointers), so it can be copied
 * and cached freely. */
typedef struct sl_jwt_claims {
    sl_jwt_typ typ;
    char sub[SL_JWT_MAX_ID + 1]; /* the user id */
    char sid[SL_JWT_MAX_ID + 1]; /* the session (login) id */
    char jti[SL_JWT_MAX_ID + 1]; /* this token's id (the blacklist key) */
    char iss[SL_JWT_MAX_NAME + 1];
    char aud[SL_JWT_MAX_NAME + 1]; /* verify: the expected audience it matched */
    int64_t iat;                   /* seconds since the epoch */
    int64_t nbf;                   /* verify: 0 when the token has none */
    int64_t exp;
    /* When the user authenticated (logged in, registered, changed the
     * password), seconds; carried unchanged through refreshes, so the
     * session's age is bounded whatever the rotation (OIDC's auth_time).
     * 0: absent (tokens issued before it existed; iat stands in). */
    int64_t auth_time;
    char kid[SL_JWT_KID_LEN + 1]; /* verify: the key that signed it; ignored by issue */
} sl_jwt_claims;

/* What a verification demands. iss and aud are borrowed for the call. */
typedef struct sl_jwt_expect {
    const char *iss;
    const char *aud;
    sl_jwt_typ typ;
    int64_t now;      /* seconds since the epoch (a parameter, so tests control time) */
    int64_t leeway_s; /* allowed clock skew, 0..SL_JWT_MAX_LEEWAY_S */
    /* Longest a session lives from its auth_time (iat without one),
     * seconds; 0: unbounded. */
    int64_t session_max_s;
} sl_jwt_expect;

/* ---- keys ---------------------------------------------------------------- */

typedef struct sl_jwt_keys sl_jwt_keys;

/* Build a key set from PEM text: `current_pem` must hold a private key
 * (PKCS#8, PKCS#1 or SEC1; not encrypted), `previous_pem` (NULL or length 0:
 * none) a public (SubjectPublicKeyInfo) or private key. Both are borrowed
 * and need not be NUL-terminated. Every key is parsed once here; the result
 * is immutable and thread-safe. NULL + errstr (SL_ERR_CONFIG wording: what
 * is wrong with which key) on failure. Free with sl_jwt_keys_destroy. */
sl_jwt_keys *sl_jwt_keys_from_pem(const char *current_pem, size_t current_len,
                                  const char *previous_pem, size_t previous_len, char *errstr,
                                  size_t errstr_size);

/* The same from files (at most 64 KiB each); previous_path may be NULL or
 * "". The error names the file and what is wrong with it. */
sl_jwt_keys *sl_jwt_keys_load(const char *current_path, const char *previous_path, char *errstr,
                              size_t errstr_size);

/* NULL is fine. Frees the OpenSSL objects too. */
void sl_jwt_keys_destroy(sl_jwt_keys *keys);

/* The kid of the signing key and of the previous key (NULL when there is
 * none); borrowed from keys. */
const char *sl_jwt_keys_current_kid(const sl_jwt_keys *keys);
const char *sl_jwt_keys_previous_kid(const sl_jwt_keys *keys);

/* The alg the current key signs with. */
sl_jwt_alg sl_jwt_keys_alg(const sl_jwt_keys *keys);

/* HMAC-SHA256 of `label` (NUL-terminated, borrowed) and `len` bytes of
 * `data` under a secret derived from the current signing key, into out.
 * Instances that share the signing key compute the same MAC, so it can
 * derive stable ids from client input (an idempotency key bound to the
 * request) without putting anything guessable in a topic. A key rotation
 * changes every MAC. SL_ERR_IO if OpenSSL fails. Any thread. */
sl_err sl_jwt_keys_mac(const sl_jwt_keys *keys, const char *label, const void *data, size_t len,
                       unsigned char out[32]);

/* The JWKS document, {"keys":[current, previous]} with kty, use "sig", alg,
 * kid and n/e (RSA) or crv/x/y (EC). Built once when the keys are loaded, so
 * serving /.well-known/jwks.json cannot fail: the string (NUL-terminated,
 * *len set when len is non-NULL) is borrowed from keys. */
const char *sl_jwt_jwks_json(const sl_jwt_keys *keys, size_t *len);

/* Create a new private key (RSA-2048 for SL_JWT_RS256, P-256 for
 * SL_JWT_ES256) as a PKCS#8 PEM file with mode 0600, atomically: it is
 * written to a temporary file in the same directory, fsynced and then
 * linked into place, so no reader ever sees half a key. An existing file at
 * `path` is never replaced (replacing it would invalidate every token):
 * then nothing is written and *created (if non-NULL) is false, also when
 * another process won a race to create it. The directory must exist. */
sl_err sl_jwt_key_generate(const char *path, sl_jwt_alg alg, bool *created, char *errstr,
                           size_t errstr_size);

/* ---- issuing ------------------------------------------------------------- */

/* Fill `claims` for a new token: typ, sub, sid, iss, aud copied (each must
 * be non-empty, without control characters and within SL_JWT_MAX_ID /
 * SL_JWT_MAX_NAME bytes), a fresh random jti, iat = nbf = now, exp = now +
 * ttl_s (ttl_s > 0). SL_ERR_INVALID + errstr on a bad argument. */
sl_err sl_jwt_claims_init(sl_jwt_claims *claims, sl_jwt_typ typ, const char *sub, const char *sid,
                          const char *iss, const char *aud, int64_t now, int64_t ttl_s,
                          char *errstr, size_t errstr_size);

/* A random 128-bit id, base64url (SL_JWT_RANDOM_ID_LEN chars + NUL), from
 * OpenSSL's CSPRNG: for jti and session ids. SL_ERR_FULL if out_size <
 * SL_JWT_RANDOM_ID_LEN + 1, SL_ERR_IO if the CSPRNG fails. Any thread. */
sl_err sl_jwt_random_id(char *out, size_t out_size);

/* Sign a token for `claims` (all fields but kid required; claims->nbf 0
 * leaves nbf out, claims->auth_time 0 leaves auth_time out; auth_time must
 * not be after iat) with the current key. The token and a NUL go to out;
 * *out_len (if non-NULL) gets its length. SL_ERR_FULL if out_size is too
 * small (SL_JWT_MAX_TOKEN always suffices), SL_ERR_INVALID for bad claims.
 * Any thread. */
sl_err sl_jwt_issue(const sl_jwt_keys *keys, const sl_jwt_claims *claims, char *out,
                    size_t out_size, size_t *out_len, char *errstr, size_t errstr_size);

/* ---- verifying ----------------------------------------------------------- */

/* Verify `token` (len bytes, need not be NUL-terminated) strictly:
 *   - at most SL_JWT_MAX_TOKEN bytes, exactly three base64url parts
 *     (no padding, canonical trailing bits), JSON objects nested at most
 *     SL_JWT_MAX_DEPTH deep, no duplicate members;
 *   - header: only alg, kid and typ (so crit, jku, jwk, x5u, x5c... are
 *     refused, never followed); alg RS256 or ES256 and equal to the alg of
 *     the key named by kid; kid required and loaded; typ "at+jwt" (or
 *     "application/at+jwt", any case) for access, "refresh+jwt" for refresh;
 *   - the signature, with the parsed key, before the payload is parsed;
 *   - claims: typ == expect->typ; iss == expect->iss; aud == expect->aud or
 *     an array containing it; sub, sid, jti non-empty strings within
 *     SL_JWT_MAX_ID; exp and iat integers, exp > iat; exp > now - leeway;
 *     iat <= now + leeway; nbf (optional) <= now + leeway; auth_time
 *     (optional) an integer <= iat, and (auth_time, or iat without it) +
 *     expect->session_max_s > now - leeway when session_max_s > 0.
 * On SL_JWT_OK `out` (may be NULL) gets the claims; on any other verdict it
 * is zeroed. errstr (may be NULL) gets a detail for the log that never
 * contains token content. Revocation is NOT checked here: the caller looks
 * the jti (or sid) up in the blacklist on every request. Any thread. */
sl_jwt_error sl_jwt_verify(const sl_jwt_keys *keys, const char *token, size_t len,
                           const sl_jwt_expect *expect, sl_jwt_claims *out, char *errstr,
                           size_t errstr_size);

/* ---- verified-token cache ------------------------------------------------ */

/*
 * A bounded cache of verified tokens, so the RSA/ECDSA verification runs
 * once per token rather than once per request. Keyed by SHA-256 of the token
 * (the token itself is never stored), it holds the parsed claims and the
 * kid. A hit re-checks everything that can change between requests: the
 * time window (exp/nbf/iat against expect->now), typ, iss and aud against
 * the new expectation, and that the kid is still in the key set passed in
 * (so a key dropped from the set stops its tokens at once). Expired entries
 * are dropped when met and preferred for replacement.
 *
 * Layout: 8-way set-associative, sets spread over up to 16 shards with one
 * mutex each; within a set the least recently used entry is replaced. The
 * number of entries never exceeds the capacity. One entry is about 560
 * bytes; the table is allocated at once with calloc, so untouched pages
 * cost no memory.
 *
 * The blacklist must still be checked by the caller on every request, hit
 * or miss: a cached token may have been revoked since.
 */
typedef struct sl_jwt_cache sl_jwt_cache;

/* capacity: the most entries kept, 8..16M; the cache uses the largest
 * 8 * 2^k not above it (see sl_jwt_cache_capacity). NULL + errstr on a bad
 * capacity or no memory. */
sl_jwt_cache *sl_jwt_cache_new(size_t capacity, char *errstr, size_t errstr_size);

/* NULL is fine. No verification may be running on the cache. */
void sl_jwt_cache_destroy(sl_jwt_cache *cache);

/* sl_jwt_verify with the cache in front: a hit answers from the cached
 * claims (after the re-checks above), a miss verifies fully and caches the
 * claims of a valid token. Verdicts and outputs are those of sl_jwt_verify.
 * Any thread. */
sl_jwt_error sl_jwt_verify_cached(const sl_jwt_keys *keys, sl_jwt_cache *cache, const char *token,
                                  size_t len, const sl_jwt_expect *expect, sl_jwt_claims *out,
                                  char *errstr, size_t errstr_size);

/* The real capacity, and the number of entries held now. */
size_t sl_jwt_cache_capacity(const sl_jwt_cache *cache);
size_t sl_jwt_cache_count(sl_jwt_cache *cache);

/* Lookups answered from the cache (valid or not) and lookups that had to
 * verify, since creation (for /metrics). Either pointer may be NULL. */
void sl_jwt_cache_stats(sl_jwt_cache *cache, uint64_t *hits, uint64_t *misses);

/* Drop every entry. */
void sl_jwt_cache_clear(sl_jwt_cache *cache);

/* ---- base64url (RFC 4648 section 5, no padding) -------------------------- */

/* Encode n bytes; out gets the text and a NUL. SL_ERR_FULL if out_size <
 * sl_jwt_b64url_len(n) + 1. */
size_t sl_jwt_b64url_len(size_t n);
sl_err sl_jwt_b64url_encode(const unsigned char *in, size_t n, char *out, size_t out_size);

/* Decode strictly: only A-Z a-z 0-9 - _, no padding, no whitespace, no
 * length of 1 mod 4, unused trailing bits zero (so each byte string has one
 * encoding). false if the text breaks a rule or the result exceeds out_size. */
bool sl_jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t out_size,
                          size_t *out_len);

#endif
