/*
 * emit_cache.c: the record cache of coalescing emits (see emit_cache.h).
 *
 * A chained hash table over (sink, cache key) for replacement, plus an
 * array of the entries in first-put order for the flush. The bucket array
 * doubles when the entries outnumber it; everything is freed by a flush or
 * a clear, so between commits the cache only grows up to max_bytes.
 */
#include "processor/engine/emit_cache.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/base/trace.h"

typedef struct entry {
    struct entry *next; /* in its bucket */
    uint64_t hash;
    int sink;
    size_t cache_key_len, key_len, value_len;
    bool tombstone;
    unsigned char *data; /* cache key | key | value */
    /* the thread's trace at the last put, current again during its emit */
    char trace[SL_TRACEPARENT_LEN + 1];
} entry;

struct sl_emit_cache {
    size_t max_bytes, bytes;
    entry **buckets;
    size_t n_buckets; /* a power of two */
    entry **order;
    size_t n_entries, order_cap;
};

static uint64_t hash_of(int sink, const void *key, size_t len) {
    /* FNV-1a 64 over the sink index and the cache key. */
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)(unsigned)sink;
    h *= 1099511628211ULL;
    const unsigned char *p = key;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static size_t charge(size_t cache_key_len, size_t key_len, size_t value_len) {
    return SL_EMIT_CACHE_ENTRY_OVERHEAD + cache_key_len + key_len + value_len;
}

sl_emit_cache *sl_emit_cache_new(size_t max_bytes) {
    if (max_bytes < 1024)
        return NULL;
    sl_emit_cache *cache = calloc(1, sizeof(*cache));
    if (!cache)
        return NULL;
    cache->max_bytes = max_bytes;
    cache->n_buckets = 256;
    cache->buckets = calloc(cache->n_buckets, sizeof(*cache->buckets));
    if (!cache->buckets) {
        free(cache);
        return NULL;
    }
    return cache;
}

void sl_emit_cache_clear(sl_emit_cache *cache) {
    for (size_t i = 0; i < cache->n_entries; i++) {
        free(cache->order[i]->data);
        free(cache->order[i]);
    }
    cache->n_entries = 0;
    cache->bytes = 0;
    memset(cache->buckets, 0, cache->n_buckets * sizeof(*cache->buckets));
}

void sl_emit_cache_destroy(sl_emit_cache *cache) {
    if (!cache)
        return;
    sl_emit_cache_clear(cache);
    free(cache->buckets);
    free(cache->order);
    free(cache);
}

static sl_err grow(sl_emit_cache *cache) {
    if (cache->n_entries == cache->order_cap) {
        size_t cap = cache->order_cap ? cache->order_cap * 2 : 256;
        entry **order = realloc(cache->order, cap * sizeof(*order));
        if (!order)
            return SL_ERR_NOMEM;
        cache->order = order;
        cache->order_cap = cap;
    }
    if (cache->n_entries < cache->n_buckets)
        return SL_OK;
    size_t n = cache->n_buckets * 2;
    entry **buckets = calloc(n, sizeof(*buckets));
    if (!buckets)
        return SL_OK; /* longer chains, still correct */
    for (size_t i = 0; i < cache->n_entries; i++) {
        entry *e = cache->order[i];
        size_t b = (size_t)(e->hash & (n - 1));
        e->next = buckets[b];
        buckets[b] = e;
    }
    free(cache->buckets);
    cache->buckets = buckets;
    cache->n_buckets = n;
    return SL_OK;
}

static unsigned char *copy_data(const void *cache_key, size_t cache_key_len, const void *key,
                                size_t key_len, const void *value, size_t value_len) {
    unsigned char *data = malloc(cache_key_len + key_len + value_len + 1);
    if (!data)
        return NULL;
    if (cache_key_len)
        memcpy(data, cache_key, cache_key_len);
    if (key_len)
        memcpy(data + cache_key_len, key, key_len);
    if (value_len)
        memcpy(data + cache_key_len + key_len, value, value_len);
    return data;
}

sl_err sl_emit_cache_put(sl_emit_cache *cache, int sink, const void *cache_key,
                         size_t cache_key_len, const void *key, size_t key_len, const void *value,
                         size_t value_len, bool *coalesced) {
    *coalesced = false;
    size_t need = charge(cache_key_len, key_len, value ? value_len : 0);
    if (need > cache->max_bytes)
        return SL_ERR_INVALID;
    uint64_t h = hash_of(sink, cache_key, cache_key_len);
    entry **slot = &cache->buckets[h & (cache->n_buckets - 1)];
    entry *found = NULL;
    for (entry *e = *slot; e; e = e->next)
        if (e->hash == h && e->sink == sink && e->cache_key_len == cache_key_len &&
            memcmp(e->data, cache_key, cache_key_len) == 0) {
            found = e;
            break;
        }
    size_t old = found ? charge(found->cache_key_len, found->key_len, found->value_len) : 0;
    if (cache->bytes - old + need > cache->max_bytes)
        return SL_ERR_FULL;
    unsigned char *data =
        copy_data(cache_key, cache_key_len, key, key_len, value, value ? value_len : 0);
    if (!data)
        return SL_ERR_NOMEM;
    const char *trace = sl_trace_current();
    if (found) {
        snprintf(found->trace, sizeof(found->trace), "%s", trace ? trace : "");
        free(found->data);
        found->data = data;
        found->key_len = key_len;
        found->value_len = value ? value_len : 0;
        found->tombstone = value == NULL;
        cache->bytes = cache->bytes - old + need;
        *coalesced = true;
        return SL_OK;
    }
    entry *e = calloc(1, sizeof(*e));
    if (!e || grow(cache)) {
        free(e);
        free(data);
        return SL_ERR_NOMEM;
    }
    e->hash = h;
    e->sink = sink;
    e->cache_key_len = cache_key_len;
    e->key_len = key_len;
    e->value_len = value ? value_len : 0;
    e->tombstone = value == NULL;
    e->data = data;
    snprintf(e->trace, sizeof(e->trace), "%s", trace ? trace : "");
    slot = &cache->buckets[h & (cache->n_buckets - 1)]; /* grow may have rehashed */
    e->next = *slot;
    *slot = e;
    cache->order[cache->n_entries++] = e;
    cache->bytes += need;
    return SL_OK;
}

sl_err sl_emit_cache_flush(sl_emit_cache *cache, sl_emit_cache_emit_fn *emit, void *opaque) {
    sl_err err = SL_OK;
    char saved[SL_TRACEPARENT_LEN + 1];
    const char *outer = sl_trace_current();
    snprintf(saved, sizeof(saved), "%s", outer ? outer : "");
    for (size_t i = 0; i < cache->n_entries && !err; i++) {
        const entry *e = cache->order[i];
        const unsigned char *key = e->data + e->cache_key_len;
        sl_trace_set_current(e->trace);
        err = emit(opaque, e->sink, key, e->key_len, e->tombstone ? NULL : key + e->key_len,
                   e->value_len);
    }
    sl_trace_set_current(saved);
    sl_emit_cache_clear(cache);
    return err;
}

size_t sl_emit_cache_entries(const sl_emit_cache *cache) {
    return cache->n_entries;
}

size_t sl_emit_cache_bytes(const sl_emit_cache *cache) {
    return cache->bytes;
}
