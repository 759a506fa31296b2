/*
 * store.c: key-value state stores on RocksDB (C API, librocksdb 7.8): env,
 * open and close, gets, batches, flushes and iterators (which also merge in
 * the pending writes of state/pending.c). Checkpoint files are in
 * state/checkpoint.c.
 *
 * Memory. The env owns one LRU block cache that every store's block-based
 * tables use, for data blocks and (cache_index_and_filter_blocks) index and
 * filter blocks, so reads of all stores are bounded by block_cache_bytes.
 * RocksDB 7.8's C API has no WriteBufferManager (rocksdb_write_buffer_manager_*
 * arrived in a later release), so memtables cannot be charged to that cache
 * nor shared between stores. Instead each store gets
 *   write_buffer_size       = write_buffer_bytes / 2
 *   max_write_buffer_number = 2
 *   db_write_buffer_size    = write_buffer_bytes
 * which bounds the memtables of one store (active + immutable) by about
 * write_buffer_bytes: a write stalls until a flush frees a memtable. The
 * instance total is therefore (open stores) x write_buffer_bytes, and
 * sl_store_env_memory_usage does not include memtables.
 *
 * Iterators own a snapshot and copies of their bounds: RocksDB keeps only a
 * pointer to the upper-bound bytes, which must live as long as the iterator.
 */
#include "state/store.h"
#include "state/store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rocksdb/c.h>

/* Below this RocksDB silently raises write_buffer_size to 64 KiB, which
 * would break the documented bound. */
#define MIN_WRITE_BUFFER_BYTES (128 * 1024)
#define BLOOM_BITS_PER_KEY     10.0
#define BACKGROUND_THREADS     2
#define INFO_LOG_MAX_BYTES     (1024 * 1024)
#define INFO_LOG_FILES_KEPT    2

struct sl_store_env {
    rocksdb_cache_t *block_cache; /* owned; shared by every store's tables */
    size_t write_buffer_bytes;    /* memtable bound per store (see top) */
};

struct sl_store_batch {
    rocksdb_writebatch_t *batch;
};

/* Copy RocksDB's malloc'd error into errstr, free it, return `code`. */
sl_err sl_store_rocks_fail(char *errstr, size_t errstr_size, sl_err code, char *rocks_err,
                           const char *what, const char *path) {
    sl_fail(errstr, errstr_size, code, "%s %s: %s", what, path,
            rocks_err ? rocks_err : "unknown RocksDB error");
    rocksdb_free(rocks_err);
    return code;
}

/* ---------------------------------------------------------------- env */

sl_store_env *sl_store_env_new(size_t block_cache_bytes, size_t write_buffer_bytes, char *errstr,
                               size_t errstr_size) {
    if (write_buffer_bytes < MIN_WRITE_BUFFER_BYTES) {
        sl_fail(errstr, errstr_size, SL_ERR_INVALID, "write buffer of %zu bytes is below %d",
                write_buffer_bytes, MIN_WRITE_BUFFER_BYTES);
        return NULL;
    }
    sl_store_env *env = calloc(1, sizeof(*env));
    if (!env) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    env->block_cache = rocksdb_cache_create_lru(block_cache_bytes);
    if (!env->block_cache) {
        free(env);
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "cannot create the block cache");
        return NULL;
    }
    env->write_buffer_bytes = write_buffer_bytes;
    return env;
}

void sl_store_env_destroy(sl_store_env *env) {
    if (!env)
        return;
    rocksdb_cache_destroy(env->block_cache);
    free(env);
}

size_t sl_store_env_memory_usage(const sl_store_env *env) {
    return rocksdb_cache_get_usage(env->block_cache);
}

/* ---------------------------------------------------------------- open */

