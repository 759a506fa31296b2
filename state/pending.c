/*
 * pending.c: the pending writes of a task's open transaction (a record
 * cache), readable merged over the store and applied to RocksDB in one
 * atomic batch at commit. The API is in state/store.h (sl_store_pending_*):
 * reads and the apply go through the store handle. The bodies of the store
 * and its iterator are shared with store.c through state/store_int.h.
 */
#include "state/store.h"
#include "state/store_int.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

/* ---------------------------------------------------------------- pending writes
 *
 * A record cache in the manner of Kafka Streams': an open-addressing hash
 * map (linear probing, power-of-two capacity, at most 5/8 full) from key to
 * the latest value or tombstone written in the open transaction. One entry
 * per key whatever the number of writes, so reads are one hash probe and the
 * apply at commit writes each key once. Entries are never removed singly
 * (a delete is a tombstone entry), only all at once by clear, so probing
 * needs no deleted-slot markers. Ordered iteration sorts the entries of the
 * requested range on demand and merges them with a RocksDB iterator.
 *
 * Memory: `bytes` counts each entry's key, value and slot; the caller reads
 * it (sl_store_pending_bytes) and commits early past its bound.
 */

struct sl_store_pending {
    pending_entry *slots;
    size_t capacity; /* 0 or a power of two */
    size_t count;    /* used slots = distinct keys */
    size_t bytes;
};

#define PENDING_MIN_CAPACITY 64
/* Past this many slots, a clear that finds the map mostly empty shrinks it,
 * so one large transaction does not make every later clear walk a big table. */
#define PENDING_SHRINK_CAPACITY 4096

/* FNV-1a with a final avalanche (from SplitMix64): keys are short, and the
 * mix spreads FNV's weak low bits over the mask. */
