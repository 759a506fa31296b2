/*
 * store.h: key-value state stores on RocksDB.
 *
 * One RocksDB instance per store per task, under
 * <state.dir>/<application.id>/<task>/<store>. All stores of an instance share
 * one sl_store_env: one LRU block cache for data, index and filter blocks, so
 * the instance's read memory is bounded by one number however many tasks it
 * owns. Memtables are bounded per store, not per instance: RocksDB 7.8's C
 * API has no write-buffer manager to share or charge to the cache (see
 * sl_store_env_new and the note at the top of store.c).
 *
 * Keys and values are byte strings. Iteration is in bytewise key order.
 * Writes normally go through a batch (sl_store_batch) so that the engine can
 * apply a committed transaction's changes atomically; restore applies large
 * batches with the WAL disabled and calls sl_store_flush before it writes a
 * checkpoint.
 *
 * Threading: a store may be read from several threads (RocksDB is
 * thread-safe for reads and writes); batches and iterators belong to one
 * thread at a time.
 */
#ifndef SLUICE_STORE_H
#define SLUICE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/base/error.h"
/* The checkpoint API moved to its own header; included here so that code
 * that reached it through store.h still compiles. */
#include "state/checkpoint.h"

typedef struct sl_store_env sl_store_env;
typedef struct sl_store sl_store;
typedef struct sl_store_batch sl_store_batch;
typedef struct sl_store_iter sl_store_iter;

/* Shared resources for all stores of one instance: a block cache of
 * `block_cache_bytes`. `write_buffer_bytes` bounds the memtables of EACH
 * store opened with the env (two memtables of half that size), so the
 * instance's memtables total at most (open stores) x write_buffer_bytes; it
 * must be at least 128 KiB. Memtables are not charged to the cache (RocksDB
 * 7.8's C API lacks a write-buffer manager). Caller owns the env (destroy
 * with sl_store_env_destroy). NULL + errstr on failure. Must outlive every
 * store opened with it. */
sl_store_env *sl_store_env_new(size_t block_cache_bytes, size_t write_buffer_bytes, char *errstr,
                               size_t errstr_size);
void sl_store_env_destroy(sl_store_env *env);

/* Bytes currently held by the shared block cache: data, index and filter
 * blocks of every store. Memtables are not included (see sl_store_env_new).
 * Any thread. */
size_t sl_store_env_memory_usage(const sl_store_env *env);

/* Open (creating it and missing parent directories if needed) the store at
 * `path`. `env` is borrowed; `path` is copied. Caller owns the store (close
 * with sl_store_close). NULL + errstr on failure (for example the directory
 * is locked by another process, or by another open of it in this one: the
 * errstr then names the LOCK file). */
sl_store *sl_store_open(sl_store_env *env, const char *path, char *errstr, size_t errstr_size);

/* Close the store. Do not count on close for the durability of WAL-disabled
 * writes (RocksDB flushes them on a clean close, but a crash before or during
 * close loses them): call sl_store_flush first. Every iterator of the store
 * must be destroyed before. NULL is fine. */
void sl_store_close(sl_store *store);

/* Delete all files of the store at `path` and then the directory (it must
 * not be open: SL_ERR_STORE if it is). Missing is fine. Files RocksDB does
 * not know are left, with their directory. Used to wipe a task's state after
 * an unclean close under EOS. */
sl_err sl_store_destroy_files(const char *path, char *errstr, size_t errstr_size);

/* Look a key up. On SL_OK *value is a malloc'd copy the caller frees, with
 * *value_len bytes; SL_ERR_NOT_FOUND if absent; SL_ERR_STORE + errstr on a
 * RocksDB error. */
sl_err sl_store_get(sl_store *store, const void *key, size_t key_len, char **value,
                    size_t *value_len, char *errstr, size_t errstr_size);

/* A batch of puts and deletes, applied atomically. Copies keys and values.
 * Bounded only by memory; the engine bounds it by commit interval.
 * sl_store_batch_new returns NULL when out of memory; the caller owns the
 * batch (sl_store_batch_destroy, NULL is fine). */
sl_store_batch *sl_store_batch_new(void);
void sl_store_batch_put(sl_store_batch *batch, const void *key, size_t key_len, const void *value,
                        size_t value_len);
void sl_store_batch_delete(sl_store_batch *batch, const void *key, size_t key_len);
size_t sl_store_batch_count(const sl_store_batch *batch);
void sl_store_batch_clear(sl_store_batch *batch);
void sl_store_batch_destroy(sl_store_batch *batch);

/* Apply a batch atomically. disable_wal = true for restore (the changelog is
 * the log; call sl_store_flush before writing the checkpoint). The batch is
 * not cleared. */
sl_err sl_store_apply(sl_store *store, sl_store_batch *batch, bool disable_wal, char *errstr,
                      size_t errstr_size);