/* mkdir -p: create `path` and its missing parents. */
static sl_err make_directories(const char *path, char *errstr, size_t errstr_size) {
    char partial[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(partial))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "bad store path length %zu", len);
    memcpy(partial, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (partial[i] != '/' && partial[i] != '\0')
            continue;
        if (partial[i - 1] == '/')
            continue; /* "a//b" or a trailing slash */
        char separator = partial[i];
        partial[i] = '\0';
        if (mkdir(partial, 0755) != 0 && errno != EEXIST)
            return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot create %s: %s", partial,
                           strerror(errno));
        partial[i] = separator;
    }
    return SL_OK;
}

/* Options for one store. Caller owns the result (rocksdb_options_destroy);
 * RocksDB copies them at open, and the table factory holds its own
 * reference to the shared cache. */
static rocksdb_options_t *store_options(const sl_store_env *env) {
    rocksdb_block_based_table_options_t *table_options = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(table_options, env->block_cache);
    /* The table options take ownership of the policy. */
    rocksdb_block_based_options_set_filter_policy(
        table_options, rocksdb_filterpolicy_create_bloom_full(BLOOM_BITS_PER_KEY));
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(table_options, 1);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(table_options,
                                                                                     1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(table_options, 1);

    rocksdb_options_t *options = rocksdb_options_create();
    rocksdb_options_set_block_based_table_factory(options, table_options); /* copies */
    rocksdb_block_based_options_destroy(table_options);

    rocksdb_options_set_create_if_missing(options, 1);
    /* Sized for a small (2-core) machine; the thread pool is process-wide. */
    rocksdb_options_increase_parallelism(options, BACKGROUND_THREADS);
    rocksdb_options_set_compaction_style(options, rocksdb_level_compaction);
    rocksdb_options_set_level_compaction_dynamic_level_bytes(options, 1);
    /* Debian's librocksdb7.8 links liblz4 (checked with ldd); a build without
     * it fails at open with "Compression type LZ4 is not linked". */
    rocksdb_options_set_compression(options, rocksdb_lz4_compression);
    /* Memtable bound per store: see the note at the top of the file. */
    rocksdb_options_set_write_buffer_size(options, env->write_buffer_bytes / 2);
    rocksdb_options_set_max_write_buffer_number(options, 2);
    rocksdb_options_set_db_write_buffer_size(options, env->write_buffer_bytes);
    /* RocksDB's own info LOG would otherwise grow without bound. */
    rocksdb_options_set_max_log_file_size(options, INFO_LOG_MAX_BYTES);
    rocksdb_options_set_keep_log_file_num(options, INFO_LOG_FILES_KEPT);
    return options;
}

sl_store *sl_store_open(sl_store_env *env, const char *path, char *errstr, size_t errstr_size) {
    if (!env || !path) {
        sl_fail(errstr, errstr_size, SL_ERR_INVALID, "NULL argument");
        return NULL;
    }
    if (make_directories(path, errstr, errstr_size) != SL_OK)
        return NULL;
    rocksdb_options_t *options = NULL;
    char *rocks_err = NULL;
    sl_store *store = calloc(1, sizeof(*store));
    if (!store || !(store->path = strdup(path))) {
        sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* RocksDB counts into a thread-local perf context by default (level
     * "enable count"), which costs a TLS lookup on every key comparison of
     * the shared library. Nothing reads those counters: switch them off for
     * the thread that opens stores, which in the engine is the loop thread
     * that writes them. Other threads keep RocksDB's default. */
    rocksdb_set_perf_level(rocksdb_disable);
    options = store_options(env);
    store->db = rocksdb_open(options, path, &rocks_err);
    rocksdb_options_destroy(options);
    if (rocks_err) {
        /* A lock held by this or another process reads "... LOCK: ...". */
        sl_store_rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "cannot open store",
                            path);
        goto fail;
    }
    store->read_options = rocksdb_readoptions_create();
    store->write_options_wal = rocksdb_writeoptions_create();
    store->write_options_no_wal = rocksdb_writeoptions_create();
    rocksdb_writeoptions_disable_WAL(store->write_options_no_wal, 1);
    return store;

fail:
    sl_store_close(store);
    return NULL;
}

void sl_store_close(sl_store *store) {
    if (!store)
        return;
    if (store->db)
        rocksdb_close(store->db);
    if (store->read_options)
        rocksdb_readoptions_destroy(store->read_options);
    if (store->write_options_wal)
        rocksdb_writeoptions_destroy(store->write_options_wal);
    if (store->write_options_no_wal)
        rocksdb_writeoptions_destroy(store->write_options_no_wal);
    free(store->path);
    free(store);
}

sl_err sl_store_destroy_files(const char *path, char *errstr, size_t errstr_size) {
    if (!path)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "NULL path");
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            return SL_OK;
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    }
    /* DestroyDB takes the store's LOCK first, so it refuses an open store. */
    rocksdb_options_t *options = rocksdb_options_create();
    char *rocks_err = NULL;
    rocksdb_destroy_db(options, path, &rocks_err);
    rocksdb_options_destroy(options);
    if (rocks_err)
        return sl_store_rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err,
                                   "cannot destroy store", path);
    /* DestroyDB usually removes the directory itself. Files it does not know
     * (not RocksDB's) are left alone, and so is the directory holding them. */
    if (rmdir(path) != 0 && errno != ENOENT && errno != ENOTEMPTY && errno != EEXIST)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot remove %s: %s", path,
                       strerror(errno));
    return SL_OK;
}

