/* trace.c: W3C traceparent parsing, child spans and the thread's current
 * trace. See trace.h. */
#include "processor/base/trace.h"

#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static bool lower_hex(const char *s, size_t n, bool *all_zero) {
    *all_zero = true;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        if (c != '0')
            *all_zero = false;
    }
    return true;
}

bool sl_traceparent_valid(const char *text, size_t len) {
    bool zero;
    if (!text || len < SL_TRACEPARENT_LEN || !lower_hex(text, 2, &zero))
        return false;
    if (memcmp(text, "ff", 2) == 0)
        return false; /* forbidden version */
    if (memcmp(text, "00", 2) == 0 ? len != SL_TRACEPARENT_LEN
                                   : len > SL_TRACEPARENT_LEN && text[SL_TRACEPARENT_LEN] != '-')
        return false;
    if (text[2] != '-' || text[35] != '-' || text[52] != '-')
        return false;
    if (!lower_hex(text + 3, 32, &zero) || zero)
        return false;
    if (!lower_hex(text + 36, 16, &zero) || zero)
        return false;
    return lower_hex(text + 53, 2, &zero);
}

/* xorshift64* per thread, seeded from the kernel once: span ids need to be
 * unique, not secret, and a syscall per record would cost. */
static _Thread_local uint64_t rng_state;

static uint64_t next_random(void) {
    if (rng_state == 0) {
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            seed = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)&seed;
        }
        rng_state = seed ? seed : 0x2545f4914f6cdd1dULL;
    }
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static void put_hex(char *out, uint64_t v, int digits) {
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        out[i] = hex[v & 0xf];
}

/* 16 random hex digits, never all zero. */
static void random_id(char out[16]) {
    uint64_t v;
    do
        v = next_random();
    while (v == 0);
    put_hex(out, v, 16);
}

void sl_trace_child(const char *parent, size_t len, char out[SL_TRACEPARENT_LEN + 1]) {
    memcpy(out, "00-", 3);
    char flags = '0';
    if (sl_traceparent_valid(parent, len)) {
        memcpy(out + 3, parent + 3, 32);
        /* only the flag version 00 defines (sampled) passes on */
        char last = parent[54];
        int bits = last <= '9' ? last - '0' : last - 'a' + 10;
        flags = (bits & 1) ? '1' : '0';
    } else {
        random_id(out + 3);
        random_id(out + 19);
    }
    out[35] = '-';
    random_id(out + 36);
    out[52] = '-';
    out[53] = '0';
    out[54] = flags;
    out[55] = '\0';
}

static _Thread_local char current[SL_TRACEPARENT_LEN + 1];

void sl_trace_set_current(const char *traceparent) {
    if (traceparent && sl_traceparent_valid(traceparent, strlen(traceparent))) {
        memcpy(current, traceparent, SL_TRACEPARENT_LEN);
        current[SL_TRACEPARENT_LEN] = '\0';
    } else {
        current[0] = '\0';
    }
}

const char *sl_trace_current(void) {
    return current[0] ? current : NULL;
}
