/*
 * http_int.h: internals of http.c exposed for tests (the route matcher's
 * fuzz target). Handlers and the rest of sluice use http.h.
 */
#ifndef SLUICE_HTTP_INT_H
#define SLUICE_HTTP_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "processor/http/server.h"

/* Match `path` against a route `pattern` (segments literal or "{name}", see
 * http.h). On a match, *n_params receives the number of captures (at most
 * SL_HTTP_MAX_PARAMS) and capture i has its name at names[i] (name_lens[i]
 * bytes, pointing into `pattern`, not NUL-terminated) and its value in
 * values[i], a malloc'd copy the caller frees. No match: false, *n_params is
 * unchanged, and values[] may hold copies made before an allocation failed
 * (the caller frees every non-NULL entry, as http.c's free_params does).
 * All arrays have SL_HTTP_MAX_PARAMS entries. Any thread. */
bool sl_http_match_pattern(const char *pattern, const char *path, size_t *n_params,
                           const char **names, size_t *name_lens, char **values);

#endif
