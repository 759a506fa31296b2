/*
 * throttle.c: per-key token buckets and failure scores in a fixed-size,
 * set-associative table (see throttle.h for the policy).
 *
 * Layout: `n_sets` (a power of 2) sets of WAYS slots each. A key's 64-bit
 * SipHash picks its set (low bits) and is its identity (all 64 bits; 0
 * marks an empty slot, so a hash of 0 is stored as 1). Sets are guarded by
 * striped mutexes: set s by locks[s % n_locks].
 *
 * Arithmetic is in integer milli-units: tokens_milli in [0, burst * 1000],
 * failures_milli in [0, (failure_limit + SCORE_HEADROOM) * 1000]. A slot is
 * brought up to date ("advanced") only when its own key is checked or fails,
 * so truncation loses at most one milli-unit per real attempt; eviction
 * classifies slots without modifying them.
 */
#include "connectors/http/auth/throttle.h"

#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* SCORE_HEADROOM: failures counted above the limit (the lockout doubling
 * saturates long before). */
#define WAYS           8
#define MAX_LOCKS      64
#define SCORE_HEADROOM 32
#define MAX_CAPACITY   (1u << 22)

const sl_throttle_config sl_throttle_config_per_ip = {
    .capacity = 65536,
    .burst = 20,
    .refill_ms = 3000,
    .failure_limit = 20,
    .failure_window_ms = 15 * 60 * 1000,
    .lockout_ms = 60 * 1000,
    .lockout_max_ms = 15 * 60 * 1000,
};

const sl_throttle_config sl_throttle_config_per_account = {
    .capacity = 65536,
    .burst = 5,
    .refill_ms = 12000,
    .failure_limit = 5,
    .failure_window_ms = 15 * 60 * 1000,
    .lockout_ms = 60 * 1000,
    .lockout_max_ms = 15 * 60 * 1000,
};

typedef struct slot {
    uint64_t tag;            /* SipHash of the key; 0: empty */
    int64_t seen_ms;         /* the bucket and the score are up to date as of this time */
    int64_t locked_until_ms; /* limited while now < this */
    uint32_t tokens_milli;
    uint32_t failures_milli;
} slot;

struct sl_throttle {
    sl_throttle_config config;
    unsigned char hash_key[crypto_shorthash_KEYBYTES];
    uint32_t n_sets; /* power of 2 */
    uint32_t n_locks;
    slot *slots; /* n_sets * WAYS */
    pthread_mutex_t locks[MAX_LOCKS];
};

static sl_err check_range(const char *name, uint32_t v, uint32_t lo, uint32_t hi, char *errstr,
                          size_t errstr_size) {
    if (v < lo || v > hi)
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "throttle %s %u is outside [%u, %u]",
                       name, v, lo, hi);
    return SL_OK;
}

static sl_err check_config(const sl_throttle_config *c, char *errstr, size_t errstr_size) {
    const uint32_t day = 86400000u;
    sl_err err;
    if ((err = check_range("capacity", c->capacity, WAYS, MAX_CAPACITY, errstr, errstr_size)) ||
        (err = check_range("burst", c->burst, 1, 10000, errstr, errstr_size)) ||
        (err = check_range("refill_ms", c->refill_ms, 1, day, errstr, errstr_size)) ||
        (err = check_range("failure_limit", c->failure_limit, 0, 10000, errstr, errstr_size)) ||
        (err = check_range("failure_window_ms", c->failure_window_ms, 1000, 7 * day, errstr,
                           errstr_size)) ||
        (err = check_range("lockout_ms", c->lockout_ms, 1000, day, errstr, errstr_size)) ||
        (err = check_range("lockout_max_ms", c->lockout_max_ms, c->lockout_ms, 7 * day, errstr,
                           errstr_size)))
        return err;
    return SL_OK;
}

sl_throttle *sl_throttle_new(const sl_throttle_config *config, char *errstr, size_t errstr_size) {
    if (!config) {
        sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "throttle: no config");
        return NULL;
    }
    if (check_config(config, errstr, errstr_size))
        return NULL;
    if (sodium_init() < 0) {
        sl_fail(errstr, errstr_size, SL_ERR_IO, "throttle: libsodium failed to initialize");
        return NULL;
    }
    sl_throttle *t = calloc(1, sizeof(*t));
    if (!t) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "throttle: out of memory");
        return NULL;
    }
    t->config = *config;
    t->n_sets = 1;
    while ((uint64_t)t->n_sets * WAYS < config->capacity)
        t->n_sets <<= 1;
    t->slots = calloc((size_t)t->n_sets * WAYS, sizeof(slot));
    if (!t->slots) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "throttle: out of memory for %u slots",
                t->n_sets * WAYS);
        free(t);
        return NULL;
    }
    t->n_locks = t->n_sets < MAX_LOCKS ? t->n_sets : MAX_LOCKS;
    for (uint32_t i = 0; i < t->n_locks; i++)
        pthread_mutex_init(&t->locks[i], NULL);
    crypto_shorthash_keygen(t->hash_key);
    return t;
}