/* Flush memtables to SST files (durable without the WAL). */
sl_err sl_store_flush(sl_store *store, char *errstr, size_t errstr_size);
/* Schedule that flush on RocksDB's background threads and return at once:
 * nothing is durable yet when it returns (use sl_store_flush before a
 * checkpoint). Frees memtables without blocking the caller. */
sl_err sl_store_flush_start(sl_store *store, char *errstr, size_t errstr_size);

/* Iterate keys in [from, to) in bytewise order; a NULL bound is open. The
 * iterator sees a consistent snapshot taken at creation. The bounds are
 * copied. The caller owns the iterator (sl_store_iter_destroy, before the
 * store is closed). NULL when out of memory. */
sl_store_iter *sl_store_iter_range(sl_store *store, const void *from, size_t from_len,
                                   const void *to, size_t to_len);
/* Iterate keys starting with `prefix` (prefix_len may be 0: everything).
 * Same ownership as sl_store_iter_range. */
sl_store_iter *sl_store_iter_prefix(sl_store *store, const void *prefix, size_t prefix_len);
/* Advance to the next entry; false at the end or on error (see
 * sl_store_iter_error). The pointers are borrowed and valid until the next
 * call to sl_store_iter_next or sl_store_iter_destroy. The first call returns
 * the first entry. */
bool sl_store_iter_next(sl_store_iter *iter, const void **key, size_t *key_len, const void **value,
                        size_t *value_len);
sl_err sl_store_iter_error(const sl_store_iter *iter, char *errstr, size_t errstr_size);
void sl_store_iter_destroy(sl_store_iter *iter);

/* RocksDB's estimates for metrics: number of keys, and bytes on disk
 * (live SST files; 0 before the first flush). 0 if RocksDB cannot say. */
uint64_t sl_store_estimate_keys(sl_store *store);
uint64_t sl_store_disk_bytes(sl_store *store);

/*
 * Pending writes: the uncommitted changes of a task's open transaction,
 * readable (get, ordered iteration) merged over the store, and written to
 * RocksDB in one atomic batch only after the transaction commits. A record
 * cache: a hash map from key to the latest value or tombstone, so a later
 * put or delete of a key replaces the earlier one and the apply writes one
 * entry per key. Unbounded by itself: the caller reads
 * sl_store_pending_bytes and commits early when it passes its bound (the
 * engine's store.pending.max.bytes). One thread at a time. Implemented in
 * state/pending.c; the API stays here because reads, iteration and the apply
 * go through the store handle.
 */
typedef struct sl_store_pending sl_store_pending;

/* NULL when out of memory. Caller owns it (sl_store_pending_destroy, NULL is
 * fine). */
sl_store_pending *sl_store_pending_new(void);
void sl_store_pending_destroy(sl_store_pending *pending);
/* Record a put or a delete of `key` (key and value are copied), replacing
 * any earlier pending write of the key. SL_ERR_NOMEM: nothing changed. */
sl_err sl_store_pending_put(sl_store_pending *pending, const void *key, size_t key_len,
                            const void *value, size_t value_len);
sl_err sl_store_pending_delete(sl_store_pending *pending, const void *key, size_t key_len);
/* Distinct keys with a pending write (puts and deletes). */
size_t sl_store_pending_count(const sl_store_pending *pending);
/* Approximate memory held for the pending writes: keys, values and the
 * map's per-entry overhead. 0 after a clear or an apply. */
size_t sl_store_pending_bytes(const sl_store_pending *pending);
void sl_store_pending_clear(sl_store_pending *pending);

/* Like sl_store_get, but the pending writes win over the store (a pending
 * delete answers SL_ERR_NOT_FOUND). No errstr is written for a miss. */
sl_err sl_store_pending_get(sl_store *store, sl_store_pending *pending, const void *key,
                            size_t key_len, char **value, size_t *value_len, char *errstr,
                            size_t errstr_size);

/* Like sl_store_iter_range, over the store merged with the pending writes
 * (pending entries of the range are sorted when the iterator is made).
 * `pending` must not change while the iterator lives: the iterator borrows
 * its entries. */
sl_store_iter *sl_store_pending_iter_range(sl_store *store, sl_store_pending *pending,
                                           const void *from, size_t from_len, const void *to,
                                           size_t to_len);

/* Write the pending changes to RocksDB atomically, one entry per key, then
 * clear them. disable_wal: the caller guarantees that a crash before the
 * next sl_store_flush is recovered from the changelog (the engine under
 * exactly-once: a crash leaves no checkpoint, so the store is wiped and
 * restored). On error nothing was written and the pending writes are kept. */
sl_err sl_store_pending_apply(sl_store *store, sl_store_pending *pending, bool disable_wal,
                              char *errstr, size_t errstr_size);

#endif