/* ---------------------------------------------------------------- reads */

/* See store_int.h. */
sl_err sl_store_get_quiet(sl_store *store, const void *key, size_t key_len, char **value,
                          size_t *value_len, char *errstr, size_t errstr_size) {
    *value = NULL;
    *value_len = 0;
    char *rocks_err = NULL;
    /* A pinnable slice avoids RocksDB's own copy: we make the one copy the
     * caller owns. */
    rocksdb_pinnableslice_t *slice =
        rocksdb_get_pinned(store->db, store->read_options, key, key_len, &rocks_err);
    if (rocks_err)
        return sl_store_rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "get from",
                                   store->path);
    if (!slice)
        return SL_ERR_NOT_FOUND;
    size_t len;
    const char *bytes = rocksdb_pinnableslice_value(slice, &len);
    /* Never malloc(0): an empty value is a valid, non-NULL result. */
    char *copy = malloc(len ? len : 1);
    if (!copy) {
        rocksdb_pinnableslice_destroy(slice);
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory for a %zu-byte value",
                       len);
    }
    memcpy(copy, bytes, len);
    rocksdb_pinnableslice_destroy(slice);
    *value = copy;
    *value_len = len;
    return SL_OK;
}

sl_err sl_store_get(sl_store *store, const void *key, size_t key_len, char **value,
                    size_t *value_len, char *errstr, size_t errstr_size) {
    sl_err err = sl_store_get_quiet(store, key, key_len, value, value_len, errstr, errstr_size);
    if (err == SL_ERR_NOT_FOUND)
        return sl_fail(errstr, errstr_size, SL_ERR_NOT_FOUND, "key not found in %s", store->path);
    return err;
}

static uint64_t uint64_property(sl_store *store, const char *name) {
    char *text = rocksdb_property_value(store->db, name);
    if (!text)
        return 0;
    char *end;
    errno = 0;
    unsigned long long parsed = strtoull(text, &end, 10);
    bool valid = errno == 0 && end != text && *end == '\0';
    rocksdb_free(text);
    return valid ? (uint64_t)parsed : 0;
}

uint64_t sl_store_estimate_keys(sl_store *store) {
    return uint64_property(store, "rocksdb.estimate-num-keys");
}

uint64_t sl_store_disk_bytes(sl_store *store) {
    return uint64_property(store, "rocksdb.live-sst-files-size");
}

/* ---------------------------------------------------------------- writes */