void sl_throttle_destroy(sl_throttle *t) {
    if (!t)
        return;
    for (uint32_t i = 0; i < t->n_locks; i++)
        pthread_mutex_destroy(&t->locks[i]);
    sodium_memzero(t->hash_key, sizeof(t->hash_key));
    free(t->slots);
    free(t);
}

size_t sl_throttle_capacity(const sl_throttle *t) {
    return (size_t)t->n_sets * WAYS;
}

static uint64_t key_hash(const sl_throttle *t, const char *key) {
    unsigned char out[crypto_shorthash_BYTES];
    uint64_t h;
    crypto_shorthash(out, (const unsigned char *)key, strlen(key), t->hash_key);
    memcpy(&h, out, sizeof(h));
    return h ? h : 1;
}

/* ---- One slot's arithmetic ---------------------------------------------- */

static uint64_t elapsed_ms(const slot *s, int64_t now_ms) {
    /* A caller's clock that steps back must not refill or forgive anything.
     * Cap at ~3 years so the products below cannot overflow. */
    const uint64_t cap = 100000000000ull;
    if (now_ms <= s->seen_ms)
        return 0;
    uint64_t e = (uint64_t)(now_ms - s->seen_ms);
    return e < cap ? e : cap;
}

static uint32_t tokens_at(const sl_throttle_config *c, const slot *s, int64_t now_ms) {
    uint64_t full = (uint64_t)c->burst * 1000;
    uint64_t tokens = s->tokens_milli + elapsed_ms(s, now_ms) * 1000 / c->refill_ms;
    return (uint32_t)(tokens < full ? tokens : full);
}

static uint32_t failures_at(const sl_throttle_config *c, const slot *s, int64_t now_ms) {
    uint64_t forgiven = elapsed_ms(s, now_ms) * c->failure_limit * 1000 / c->failure_window_ms;
    return forgiven >= s->failures_milli ? 0 : (uint32_t)(s->failures_milli - forgiven);
}

/* Bring the slot up to now_ms (never back in time). */
static void advance(const sl_throttle_config *c, slot *s, int64_t now_ms) {
    if (now_ms <= s->seen_ms)
        return;
    s->tokens_milli = tokens_at(c, s, now_ms);
    s->failures_milli = failures_at(c, s, now_ms);
    s->seen_ms = now_ms;
}

/* How much a slot would lose by being evicted at now_ms: 0 nothing (empty,
 * or identical to a fresh slot), 1 a partly spent bucket, 2 failures or a
 * lockout. */
static int eviction_cost(const sl_throttle_config *c, const slot *s, int64_t now_ms) {
    if (!s->tag)
        return 0;
    if (now_ms < s->locked_until_ms || failures_at(c, s, now_ms) > 0)
        return 2;
    return tokens_at(c, s, now_ms) < c->burst * 1000u ? 1 : 0;
}

/* ---- Lookup ---------------------------------------------------------------- */

/* The set of `tag` and its lock (taken by the caller). */
static slot *set_of(sl_throttle *t, uint64_t tag, pthread_mutex_t **lock) {
    uint32_t set = (uint32_t)(tag & (t->n_sets - 1));
    *lock = &t->locks[set % t->n_locks];
    return &t->slots[(size_t)set * WAYS];
}

static slot *find(slot *set, uint64_t tag) {
    for (int i = 0; i < WAYS; i++)
        if (set[i].tag == tag)
            return &set[i];
    return NULL;
}

/* The slot of `tag`, made fresh (full bucket, no failures) in the set's
 * cheapest slot if absent. Set lock held. */
static slot *find_or_take(const sl_throttle_config *c, slot *set, uint64_t tag, int64_t now_ms) {
    slot *s = find(set, tag);
    if (s)
        return s;
    slot *victim = &set[0];
    int victim_cost = eviction_cost(c, victim, now_ms);
    for (int i = 1; i < WAYS && victim_cost > 0; i++) {
        int cost = eviction_cost(c, &set[i], now_ms);
        if (cost < victim_cost || (cost == victim_cost && set[i].seen_ms < victim->seen_ms)) {
            victim = &set[i];
            victim_cost = cost;
        }
    }
    *victim = (slot){.tag = tag,
                     .seen_ms = now_ms,
                     .locked_until_ms = 0,
                     .tokens_milli = c->burst * 1000u,
                     .failures_milli = 0};
    return victim;
}

