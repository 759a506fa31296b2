/*
 * store.c: key-value state stores on RocksDB (C API, librocksdb 7.8), and
 * the checkpoint files that say how far each store is restored.
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
 *
 * Checkpoint file format (text, at most CHECKPOINT_MAX_FILE bytes):
 *   sluice-checkpoint 1\n
 *   <store> <partition> <offset>\n      (one line per entry, decimal)
 *   crc32 <8 lowercase hex digits>\n    (IEEE CRC-32 of all preceding bytes)
 */
#include "state/store.h"

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

#define CHECKPOINT_MAGIC      "sluice-checkpoint 1\n"
#define CHECKPOINT_CRC_PREFIX "crc32 "
/* "crc32 " + 8 hex digits + "\n" */
#define CHECKPOINT_CRC_LINE_LEN (sizeof(CHECKPOINT_CRC_PREFIX) - 1 + 8 + 1)
/* A full file of SL_CHECKPOINT_MAX_ENTRIES maximal lines is under 16 KiB
 * (checked below); a larger file is not ours, and reading stops there. */
#define CHECKPOINT_MAX_FILE (64 * 1024)
/* Longest entry line: name, ' ', INT32_MAX (10 digits), ' ', INT64_MAX (19
 * digits), '\n'. */
#define CHECKPOINT_MAX_LINE (SL_CHECKPOINT_MAX_NAME + 1 + 10 + 1 + 19 + 1)
_Static_assert(sizeof(CHECKPOINT_MAGIC) + SL_CHECKPOINT_MAX_ENTRIES * CHECKPOINT_MAX_LINE +
                       CHECKPOINT_CRC_LINE_LEN <
                   CHECKPOINT_MAX_FILE,
               "a full checkpoint must fit in CHECKPOINT_MAX_FILE");

struct sl_store_env {
    rocksdb_cache_t *block_cache; /* owned; shared by every store's tables */
    size_t write_buffer_bytes;    /* memtable bound per store (see top) */
};

struct sl_store {
    rocksdb_t *db;
    char *path; /* owned copy, for error messages */
    /* Made once at open and only read afterwards, so several threads may
     * use them at once. */
    rocksdb_readoptions_t *read_options;
    rocksdb_writeoptions_t *write_options_wal;
    rocksdb_writeoptions_t *write_options_no_wal;
};

struct sl_store_batch {
    rocksdb_writebatch_t *batch;
};

/* One key's pending write (see "pending writes" below). */
struct pending_entry {
    char *data; /* key bytes then value bytes, one allocation; NULL: empty slot */
    size_t key_len;
    size_t value_len; /* 0 for a tombstone */
    uint64_t hash;
    bool tombstone;
};
typedef struct pending_entry pending_entry;

struct sl_store_iter {
    rocksdb_t *db;    /* borrowed from the store, to release the snapshot */
    const char *path; /* borrowed from the store, for error messages */
    const rocksdb_snapshot_t *snapshot;
    rocksdb_readoptions_t *read_options;
    rocksdb_iterator_t *iterator;
    char *from; /* owned copies; NULL = open bound */
    size_t from_len;
    char *to; /* RocksDB points at these bytes: freed only after the iterator */
    size_t to_len;
    bool started; /* false until the first sl_store_iter_next has seeked */
    /* Merged with pending writes: the pending entries of the range in key
     * order (borrowed from the map), the next one to look at, and which
     * side(s) the entry returned last came from, to advance on next(). */
    const pending_entry **merged;
    size_t n_merged;
    size_t merged_pos;
    bool advance_base, advance_merged;
};

/* Copy RocksDB's malloc'd error into errstr, free it, return `code`. */
static sl_err rocks_fail(char *errstr, size_t errstr_size, sl_err code, char *rocks_err,
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
        rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "cannot open store", path);
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
        return rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "cannot destroy store",
                          path);
    /* DestroyDB usually removes the directory itself. Files it does not know
     * (not RocksDB's) are left alone, and so is the directory holding them. */
    if (rmdir(path) != 0 && errno != ENOENT && errno != ENOTEMPTY && errno != EEXIST)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot remove %s: %s", path,
                       strerror(errno));
    return SL_OK;
}