sl_store_batch *sl_store_batch_new(void) {
    sl_store_batch *batch = malloc(sizeof(*batch));
    if (!batch)
        return NULL;
    batch->batch = rocksdb_writebatch_create();
    return batch;
}

void sl_store_batch_put(sl_store_batch *batch, const void *key, size_t key_len, const void *value,
                        size_t value_len) {
    rocksdb_writebatch_put(batch->batch, key, key_len, value, value_len);
}

void sl_store_batch_delete(sl_store_batch *batch, const void *key, size_t key_len) {
    rocksdb_writebatch_delete(batch->batch, key, key_len);
}

size_t sl_store_batch_count(const sl_store_batch *batch) {
    int count = rocksdb_writebatch_count(batch->batch);
    return count > 0 ? (size_t)count : 0;
}

void sl_store_batch_clear(sl_store_batch *batch) {
    rocksdb_writebatch_clear(batch->batch);
}

void sl_store_batch_destroy(sl_store_batch *batch) {
    if (!batch)
        return;
    rocksdb_writebatch_destroy(batch->batch);
    free(batch);
}

sl_err sl_store_apply(sl_store *store, sl_store_batch *batch, bool disable_wal, char *errstr,
                      size_t errstr_size) {
    char *rocks_err = NULL;
    rocksdb_write(store->db, disable_wal ? store->write_options_no_wal : store->write_options_wal,
                  batch->batch, &rocks_err);
    if (rocks_err)
        return sl_store_rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "write to",
                                   store->path);
    return SL_OK;
}

static sl_err flush(sl_store *store, bool wait, char *errstr, size_t errstr_size) {
    rocksdb_flushoptions_t *flush_options = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(flush_options, wait);
    char *rocks_err = NULL;
    rocksdb_flush(store->db, flush_options, &rocks_err);
    rocksdb_flushoptions_destroy(flush_options);
    if (rocks_err)
        return sl_store_rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "flush",
                                   store->path);
    return SL_OK;
}

sl_err sl_store_flush(sl_store *store, char *errstr, size_t errstr_size) {
    return flush(store, true, errstr, errstr_size);
}

sl_err sl_store_flush_start(sl_store *store, char *errstr, size_t errstr_size) {
    return flush(store, false, errstr, errstr_size);
}

/* ---------------------------------------------------------------- iterators */

/* malloc'd copy of a bound; *copy stays NULL for an open (NULL) bound.
 * False only when out of memory. */
static bool copy_bound(const void *bound, size_t len, char **copy) {
    *copy = NULL;
    if (!bound)
        return true;
    *copy = malloc(len ? len : 1);
    if (!*copy)
        return false;
    memcpy(*copy, bound, len);
    return true;
}

sl_store_iter *sl_store_iter_range(sl_store *store, const void *from, size_t from_len,
                                   const void *to, size_t to_len) {
    sl_store_iter *iter = calloc(1, sizeof(*iter));
    if (!iter)
        return NULL;
    if (!copy_bound(from, from_len, &iter->from) || !copy_bound(to, to_len, &iter->to)) {
        sl_store_iter_destroy(iter);
        return NULL;
    }
    iter->from_len = from_len;
    iter->to_len = to_len;
    iter->db = store->db;
    iter->path = store->path;
    /* A RocksDB iterator already reads as of its creation; the explicit
     * snapshot states the guarantee instead of relying on that detail. */
    iter->snapshot = rocksdb_create_snapshot(store->db);
    iter->read_options = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(iter->read_options, iter->snapshot);
    if (iter->to)
        rocksdb_readoptions_set_iterate_upper_bound(iter->read_options, iter->to, iter->to_len);
    iter->iterator = rocksdb_create_iterator(store->db, iter->read_options);
    return iter;
}