static uint64_t pending_hash(const void *key, size_t key_len) {
    const unsigned char *bytes = key;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < key_len; i++) {
        h ^= bytes[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

/* An entry's share of memory: its bytes, the allocator's header, and the
 * ~2 slots per entry of a table kept at most 5/8 full. */
static size_t entry_bytes(size_t key_len, size_t value_len) {
    return key_len + value_len + 16 + 2 * sizeof(pending_entry);
}

/* The slot holding `key`, or the empty slot where it would go. The map must
 * have a free slot (capacity > count). */
static pending_entry *pending_find(const sl_store_pending *pending, const void *key, size_t key_len,
                                   uint64_t hash) {
    size_t mask = pending->capacity - 1;
    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        pending_entry *e = &pending->slots[i];
        if (!e->data ||
            (e->hash == hash && e->key_len == key_len && memcmp(e->data, key, key_len) == 0))
            return e;
    }
}

static bool pending_resize(sl_store_pending *pending, size_t capacity) {
    pending_entry *slots = calloc(capacity, sizeof(*slots));
    if (!slots)
        return false;
    pending_entry *old = pending->slots;
    size_t old_capacity = pending->capacity;
    pending->slots = slots;
    pending->capacity = capacity;
    for (size_t i = 0; i < old_capacity; i++) {
        if (!old[i].data)
            continue;
        size_t mask = capacity - 1;
        size_t j = (size_t)old[i].hash & mask;
        while (slots[j].data)
            j = (j + 1) & mask;
        slots[j] = old[i];
    }
    free(old);
    return true;
}

sl_store_pending *sl_store_pending_new(void) {
    sl_store_pending *pending = calloc(1, sizeof(*pending));
    if (!pending)
        return NULL;
    if (!pending_resize(pending, PENDING_MIN_CAPACITY)) {
        free(pending);
        return NULL;
    }
    return pending;
}

void sl_store_pending_destroy(sl_store_pending *pending) {
    if (!pending)
        return;
    for (size_t i = 0; i < pending->capacity; i++)
        free(pending->slots[i].data);
    free(pending->slots);
    free(pending);
}

static sl_err pending_write(sl_store_pending *pending, const void *key, size_t key_len,
                            const void *value, size_t value_len, bool tombstone) {
    /* Grow before the map passes 5/8 full: probes stay short. */
    if ((pending->count + 1) * 8 > pending->capacity * 5 &&
        !pending_resize(pending, pending->capacity * 2))
        return SL_ERR_NOMEM;
    uint64_t hash = pending_hash(key, key_len);
    pending_entry *e = pending_find(pending, key, key_len, hash);
    size_t size = key_len + value_len;
    char *data = malloc(size ? size : 1);
    if (!data)
        return SL_ERR_NOMEM;
    memcpy(data, key, key_len);
    if (value_len)
        memcpy(data + key_len, value, value_len);
    if (e->data) {
        pending->bytes -= entry_bytes(e->key_len, e->value_len);
        free(e->data);
    } else {
        pending->count++;
    }
    *e = (pending_entry){.data = data,
                         .key_len = key_len,
                         .value_len = value_len,
                         .hash = hash,
                         .tombstone = tombstone};
    pending->bytes += entry_bytes(key_len, value_len);
    return SL_OK;
}

sl_err sl_store_pending_put(sl_store_pending *pending, const void *key, size_t key_len,
                            const void *value, size_t value_len) {
    return pending_write(pending, key, key_len, value, value_len, false);
}

sl_err sl_store_pending_delete(sl_store_pending *pending, const void *key, size_t key_len) {
    return pending_write(pending, key, key_len, NULL, 0, true);
}

size_t sl_store_pending_count(const sl_store_pending *pending) {
    return pending->count;
}

size_t sl_store_pending_bytes(const sl_store_pending *pending) {
    return pending->bytes;
}

void sl_store_pending_clear(sl_store_pending *pending) {
    if (pending->count == 0)
        return;
    size_t used = pending->count;
    for (size_t i = 0; i < pending->capacity; i++)
        if (pending->slots[i].data) {
            free(pending->slots[i].data);
            pending->slots[i].data = NULL;
        }
    pending->count = 0;
    pending->bytes = 0;
    if (pending->capacity > PENDING_SHRINK_CAPACITY && used * 8 < pending->capacity) {
        /* If the smaller table cannot be had, the big one (now empty) stays. */
        pending_entry *slots = calloc(PENDING_MIN_CAPACITY, sizeof(*slots));
        if (slots) {
            free(pending->slots);
            pending->slots = slots;
            pending->capacity = PENDING_MIN_CAPACITY;
        }
    }
}

sl_err sl_store_pending_get(sl_store *store, sl_store_pending *pending, const void *key,
                            size_t key_len, char **value, size_t *value_len, char *errstr,
                            size_t errstr_size) {
    if (pending->count > 0) {
        const pending_entry *e = pending_find(pending, key, key_len, pending_hash(key, key_len));
        if (e->data) {
            *value = NULL;
            *value_len = 0;
            if (e->tombstone)
                return SL_ERR_NOT_FOUND;
            char *copy = malloc(e->value_len ? e->value_len : 1);
            if (!copy)
                return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
            memcpy(copy, e->data + e->key_len, e->value_len);
            *value = copy;
            *value_len = e->value_len;
            return SL_OK;
        }
    }
    return sl_store_get_quiet(store, key, key_len, value, value_len, errstr, errstr_size);
}

static int entry_compare(const void *a, const void *b) {
    const pending_entry *x = *(const pending_entry *const *)a;
    const pending_entry *y = *(const pending_entry *const *)b;
    return sl_store_key_compare(x->data, x->key_len, y->data, y->key_len);
}

/* A used slot whose key is in [from, to) (a NULL bound is open). */
static bool in_range(const pending_entry *e, const void *from, size_t from_len, const void *to,
                     size_t to_len) {
    if (!e->data)
        return false;
    if (from && sl_store_key_compare(e->data, e->key_len, from, from_len) < 0)
        return false;
    return !to || sl_store_key_compare(e->data, e->key_len, to, to_len) < 0;
}

sl_store_iter *sl_store_pending_iter_range(sl_store *store, sl_store_pending *pending,
                                           const void *from, size_t from_len, const void *to,
                                           size_t to_len) {
    sl_store_iter *iter = sl_store_iter_range(store, from, from_len, to, to_len);
    if (!iter || pending->count == 0)
        return iter;
    /* The pending entries of [from, to), sorted; borrowed pointers into the
     * map, which must not change while the iterator lives. */
    size_t n = 0;
    for (size_t i = 0; i < pending->capacity; i++)
        if (in_range(&pending->slots[i], from, from_len, to, to_len))
            n++;
    if (n == 0)
        return iter;
    iter->merged = malloc(n * sizeof(*iter->merged));
    if (!iter->merged) {
        sl_store_iter_destroy(iter);
        return NULL;
    }
    for (size_t i = 0; i < pending->capacity; i++)
        if (in_range(&pending->slots[i], from, from_len, to, to_len))
            iter->merged[iter->n_merged++] = &pending->slots[i];
    qsort(iter->merged, iter->n_merged, sizeof(*iter->merged), entry_compare);
    return iter;
}

sl_err sl_store_pending_apply(sl_store *store, sl_store_pending *pending, bool disable_wal,
                              char *errstr, size_t errstr_size) {
    if (pending->count == 0)
        return SL_OK;
    /* In key order: RocksDB's skip-list memtable inserts an ascending run
     * cheaply (it reuses the position of the previous insert), while the
     * map's order is random. */
    const pending_entry **sorted = malloc(pending->count * sizeof(*sorted));
    if (!sorted)
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory sorting %zu writes",
                       pending->count);
    size_t n = 0;
    for (size_t i = 0; i < pending->capacity; i++)
        if (pending->slots[i].data)
            sorted[n++] = &pending->slots[i];
    qsort(sorted, n, sizeof(*sorted), entry_compare);
    rocksdb_writebatch_t *batch = rocksdb_writebatch_create();
    for (size_t i = 0; i < n; i++) {
        const pending_entry *e = sorted[i];
        if (e->tombstone)
            rocksdb_writebatch_delete(batch, e->data, e->key_len);
        else
            rocksdb_writebatch_put(batch, e->data, e->key_len, e->data + e->key_len, e->value_len);
    }
    free(sorted);
    char *rocks_err = NULL;
    rocksdb_write(store->db, disable_wal ? store->write_options_no_wal : store->write_options_wal,
                  batch, &rocks_err);
    rocksdb_writebatch_destroy(batch);
    if (rocks_err)
        return sl_store_rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "write",
                                   store->path);
    sl_store_pending_clear(pending);
    return SL_OK;
}