/* ---------------------------------------------------------------- reads */

sl_err sl_store_get(sl_store *store, const void *key, size_t key_len, char **value,
                    size_t *value_len, char *errstr, size_t errstr_size) {
    *value = NULL;
    *value_len = 0;
    char *rocks_err = NULL;
    /* A pinnable slice avoids RocksDB's own copy: we make the one copy the
     * caller owns. */
    rocksdb_pinnableslice_t *slice =
        rocksdb_get_pinned(store->db, store->read_options, key, key_len, &rocks_err);
    if (rocks_err)
        return rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "get from", store->path);
    if (!slice)
        return sl_fail(errstr, errstr_size, SL_ERR_NOT_FOUND, "key not found in %s", store->path);
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
        return rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "write to", store->path);
    return SL_OK;
}

static sl_err flush(sl_store *store, bool wait, char *errstr, size_t errstr_size) {
    rocksdb_flushoptions_t *flush_options = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(flush_options, wait);
    char *rocks_err = NULL;
    rocksdb_flush(store->db, flush_options, &rocks_err);
    rocksdb_flushoptions_destroy(flush_options);
    if (rocks_err)
        return rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "flush", store->path);
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

static int key_compare(const void *a, size_t a_len, const void *b, size_t b_len);

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
            cmp = key_compare(e->data, e->key_len, base_key, base_len);
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
        return rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "iterate", iter->path);
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

/* RocksDB get without an errstr on a miss (a miss is the common case for
 * new keys; formatting a message each time would cost more than the get). */
static sl_err store_get(sl_store *store, const void *key, size_t key_len, char **value,
                        size_t *value_len, char *errstr, size_t errstr_size) {
    *value = NULL;
    *value_len = 0;
    char *rocks_err = NULL;
    /* A pinnable slice avoids RocksDB's own copy: we make the one copy the
     * caller owns. */
    rocksdb_pinnableslice_t *slice =
        rocksdb_get_pinned(store->db, store->read_options, key, key_len, &rocks_err);
    if (rocks_err)
        return rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "get from", store->path);
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
    return store_get(store, key, key_len, value, value_len, errstr, errstr_size);
}

/* Bytewise order, a proper prefix first (RocksDB's default comparator). */
static int key_compare(const void *a, size_t a_len, const void *b, size_t b_len) {
    int cmp = memcmp(a, b, a_len < b_len ? a_len : b_len);
    if (cmp)
        return cmp;
    return a_len < b_len ? -1 : a_len > b_len;
}

static int entry_compare(const void *a, const void *b) {
    const pending_entry *x = *(const pending_entry *const *)a;
    const pending_entry *y = *(const pending_entry *const *)b;
    return key_compare(x->data, x->key_len, y->data, y->key_len);
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
    for (size_t i = 0; i < pending->capacity; i++) {
        const pending_entry *e = &pending->slots[i];
        if (!e->data)
            continue;
        if (from && key_compare(e->data, e->key_len, from, from_len) < 0)
            continue;
        if (to && key_compare(e->data, e->key_len, to, to_len) >= 0)
            continue;
        n++;
    }
    if (n == 0)
        return iter;
    iter->merged = malloc(n * sizeof(*iter->merged));
    if (!iter->merged) {
        sl_store_iter_destroy(iter);
        return NULL;
    }
    for (size_t i = 0; i < pending->capacity; i++) {
        const pending_entry *e = &pending->slots[i];
        if (!e->data)
            continue;
        if (from && key_compare(e->data, e->key_len, from, from_len) < 0)
            continue;
        if (to && key_compare(e->data, e->key_len, to, to_len) >= 0)
            continue;
        iter->merged[iter->n_merged++] = e;
    }
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
        return rocks_fail(errstr, errstr_size, SL_ERR_STORE, rocks_err, "write", store->path);
    sl_store_pending_clear(pending);
    return SL_OK;
}

