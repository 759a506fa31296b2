/*
 * emit_cache.h: the record cache of coalescing emits (Kafka Streams'
 * "caching" for downstream records, in its smallest form).
 *
 * A processor that emits an update whose newer version replaces the older
 * one completely (an absolute value, not a delta: "user U's entry for
 * dialog D is now X") can hand it to the cache under a cache key; a later
 * update with the same (sink, cache key) replaces it in memory. The engine
 * flushes the cache (produces every entry once, in the order their cache
 * keys were first put) just before each commit, inside the open
 * transaction, and drops it when the transaction aborts. So downstream sees
 * at most one record per (sink, cache key) per commit interval, and under
 * exactly-once exactly the records of committed transactions.
 *
 * Memory is bounded by max_bytes (keys, values and a fixed per-entry
 * overhead); a put that does not fit answers SL_ERR_FULL, and the engine
 * then flushes early (still inside the transaction) and puts again.
 *
 * Not thread-safe: the engine's loop thread only.
 */
#ifndef SLUICE_EMIT_CACHE_H
#define SLUICE_EMIT_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "processor/base/error.h"

typedef struct sl_emit_cache sl_emit_cache;

/* Bytes charged per entry besides its key, cache key and value. */
#define SL_EMIT_CACHE_ENTRY_OVERHEAD 64

/* An empty cache holding at most max_bytes (>= 1024). NULL without memory. */
sl_emit_cache *sl_emit_cache_new(size_t max_bytes);
void sl_emit_cache_destroy(sl_emit_cache *cache);

/* Keep (copies of) the record key/value for sink `sink` under cache_key,
 * replacing an entry with the same (sink, cache_key): then *coalesced is
 * true. value may be NULL (a tombstone). SL_ERR_FULL: does not fit next to
 * what is cached (flush, then put again); SL_ERR_INVALID: larger than the
 * whole cache (emit it directly); SL_ERR_NOMEM. */
sl_err sl_emit_cache_put(sl_emit_cache *cache, int sink, const void *cache_key,
                         size_t cache_key_len, const void *key, size_t key_len, const void *value,
                         size_t value_len, bool *coalesced);

/* Called once per entry by sl_emit_cache_flush; pointers valid during the
 * call only. A non-OK return stops the flush and is returned. During the
 * call the thread's current trace (sl_trace_current) is the one it had at
 * the entry's last put, so the record carries the trace of its last update. */
typedef sl_err sl_emit_cache_emit_fn(void *opaque, int sink, const void *key, size_t key_len,
                                     const void *value, size_t value_len);

/* Emit every entry in first-put order, then empty the cache (also when
 * `emit` failed: the caller aborts the transaction then). */
sl_err sl_emit_cache_flush(sl_emit_cache *cache, sl_emit_cache_emit_fn *emit, void *opaque);

/* Drop everything (the transaction was aborted). */
void sl_emit_cache_clear(sl_emit_cache *cache);

size_t sl_emit_cache_entries(const sl_emit_cache *cache);
size_t sl_emit_cache_bytes(const sl_emit_cache *cache);

#endif