/* The smallest key greater than every key starting with `prefix`: drop
 * trailing 0xff bytes and increment the last remaining one. Returns the
 * successor's length in `successor` (which holds prefix_len bytes), or 0
 * when there is none (empty or all-0xff prefix: no upper bound). */
static size_t prefix_successor(const unsigned char *prefix, size_t prefix_len,
                               unsigned char *successor) {
    size_t len = prefix_len;
    while (len > 0 && prefix[len - 1] == 0xff)
        len--;
    if (len == 0)
        return 0;
    memcpy(successor, prefix, len);
    successor[len - 1]++;
    return len;
}

sl_store_iter *sl_store_iter_prefix(sl_store *store, const void *prefix, size_t prefix_len) {
    unsigned char *successor = malloc(prefix_len ? prefix_len : 1);
    if (!successor)
        return NULL;
    size_t successor_len = prefix_successor(prefix, prefix_len, successor);
    sl_store_iter *iter = sl_store_iter_range(store, prefix_len ? prefix : NULL, prefix_len,
                                              successor_len ? successor : NULL, successor_len);
    free(successor); /* the iterator made its own copy */
    return iter;
}

bool sl_store_iter_next(sl_store_iter *iter, const void **key, size_t *key_len, const void **value,
                        size_t *value_len) {
    if (!iter->started) {
        iter->started = true;
        if (iter->from)
            rocksdb_iter_seek(iter->iterator, iter->from, iter->from_len);
        else
            rocksdb_iter_seek_to_first(iter->iterator);
    } else {
        if (iter->advance_base && rocksdb_iter_valid(iter->iterator))
            rocksdb_iter_next(iter->iterator);
        if (iter->advance_merged)
            iter->merged_pos++;
    }
    for (;;) {
        bool base_valid = rocksdb_iter_valid(iter->iterator);
        const pending_entry *e =
            iter->merged_pos < iter->n_merged ? iter->merged[iter->merged_pos] : NULL;
        if (!base_valid && !e)
            return false;
        int cmp = 1; /* > 0: the base entry comes first */
        if (base_valid && e) {
            size_t base_len;
            const char *base_key = rocksdb_iter_key(iter->iterator, &base_len);
            cmp = sl_store_key_compare(e->data, e->key_len, base_key, base_len);
            cmp = cmp < 0 ? -1 : (cmp > 0 ? 1 : 0);
        } else if (e) {
            cmp = -1;
        }
        if (cmp > 0) { /* only the base has this key */
            iter->advance_base = true;
            iter->advance_merged = false;
            *key = rocksdb_iter_key(iter->iterator, key_len);
            *value = rocksdb_iter_value(iter->iterator, value_len);
            return true;
        }
        /* The pending entry wins; on equal keys it shadows the base's. */
        iter->advance_base = cmp == 0;
        iter->advance_merged = true;
        if (e->tombstone) {
            if (iter->advance_base)
                rocksdb_iter_next(iter->iterator);
            iter->merged_pos++;
            continue;
        }
        *key = e->data;
        *key_len = e->key_len;
        *value = e->data + e->key_len;
        *value_len = e->value_len;
        return true;
    }
}

sl_err sl_store_iter_error(const sl_store_iter *iter, char *errstr, size_t errstr_size) {
    char *rocks_err = NULL;
    rocksdb_iter_get_error(iter->iterator, &rocks_err);
    if (rocks_err)
        return sl_store_rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "iterate",
                                   iter->path);
    return SL_OK;
}

void sl_store_iter_destroy(sl_store_iter *iter) {
    if (!iter)
        return;
    /* Order matters: the iterator reads the options, snapshot and bounds. */
    if (iter->iterator)
        rocksdb_iter_destroy(iter->iterator);
    if (iter->read_options)
        rocksdb_readoptions_destroy(iter->read_options);
    if (iter->snapshot)
        rocksdb_release_snapshot(iter->db, iter->snapshot);
    free(iter->from);
    free(iter->to);
    free(iter->merged);
    free(iter);
}