/* ---------------------------------------------------------------- checkpoints */

/* CRC-32 as in zlib, PNG and Ethernet (reflected, polynomial 0xEDB88320), so
 * `python3 -c 'import zlib; print(hex(zlib.crc32(data)))'` checks a file.
 * Bitwise: checkpoint files are small and written once per commit. */
static uint32_t crc32_ieee(const unsigned char *data, size_t len) {
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xffffffffu;
}

static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static bool valid_store_name(const char *name, size_t len) {
    if (len == 0 || len > SL_CHECKPOINT_MAX_NAME)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_name_char(name[i]))
            return false;
    return true;
}

/* fsync the directory holding `path`, so a rename or unlink in it is
 * durable. */
static sl_err sync_parent_directory(const char *path, char *errstr, size_t errstr_size) {
    char directory[PATH_MAX];
    const char *last_slash = strrchr(path, '/');
    if (!last_slash) {
        memcpy(directory, ".", 2);
    } else {
        size_t len = last_slash == path ? 1 : (size_t)(last_slash - path);
        if (len >= sizeof(directory))
            return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "path too long: %s", path);
        memcpy(directory, path, len);
        directory[len] = '\0';
    }
    int fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot open %s: %s", directory,
                       strerror(errno));
    if (fsync(fd) != 0) {
        int saved_errno = errno;
        close(fd);
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot fsync %s: %s", directory,
                       strerror(saved_errno));
    }
    close(fd);
    return SL_OK;
}

/* Append printf output to buf[*used..size); SL_ERR_FULL if it does not fit. */
static sl_err __attribute__((format(printf, 4, 5)))
append(char *buf, size_t size, size_t *used, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int written = vsnprintf(buf + *used, size - *used, fmt, args);
    va_end(args);
    if (written < 0 || (size_t)written >= size - *used)
        return SL_ERR_FULL;
    *used += (size_t)written;
    return SL_OK;
}

static sl_err write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t written = write(fd, data, len);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return SL_ERR_IO;
        }
        data += written;
        len -= (size_t)written;
    }
    return SL_OK;
}

sl_err sl_checkpoint_write(const char *path, const sl_checkpoint_entry *entries, size_t count,
                           char *errstr, size_t errstr_size) {
    if (!path || (count > 0 && !entries))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "NULL argument");
    if (count > SL_CHECKPOINT_MAX_ENTRIES)
        return sl_fail(errstr, errstr_size, SL_ERR_FULL, "%zu checkpoint entries, at most %d",
                       count, SL_CHECKPOINT_MAX_ENTRIES);
    for (size_t i = 0; i < count; i++) {
        const sl_checkpoint_entry *entry = &entries[i];
        size_t name_len = strnlen(entry->store, sizeof(entry->store));
        if (!valid_store_name(entry->store, name_len))
            return sl_fail(errstr, errstr_size, SL_ERR_INVALID,
                           "checkpoint entry %zu: store name must be 1..%d of [A-Za-z0-9._-]", i,
                           SL_CHECKPOINT_MAX_NAME);
        if (entry->partition < 0 || entry->offset < 0)
            return sl_fail(errstr, errstr_size, SL_ERR_INVALID,
                           "checkpoint entry %zu (%s): negative partition or offset", i,
                           entry->store);
    }

    char tmp_path[PATH_MAX];
    int tmp_path_len = snprintf(tmp_path, sizeof(tmp_path), "%s.tmp", path);
    if (tmp_path_len < 0 || (size_t)tmp_path_len >= sizeof(tmp_path))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "path too long: %s", path);

    char *content = malloc(CHECKPOINT_MAX_FILE);
    if (!content)
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
    size_t used = 0;
    sl_err err = append(content, CHECKPOINT_MAX_FILE, &used, "%s", CHECKPOINT_MAGIC);
    for (size_t i = 0; i < count && err == SL_OK; i++)
        err = append(content, CHECKPOINT_MAX_FILE, &used, "%s %" PRId32 " %" PRId64 "\n",
                     entries[i].store, entries[i].partition, entries[i].offset);
    if (err == SL_OK)
        err = append(content, CHECKPOINT_MAX_FILE, &used, CHECKPOINT_CRC_PREFIX "%08" PRIx32 "\n",
                     crc32_ieee((const unsigned char *)content, used));
    if (err != SL_OK) {
        /* Ruled out by the _Static_assert at the top; kept so that a bug
         * fails cleanly instead of writing a truncated file. */
        free(content);
        return sl_fail(errstr, errstr_size, SL_ERR_FULL, "checkpoint larger than %d bytes",
                       CHECKPOINT_MAX_FILE);
    }

    int fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot create %s: %s", tmp_path,
                      strerror(errno));
        free(content);
        return err;
    }
    if (write_all(fd, content, used) != SL_OK || fsync(fd) != 0) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot write %s: %s", tmp_path,
                      strerror(errno));
        close(fd);
        goto fail;
    }
    if (close(fd) != 0) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot close %s: %s", tmp_path,
                      strerror(errno));
        goto fail;
    }
    if (rename(tmp_path, path) != 0) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot rename %s to %s: %s", tmp_path, path,
                      strerror(errno));
        goto fail;
    }
    free(content);
    return sync_parent_directory(path, errstr, errstr_size);