static int ceil_seconds(int64_t ms) {
    int64_t s = (ms + 999) / 1000;
    return s < 1 ? 1 : s > 7 * 86400 ? 7 * 86400 : (int)s;
}

sl_throttle_verdict sl_throttle_check(sl_throttle *t, const char *key, int64_t now_ms,
                                      int *retry_after_s) {
    const sl_throttle_config *c = &t->config;
    uint64_t tag = key_hash(t, key);
    pthread_mutex_t *lock;
    slot *set = set_of(t, tag, &lock);
    sl_throttle_verdict verdict = SL_THROTTLE_ALLOWED;
    int64_t wait_ms = 0;

    pthread_mutex_lock(lock);
    slot *s = find_or_take(c, set, tag, now_ms);
    advance(c, s, now_ms);
    if (now_ms < s->locked_until_ms || s->tokens_milli < 1000) {
        /* Retry-After: when both the lockout is over and a token is back. */
        int64_t token_wait_ms =
            s->tokens_milli < 1000 ? ((int64_t)(1000 - s->tokens_milli) * c->refill_ms + 999) / 1000
                                   : 0;
        int64_t lock_wait_ms = now_ms < s->locked_until_ms ? s->locked_until_ms - now_ms : 0;
        verdict = SL_THROTTLE_LIMITED;
        wait_ms = token_wait_ms > lock_wait_ms ? token_wait_ms : lock_wait_ms;
    } else {
        s->tokens_milli -= 1000;
    }
    pthread_mutex_unlock(lock);

    if (retry_after_s)
        *retry_after_s = verdict == SL_THROTTLE_LIMITED ? ceil_seconds(wait_ms) : 0;
    return verdict;
}

void sl_throttle_failure(sl_throttle *t, const char *key, int64_t now_ms) {
    const sl_throttle_config *c = &t->config;
    if (c->failure_limit == 0)
        return;
    uint64_t tag = key_hash(t, key);
    pthread_mutex_t *lock;
    slot *set = set_of(t, tag, &lock);

    pthread_mutex_lock(lock);
    slot *s = find_or_take(c, set, tag, now_ms);
    advance(c, s, now_ms);
    uint32_t cap = (c->failure_limit + SCORE_HEADROOM) * 1000u;
    s->failures_milli = s->failures_milli + 1000 < cap ? s->failures_milli + 1000 : cap;
    uint32_t limit_milli = c->failure_limit * 1000u;
    if (s->failures_milli >= limit_milli) {
        /* Failures above the limit, rounded up: a failure while the score
         * has barely leaked still doubles the lockout. */
        uint32_t excess = (s->failures_milli - limit_milli + 999) / 1000;
        uint64_t lockout = (uint64_t)c->lockout_ms << (excess < 30 ? excess : 30);
        if (lockout > c->lockout_max_ms)
            lockout = c->lockout_max_ms;
        int64_t until = now_ms + (int64_t)lockout;
        if (until > s->locked_until_ms)
            s->locked_until_ms = until;
    }
    pthread_mutex_unlock(lock);
}

void sl_throttle_success(sl_throttle *t, const char *key) {
    uint64_t tag = key_hash(t, key);
    pthread_mutex_t *lock;
    slot *set = set_of(t, tag, &lock);
    pthread_mutex_lock(lock);
    slot *s = find(set, tag);
    if (s) {
        s->failures_milli = 0;
        s->locked_until_ms = 0;
    }
    pthread_mutex_unlock(lock);
}

size_t sl_throttle_tracked(sl_throttle *t) {
    size_t n = 0;
    for (uint32_t set = 0; set < t->n_sets; set++) {
        pthread_mutex_t *lock = &t->locks[set % t->n_locks];
        pthread_mutex_lock(lock);
        for (int i = 0; i < WAYS; i++)
            n += t->slots[(size_t)set * WAYS + i].tag != 0;
        pthread_mutex_unlock(lock);
    }
    return n;
}

void sl_throttle_account_key(char *out, size_t out_size, const char *user_id,
                             const char *identifier) {
    snprintf(out, out_size, "acct:%s", user_id && user_id[0] ? user_id : identifier);
}
