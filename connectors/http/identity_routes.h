/*
 * identity_http.h: the identity routes of the HTTP gateway.
 *
 *   POST /user/register           spec fields (+ optional email) -> user_id
 *                                 and a token pair, once the registration
 *                                 is decided on the partition owning the
 *                                 e-mail (reply path)
 *   POST /login                   {"id"|"email", "password"} -> {"token",
 *                                 "refresh_token"}; served by the instance
 *                                 owning the user's store partition
 *   GET  /user/get/{id}           the spec's User, from users-by-id
 *   POST /auth/refresh            rotation; reuse revokes the session
 *   POST /auth/logout             revokes the access token and its session
 *   POST /auth/introspect         RFC 7662
 *   GET  /.well-known/jwks.json   the public keys
 *
 * Requests that wait (hashing, the reply of a command) block only their own
 * connection: the HTTP server runs a thread per connection, argon2id runs
 * on a bounded pool (full: 503 + Retry-After), so a registration storm
 * cannot stall reads. Passwords are wiped as soon as they are hashed or
 * verified and never reach a topic or a log; tokens are never logged.
 *
 * Threading: new/routes/destroy on the app's thread; handlers and
 * sl_identity_http_authenticate on HTTP threads.
 */
#ifndef SLUICE_IDENTITY_HTTP_H
#define SLUICE_IDENTITY_HTTP_H

#include <stdbool.h>

#include "processor/gateway/gateway.h"
#include "connectors/http/auth/jwt.h"
#include "processor/base/config.h"
#include "processor/http/server.h"
#include "processor/base/log.h"

typedef struct sl_identity_http sl_identity_http;

/* Load (or, when identity.key.file is empty, generate under state.dir) the
 * signing keys and start the hashing pool. `config`, `gateway` and `logger`
 * are borrowed and must outlive the object. NULL + errstr on failure. */
sl_identity_http *sl_identity_http_new(const sl_config *config, sl_gateway *gateway,
                                       const sl_logger *logger, char *errstr,
                                       size_t errstr_size);

/* Register the routes above on `http` (before it starts). */
sl_err sl_identity_http_routes(sl_identity_http *ih, sl_http_server *http);

/* For other routes (dialogs): check the request's "Authorization: Bearer"
 * access token (signature, alg, kid, iss, aud, typ, exp, nbf) and the
 * blacklist. True with *claims filled, or false with resp answered (401,
 * or 503 while the blacklist is not bootstrapped). HTTP threads. */
bool sl_identity_http_authenticate(sl_identity_http *ih, const sl_http_request *req,
                                   sl_http_response *resp, sl_jwt_claims *claims);

/* Stop the hashing pool and free. Stop the HTTP server first. NULL is fine. */
void sl_identity_http_destroy(sl_identity_http *ih);

/* The most global stores sl_identity_http_await_global takes. */
#define SL_IDENTITY_HTTP_MAX_AWAIT 4

/* A registration is answered only once the new user id is a key of global
 * store `store` (borrowed name) on this instance, as well as of
 * users-by-id at its owner (identity.register.visible.timeout.ms). Before
 * the routes serve. */
sl_err sl_identity_http_await_global(sl_identity_http *ih, const char *store);

#endif