fail:
    unlink(tmp_path);
    free(content);
    return err;
}

/* Read the whole file into a malloc'd, NUL-terminated buffer (*data, owned
 * by the caller). SL_ERR_NOT_FOUND if missing; SL_ERR_IO if unreadable or
 * larger than CHECKPOINT_MAX_FILE. */
static sl_err read_bounded(const char *path, char **data, size_t *len, char *errstr,
                           size_t errstr_size) {
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return sl_fail(errstr, errstr_size, SL_ERR_NOT_FOUND, "no checkpoint at %s", path);
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    /* One byte more than allowed, to tell "exactly at the cap" from "over";
     * one more for the NUL. */
    char *buf = malloc(CHECKPOINT_MAX_FILE + 2);
    if (!buf) {
        close(fd);
        return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
    }
    size_t used = 0;
    while (used < CHECKPOINT_MAX_FILE + 1) {
        ssize_t got = read(fd, buf + used, CHECKPOINT_MAX_FILE + 1 - used);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            sl_err err = sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot read %s: %s", path,
                                 strerror(errno));
            close(fd);
            free(buf);
            return err;
        }
        if (got == 0)
            break;
        used += (size_t)got;
    }
    close(fd);
    if (used > CHECKPOINT_MAX_FILE) {
        free(buf);
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "%s is larger than %d bytes", path,
                       CHECKPOINT_MAX_FILE);
    }
    buf[used] = '\0';
    *data = buf;
    *len = used;
    return SL_OK;
}

/* Exactly 8 lowercase hex digits, as sl_checkpoint_write writes them. */
static bool parse_crc_hex(const char *text, uint32_t *value) {
    uint32_t parsed = 0;
    for (int i = 0; i < 8; i++) {
        char c = text[i];
        uint32_t digit;
        if (c >= '0' && c <= '9')
            digit = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            digit = (uint32_t)(c - 'a' + 10);
        else
            return false;
        parsed = parsed << 4 | digit;
    }
    *value = parsed;
    return true;
}

/* Parse a canonical non-negative decimal (digits only, no sign or spaces)
 * that ends at `terminator`; *end points at the terminator. */
static bool parse_non_negative(const char *text, char terminator, long long max, long long *value,
                               const char **end) {
    if (*text < '0' || *text > '9')
        return false;
    char *stop;
    errno = 0;
    long long parsed = strtoll(text, &stop, 10);
    if (errno != 0 || *stop != terminator || parsed < 0 || parsed > max)
        return false;
    *value = parsed;
    *end = stop;
    return true;
}

/* Parse one "<store> <partition> <offset>\n" line starting at `line` into
 * `entry`; *next is the start of the next line. */
