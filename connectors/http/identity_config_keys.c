/* identity_config_keys.c: the configuration keys read by the identity HTTP
 * routes (identity_routes.c: signing keys, tokens, password hashing,
 * throttling), owned here and registered with the others by
 * processor/cmd/config_groups.c. */
#include "connectors/http/identity_config_keys.h"

#include <stddef.h>

static const char *const key_alg_choices[] = {"RS256", "ES256", NULL};

static const sl_config_prop props[] = {
    {"identity.key.file", SL_CONFIG_STRING, "", 0, 0, NULL,
     "PEM file of the private key that signs tokens (RSA 2048+ for RS256, EC P-256 for ES256); "
     "every instance needs the same one. Empty: generated on first start as "
     "<state.dir>/<application.id>/token-signing-key.pem (one instance only)."},
    {"identity.key.previous.file", SL_CONFIG_STRING, "", 0, 0, NULL,
     "PEM file of the previous signing key (public or private) during a key rotation: tokens "
     "it signed are still accepted, so nobody is logged out. Empty: none."},
    {"identity.key.alg", SL_CONFIG_ENUM, "RS256", 0, 0, key_alg_choices,
     "Algorithm of a generated signing key (a configured key's type decides otherwise). RS256 "
     "verifies about 3x faster than ES256."},
    {"identity.token.issuer", SL_CONFIG_STRING, "sluice", 0, 0, NULL,
     "iss of issued tokens, and the only issuer accepted."},
    {"identity.token.audience", SL_CONFIG_STRING, "sluice", 0, 0, NULL,
     "aud of issued tokens, and the only audience accepted."},
    {"identity.token.access.ttl.s", SL_CONFIG_INT, "900", 60, 86400, NULL,
     "Lifetime of access tokens, seconds."},
    {"identity.token.refresh.ttl.s", SL_CONFIG_INT, "1209600", 300, 31536000, NULL,
     "Lifetime of refresh tokens, seconds (each refresh rotates the token)."},
    {"identity.session.max.s", SL_CONFIG_INT, "2592000", 300, 31536000, NULL,
     "Absolute lifetime of a session, seconds from the login (or password change) that began "
     "it: no token of it is accepted, and refresh stops working, after it, however often the "
     "refresh token was rotated. Tokens are issued to end by then (auth_time claim). Default "
     "30 days."},
    {"identity.refresh.retry.grace.ms", SL_CONFIG_INT, "10000", 0, 600000, NULL,
     "A refresh token presented again this soon after its rotation (a client retrying after a "
     "timeout or a 503, on any instance) gets the same answer, the same token pair; later, or "
     "after another use, it counts as reuse and revokes the session. 0: no retry."},
    {"identity.register.visible.timeout.ms", SL_CONFIG_INT, "5000", 0, 60000, NULL,
     "POST /user/register answers only once the new user can be read on every instance "
     "(users-by-id at its owner, one repartition hop after the registration, and every "
     "global store named by the composing app, e.g. the dialogs' recipients), so a client "
     "may get, log in or be written to at once, anywhere. The longest wait; after it, 503 "
     "with Retry-After (retry with the same Idempotency-Key). 0: answer at once."},
    {"identity.token.leeway.s", SL_CONFIG_INT, "30", 0, 300, NULL,
     "Clock skew tolerated when checking exp, nbf and iat, seconds."},
    {"identity.token.cache.entries", SL_CONFIG_INT, "65536", 16, 16777216, NULL,
     "Verified tokens remembered (bounded; the blacklist is still checked every time)."},
    {"identity.argon2.threads", SL_CONFIG_INT, "2", 1, 64, NULL,
     "Threads hashing and verifying passwords (argon2id); at most this many hashes run at "
     "once, each with identity.argon2.memory.kib of memory."},
    {"identity.argon2.queue", SL_CONFIG_INT, "256", 1, 65536, NULL,
     "Password jobs that may wait for a thread; beyond, requests get 503 + Retry-After."},
    {"identity.argon2.timeout.ms", SL_CONFIG_INT, "10000", 100, 120000, NULL,
     "Longest a request waits for its password job (queue + hash)."},
    {"identity.argon2.memory.kib", SL_CONFIG_INT, "19456", 19456, 262144, NULL,
     "argon2id memory per hash, KiB (OWASP minimum 19456)."},
    {"identity.throttle.ip.burst", SL_CONFIG_INT, "20", 1, 10000, NULL,
     "Registration and login attempts one client address may make at once (then one per "
     "identity.throttle.ip.refill.ms; 429 beyond). 20 failed logins in 15 minutes lock the "
     "address for 1 minute, doubling up to 15."},
    {"identity.throttle.ip.refill.ms", SL_CONFIG_INT, "3000", 1, 86400000, NULL,
     "One more attempt per client address every this many milliseconds."},
    {"identity.throttle.account.burst", SL_CONFIG_INT, "5", 1, 10000, NULL,
     "Login attempts on one account at once (then one per "
     "identity.throttle.account.refill.ms). 5 failed logins in 15 minutes lock the account "
     "for 1 minute, doubling up to 15."},
    {"identity.throttle.account.refill.ms", SL_CONFIG_INT, "12000", 1, 86400000, NULL,
     "One more login attempt per account every this many milliseconds."},
    {"identity.argon2.passes", SL_CONFIG_INT, "2", 2, 10, NULL, "argon2id passes (t)."},
    {"identity.argon2.parallelism", SL_CONFIG_INT, "1", 1, 4, NULL, "argon2id lanes (p)."},
};

const sl_config_group sl_identity_routes_config_keys = {"connectors/http/identity_routes", props,
                                                        sizeof(props) / sizeof(props[0])};
