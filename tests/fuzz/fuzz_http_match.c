/*
 * fuzz_http_match.c: the HTTP route matcher (sl_http_match_pattern, the
 * `{param}` patterns of http.h) on untrusted paths and patterns.
 *
 * The input, up to its first NUL, is a request path matched against the
 * patterns sluice and its tests register; if it holds a newline, the part
 * before is also tried as a pattern against the part after. A match must
 * capture at most SL_HTTP_MAX_PARAMS non-empty values without '/', with
 * names inside the pattern, and substituting the values into the pattern
 * must give back the path exactly. No match must leave nothing allocated.
 */
#include <stdbool.h>
#include <string.h>

#include "processor/http/server_int.h"
#include "tests/fuzz/fuzz.h"

static const char *const patterns[] = {
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/echo",
    "/user/get/{id}",
    "/v1/stores/{store}/keys/{key}",
    "/{a}/{b}/{c}/{d}",
    "/{a}/{b}/{c}/{d}/{e}",
    "/x/{}/{y}",
    "/{a}/",
    "//{a}",
};

/* Is the pattern segment at p (plen bytes) a capture? As http.h defines. */
static bool is_capture(const char *p, size_t plen) {
    return plen > 2 && p[0] == '{' && p[plen - 1] == '}';
}

static void match_and_check(const char *pattern, const char *path) {
    size_t n_params = SIZE_MAX;
    const char *names[SL_HTTP_MAX_PARAMS] = {NULL};
    size_t name_lens[SL_HTTP_MAX_PARAMS] = {0};
    char *values[SL_HTTP_MAX_PARAMS] = {NULL};
    bool matched = sl_http_match_pattern(pattern, path, &n_params, names, name_lens, values);
    if (!matched) {
        FUZZ_CHECK(n_params == SIZE_MAX);
        for (size_t i = 0; i < SL_HTTP_MAX_PARAMS; i++)
            FUZZ_CHECK(values[i] == NULL);
        return;
    }
    FUZZ_CHECK(n_params <= SL_HTTP_MAX_PARAMS);
    size_t pattern_len = strlen(pattern), path_len = strlen(path);
    for (size_t i = 0; i < n_params; i++) {
        FUZZ_CHECK(values[i] != NULL && values[i][0] != '\0' && !strchr(values[i], '/'));
        FUZZ_CHECK(names[i] > pattern && names[i] + name_lens[i] < pattern + pattern_len);
        FUZZ_CHECK(names[i][-1] == '{' && names[i][name_lens[i]] == '}');
    }
    for (size_t i = n_params; i < SL_HTTP_MAX_PARAMS; i++)
        FUZZ_CHECK(values[i] == NULL);

    /* Substitute the captures back: the path again, byte for byte. */
    char *rebuilt = malloc(pattern_len + path_len + 1);
    FUZZ_CHECK(rebuilt != NULL);
    size_t used = 0, k = 0;
    for (const char *p = pattern; *p;) {
        size_t plen = strcspn(p, "/");
        if (plen > 0 && is_capture(p, plen)) {
            FUZZ_CHECK(k < n_params);
            size_t value_len = strlen(values[k]);
            FUZZ_CHECK(used + value_len <= path_len);
            memcpy(rebuilt + used, values[k++], value_len);
            used += value_len;
        } else {
            size_t literal = plen ? plen : 1; /* a segment, or one '/' */
            FUZZ_CHECK(used + literal <= path_len);
            memcpy(rebuilt + used, p, literal);
            used += literal;
            plen = literal;
        }
        p += plen;
    }
    FUZZ_CHECK(k == n_params && used == path_len && memcmp(rebuilt, path, path_len) == 0);
    free(rebuilt);
    for (size_t i = 0; i < n_params; i++)
        free(values[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    if (size)
        memcpy(text, data, size);
    text[size] = '\0';
    for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++)
        match_and_check(patterns[i], text);
    char *newline = strchr(text, '\n');
    if (newline) {
        *newline = '\0';
        match_and_check(text, newline + 1);
    }
    free(text);
    return 0;
}