static bool parse_entry_line(const char *line, sl_checkpoint_entry *entry, const char **next) {
    const char *space = strchr(line, ' ');
    const char *newline = strchr(line, '\n');
    if (!space || !newline || space > newline)
        return false;
    size_t name_len = (size_t)(space - line);
    if (!valid_store_name(line, name_len))
        return false;
    long long partition, offset;
    const char *end;
    if (!parse_non_negative(space + 1, ' ', INT32_MAX, &partition, &end) ||
        !parse_non_negative(end + 1, '\n', INT64_MAX, &offset, &end))
        return false;
    memcpy(entry->store, line, name_len);
    entry->store[name_len] = '\0';
    entry->partition = (int32_t)partition;
    entry->offset = (int64_t)offset;
    *next = end + 1;
    return true;
}

sl_err sl_checkpoint_read(const char *path, sl_checkpoint_entry *entries, size_t max, size_t *count,
                          char *errstr, size_t errstr_size) {
    if (!count)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "NULL count");
    *count = 0;
    if (!path || (max > 0 && !entries))
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "NULL argument");
    char *data;
    size_t len;
    sl_err err = read_bounded(path, &data, &len, errstr, errstr_size);
    if (err != SL_OK)
        return err;

    /* The checksum line first: everything else is trusted only after it. */
    const size_t magic_len = sizeof(CHECKPOINT_MAGIC) - 1;
    if (len < magic_len + CHECKPOINT_CRC_LINE_LEN || memchr(data, '\0', len) ||
        data[len - 1] != '\n') {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "%s is truncated or not a checkpoint", path);
        goto done;
    }
    size_t body_len = len - CHECKPOINT_CRC_LINE_LEN;
    const char *crc_line = data + body_len;
    const char *crc_hex = crc_line + sizeof(CHECKPOINT_CRC_PREFIX) - 1;
    uint32_t stored_crc;
    bool crc_line_ok = data[body_len - 1] == '\n' &&
                       memcmp(crc_line, CHECKPOINT_CRC_PREFIX, crc_hex - crc_line) == 0 &&
                       parse_crc_hex(crc_hex, &stored_crc);
    if (!crc_line_ok || stored_crc != crc32_ieee((const unsigned char *)data, body_len)) {
        err = sl_fail(errstr, errstr_size, SL_ERR_IO, "%s: checksum mismatch (torn or corrupt)",
                      path);
        goto done;
    }
    if (memcmp(data, CHECKPOINT_MAGIC, magic_len) != 0) {
        err =
            sl_fail(errstr, errstr_size, SL_ERR_IO, "%s: not a version 1 sluice checkpoint", path);
        goto done;
    }

    /* Validate every line before deciding between SL_ERR_IO and
     * SL_ERR_FULL, so a corrupt file is always reported as corrupt. The
     * checksum line is cut off at its first byte so strchr stops there. */
    data[body_len] = '\0';
    size_t total = 0;
    sl_checkpoint_entry scratch;
    for (const char *line = data + magic_len; *line;) {
        sl_checkpoint_entry *entry = total < max ? &entries[total] : &scratch;
        if (!parse_entry_line(line, entry, &line)) {
            err =
                sl_fail(errstr, errstr_size, SL_ERR_IO, "%s: malformed entry %zu", path, total + 1);
            goto done;
        }
        total++;
    }
    if (total > max) {
        err = sl_fail(errstr, errstr_size, SL_ERR_FULL, "%s holds %zu entries, room for %zu", path,
                      total, max);
        goto done;
    }
    *count = total;
    err = SL_OK;

done:
    free(data);
    return err;
}

sl_err sl_checkpoint_remove(const char *path, char *errstr, size_t errstr_size) {
    if (!path)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "NULL path");
    if (unlink(path) != 0) {
        if (errno == ENOENT)
            return SL_OK;
        return sl_fail(errstr, errstr_size, SL_ERR_IO, "cannot remove %s: %s", path,
                       strerror(errno));
    }
    /* The removal must be durable before the task processes anything, or a
     * crash could bring back a checkpoint that no longer matches the store. */
    return sync_parent_directory(path, errstr, errstr_size);
}
