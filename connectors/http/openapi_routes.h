/*
 * openapi_routes.h: GET /openapi.json, the OpenAPI description of the HTTP
 * API that `sluice run` serves (schemas/openapi.yaml).
 *
 * The document is compiled into the library: the Makefile converts the
 * YAML to JSON (scripts/openapi-json) and the JSON into a C byte array
 * (build/gen/schemas/openapi.c), so the binary needs no file at run time.
 * tests/integration/test_openapi.c holds it against the routes both
 * listeners register (the admin listener's GET /v1/routes), and
 * tests/shell/test_openapi.sh validates it with openapi-spec-validator.
 *
 * Threading: sl_openapi_routes on the app's thread (before the server
 * starts); the handler on HTTP threads (it reads constant data only).
 */
#ifndef SLUICE_OPENAPI_ROUTES_H
#define SLUICE_OPENAPI_ROUTES_H

#include <stddef.h>

#include "processor/base/error.h"
#include "processor/http/server.h"

/* The document, JSON, not NUL-terminated in general; static, borrowed. */
const char *sl_openapi_json(size_t *len);

/* Register GET /openapi.json on `http` (the public listener). */
sl_err sl_openapi_routes(sl_http_server *http);

#endif
