/*
 * cache.c: the verified-token cache of jwt.h: a token's SHA-256 maps to the
 * claims it verified to, so its signature is checked once, not per request.
 * Sharded, set-associative (CACHE_WAYS entries per set, least recently used
 * replaced), each shard under its own mutex. A hit repeats only what can
 * change between two requests (sl_jwt_check_live) and that the key is still
 * loaded.
 */
#include "connectors/http/auth/jwt.h"
#include "connectors/http/auth/jwt_int.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

/* ---- the verified-token cache -------------------------------------------- */

#define CACHE_WAYS         8
#define CACHE_MAX_SHARDS   16
#define CACHE_MAX_CAPACITY ((size_t)1 << 24)
#define HASH_LEN           32

typedef struct cache_entry {
    uint64_t last_used; /* the shard's tick at the last use; 0: empty */
    unsigned char hash[HASH_LEN];
    sl_jwt_claims claims;
} cache_entry;

typedef struct cache_shard {
    pthread_mutex_t lock;
    cache_entry *entries; /* sets_per_shard * CACHE_WAYS, borrowed from the cache */
    size_t count;
    uint64_t tick, hits, misses;
    char pad[64]; /* keeps two shards' locks off one cache line */
} cache_shard;

struct sl_jwt_cache {
    size_t capacity, n_shards, sets_per_shard;
    cache_entry *entries;
    cache_shard shard[CACHE_MAX_SHARDS];
};

sl_jwt_cache *sl_jwt_cache_new(size_t capacity, char *errstr, size_t errstr_size) {
    if (capacity < CACHE_WAYS || capacity > CACHE_MAX_CAPACITY) {
        sl_fail(errstr, errstr_size, SL_ERR_INVALID, "token cache capacity %zu not in %d..%zu",
                capacity, CACHE_WAYS, CACHE_MAX_CAPACITY);
        return NULL;
    }
    size_t sets = 1;
    while (sets * 2 * CACHE_WAYS <= capacity)
        sets *= 2;
    sl_jwt_cache *cache = calloc(1, sizeof(*cache));
    cache_entry *entries = calloc(sets * CACHE_WAYS, sizeof(*entries));
    if (!cache || !entries) {
        free(cache);
        free(entries);
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "token cache: out of memory");
        return NULL;
    }
    cache->entries = entries;
    cache->capacity = sets * CACHE_WAYS;
    cache->n_shards = sets < CACHE_MAX_SHARDS ? sets : CACHE_MAX_SHARDS;
    cache->sets_per_shard = sets / cache->n_shards;
    for (size_t i = 0; i < cache->n_shards; i++) {
        pthread_mutex_init(&cache->shard[i].lock, NULL);
        cache->shard[i].entries = entries + i * cache->sets_per_shard * CACHE_WAYS;
    }
    return cache;
}

void sl_jwt_cache_destroy(sl_jwt_cache *cache) {
    if (!cache)
        return;
    for (size_t i = 0; i < cache->n_shards; i++)
        pthread_mutex_destroy(&cache->shard[i].lock);
    free(cache->entries);
    free(cache);
}

size_t sl_jwt_cache_capacity(const sl_jwt_cache *cache) {
    return cache->capacity;
}

size_t sl_jwt_cache_count(sl_jwt_cache *cache) {
    size_t total = 0;
    for (size_t i = 0; i < cache->n_shards; i++) {
        pthread_mutex_lock(&cache->shard[i].lock);
        total += cache->shard[i].count;
        pthread_mutex_unlock(&cache->shard[i].lock);
    }
    return total;
}

void sl_jwt_cache_stats(sl_jwt_cache *cache, uint64_t *hits, uint64_t *misses) {
    uint64_t h = 0, m = 0;
    for (size_t i = 0; i < cache->n_shards; i++) {
        pthread_mutex_lock(&cache->shard[i].lock);
        h += cache->shard[i].hits;
        m += cache->shard[i].misses;
        pthread_mutex_unlock(&cache->shard[i].lock);
    }
    if (hits)
        *hits = h;
    if (misses)
        *misses = m;
}

void sl_jwt_cache_clear(sl_jwt_cache *cache) {
    for (size_t i = 0; i < cache->n_shards; i++) {
        cache_shard *shard = &cache->shard[i];
        pthread_mutex_lock(&shard->lock);
        memset(shard->entries, 0, cache->sets_per_shard * CACHE_WAYS * sizeof(cache_entry));
        shard->count = 0;
        pthread_mutex_unlock(&shard->lock);
    }
}

