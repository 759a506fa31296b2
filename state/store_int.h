/*
 * store_int.h: private to state/: the bodies of the store and its iterator,
 * shared by store.c (RocksDB, iterators) and pending.c (the pending writes
 * merged into reads and iterators). Not for use outside state/.
 */
#ifndef SLUICE_STORE_INT_H
#define SLUICE_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <rocksdb/c.h>

#include "processor/base/error.h"
#include "state/store.h"

struct sl_store {
    rocksdb_t *db;
    char *path; /* owned copy, for error messages */
    /* Made once at open and only read afterwards, so several threads may
     * use them at once. */
    rocksdb_readoptions_t *read_options;
    rocksdb_writeoptions_t *write_options_wal;
    rocksdb_writeoptions_t *write_options_no_wal;
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
sl_err sl_store_rocks_fail(char *errstr, size_t errstr_size, sl_err code, char *rocks_err,
                           const char *what, const char *path);

/* RocksDB get without an errstr on a miss (a miss is the common case for
 * new keys; formatting a message each time would cost more than the get).
 * Otherwise as sl_store_get. */
sl_err sl_store_get_quiet(sl_store *store, const void *key, size_t key_len, char **value,
                          size_t *value_len, char *errstr, size_t errstr_size);

/* Bytewise order, a proper prefix first (RocksDB's default comparator). */
static inline int sl_store_key_compare(const void *a, size_t a_len, const void *b, size_t b_len) {
    int cmp = memcmp(a, b, a_len < b_len ? a_len : b_len);
    if (cmp)
        return cmp;
    return a_len < b_len ? -1 : a_len > b_len;
}

#endif