static uint64_t load64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* The shard and the set (CACHE_WAYS entries) for a hash. SHA-256 output is
 * uniform, so its bytes are the index directly. */
static cache_shard *cache_locate(sl_jwt_cache *cache, const unsigned char *hash,
                                 cache_entry **set) {
    cache_shard *shard = &cache->shard[load64(hash) & (cache->n_shards - 1)];
    *set = shard->entries + (load64(hash + 8) & (cache->sets_per_shard - 1)) * CACHE_WAYS;
    return shard;
}

static cache_entry *set_find(cache_entry *set, const unsigned char *hash) {
    for (int w = 0; w < CACHE_WAYS; w++)
        if (set[w].last_used && memcmp(set[w].hash, hash, HASH_LEN) == 0)
            return &set[w];
    return NULL;
}

/* Caller holds the shard lock. Same token: overwrite; else an empty way,
 * else one already expired, else the least recently used. */
static void cache_insert(cache_shard *shard, cache_entry *set, const unsigned char *hash,
                         const sl_jwt_claims *claims, int64_t expired_before) {
    cache_entry *victim = set_find(set, hash);
    for (int w = 0; !victim && w < CACHE_WAYS; w++)
        if (!set[w].last_used)
            victim = &set[w];
    for (int w = 0; !victim && w < CACHE_WAYS; w++)
        if (set[w].claims.exp <= expired_before)
            victim = &set[w];
    if (!victim) {
        victim = &set[0];
        for (int w = 1; w < CACHE_WAYS; w++)
            if (set[w].last_used < victim->last_used)
                victim = &set[w];
    }
    if (!victim->last_used)
        shard->count++;
    victim->last_used = ++shard->tick;
    memcpy(victim->hash, hash, HASH_LEN);
    victim->claims = *claims;
}

sl_jwt_error sl_jwt_verify_cached(const sl_jwt_keys *keys, sl_jwt_cache *cache, const char *token,
                                  size_t len, const sl_jwt_expect *expect, sl_jwt_claims *out,
                                  char *errstr, size_t errstr_size) {
    if (!cache)
        return sl_jwt_verify(keys, token, len, expect, out, errstr, errstr_size);
    if (out)
        memset(out, 0, sizeof(*out));
    sl_jwt_error verdict = sl_jwt_check_args(keys, token, len, expect, errstr, errstr_size);
    if (verdict)
        return verdict;
    unsigned char hash[EVP_MAX_MD_SIZE];
    if (EVP_Digest(token, len, hash, NULL, keys->sha256, NULL) != 1) {
        ERR_clear_error();
        return sl_jwt_reject(errstr, errstr_size, SL_JWT_ERR_INTERNAL, "cannot hash the token");
    }

    cache_entry *set;
    cache_shard *shard = cache_locate(cache, hash, &set);
    pthread_mutex_lock(&shard->lock);
    cache_entry *hit = set_find(set, hash);
    /* An entry answers only for the same key set and expectation it was
     * verified under; otherwise verify afresh (a token with several
     * audiences may be valid for another one). */
    if (hit && sl_jwt_find_key(keys, hit->claims.kid) &&
        strcmp(hit->claims.iss, expect->iss) == 0 && strcmp(hit->claims.aud, expect->aud) == 0) {
        shard->hits++;
        hit->last_used = ++shard->tick;
        verdict = sl_jwt_check_live(&hit->claims, expect, errstr, errstr_size);
        if (verdict == SL_JWT_OK && out)
            *out = hit->claims;
        if (verdict == SL_JWT_ERR_EXPIRED) { /* it will never be valid again */
            memset(hit, 0, sizeof(*hit));
            shard->count--;
        }
        pthread_mutex_unlock(&shard->lock);
        return verdict;
    }
    shard->misses++;
    pthread_mutex_unlock(&shard->lock);

    /* Verified outside the lock: a signature check is far longer than a
     * lookup. Two threads may verify the same new token at once; both insert
     * the same claims, which is harmless. */
    sl_jwt_claims claims;
    memset(&claims, 0, sizeof(claims));
    verdict = sl_jwt_verify_full(keys, token, len, expect, &claims, errstr, errstr_size);
    if (verdict != SL_JWT_OK)
        return verdict;
    pthread_mutex_lock(&shard->lock);
    cache_insert(shard, set, hash, &claims, expect->now - expect->leeway_s);
    pthread_mutex_unlock(&shard->lock);
    if (out)
        *out = claims;
    return SL_JWT_OK;
}
