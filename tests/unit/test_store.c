/* Unit tests: RocksDB state stores (batches, reads, iterators, lifecycle)
 * and checkpoint files. Each test gets a fresh directory under /tmp. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/store.h"
#include "state/checkpoint.h"

#define CACHE_BYTES        (8 * 1024 * 1024)
#define WRITE_BUFFER_BYTES (1024 * 1024)

static char errstr[1024];

typedef struct fixture {
    char dir[64];
    sl_store_env *env;
} fixture;

static int setup(void **state) {
    fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/sluice-store-test-XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    fx->env = sl_store_env_new(CACHE_BYTES, WRITE_BUFFER_BYTES, errstr, sizeof(errstr));
    if (!fx->env) {
        rmdir(fx->dir);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

static int teardown(void **state) {
    fixture *fx = *state;
    sl_store_env_destroy(fx->env);
    int rc = nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return rc;
}

/* ------------------------------------------------------------ helpers */

static void path_in(const fixture *fx, const char *name, char *path, size_t size) {
    int len = snprintf(path, size, "%s/%s", fx->dir, name);
    assert_true(len > 0 && (size_t)len < size);
}

static sl_store *open_store(fixture *fx, const char *name) {
    char path[256];
    path_in(fx, name, path, sizeof(path));
    sl_store *store = sl_store_open(fx->env, path, errstr, sizeof(errstr));
    if (!store)
        fail_msg("sl_store_open(%s): %s", path, errstr);
    return store;
}

static void put(sl_store *store, const char *key, size_t key_len, const char *value) {
    sl_store_batch *batch = sl_store_batch_new();
    assert_non_null(batch);
    sl_store_batch_put(batch, key, key_len, value, strlen(value));
    assert_int_equal(sl_store_apply(store, batch, false, errstr, sizeof(errstr)), SL_OK);
    sl_store_batch_destroy(batch);
}

static void put_str(sl_store *store, const char *key, const char *value) {
    put(store, key, strlen(key), value);
}

static void del_str(sl_store *store, const char *key) {
    sl_store_batch *batch = sl_store_batch_new();
    assert_non_null(batch);
    sl_store_batch_delete(batch, key, strlen(key));
    assert_int_equal(sl_store_apply(store, batch, false, errstr, sizeof(errstr)), SL_OK);
    sl_store_batch_destroy(batch);
}

static void assert_stored_value(sl_store *store, const char *key, const char *expected) {
    char *value = NULL;
    size_t value_len = 0;
    sl_err err = sl_store_get(store, key, strlen(key), &value, &value_len, errstr, sizeof(errstr));
    if (err != SL_OK)
        fail_msg("get %s: %s (%s)", key, sl_err_name(err), errstr);
    assert_int_equal(value_len, strlen(expected));
    assert_memory_equal(value, expected, value_len);
    free(value);
}

static void assert_key_missing(sl_store *store, const char *key) {
    char *value = (char *)"untouched";
    size_t value_len = 99;
    assert_int_equal(
        sl_store_get(store, key, strlen(key), &value, &value_len, errstr, sizeof(errstr)),
        SL_ERR_NOT_FOUND);
    assert_null(value);
    assert_int_equal(value_len, 0);
}

typedef struct key_bytes {
    const char *bytes;
    size_t len;
} key_bytes;
/* A key from a string literal that may hold NUL bytes. */
#define KEY(literal)                                                                               \
    { literal, sizeof(literal) - 1 }
#define N_KEYS(array) (sizeof(array) / sizeof((array)[0]))

static void put_keys(sl_store *store, const key_bytes *keys, size_t count) {
    sl_store_batch *batch = sl_store_batch_new();
    assert_non_null(batch);
    for (size_t i = 0; i < count; i++)
        sl_store_batch_put(batch, keys[i].bytes, keys[i].len, "v", 1);
    assert_int_equal(sl_store_apply(store, batch, false, errstr, sizeof(errstr)), SL_OK);
    sl_store_batch_destroy(batch);
}

/* Drain `iter` (and destroy it), checking it yields exactly `expected`. */
static void assert_iterates(sl_store_iter *iter, const key_bytes *expected, size_t count) {
    assert_non_null(iter);
    const void *key, *value;
    size_t key_len, value_len;
    size_t seen = 0;
    while (sl_store_iter_next(iter, &key, &key_len, &value, &value_len)) {
        if (seen >= count)
            fail_msg("iterator yielded more than the %zu expected keys", count);
        assert_int_equal(key_len, expected[seen].len);
        assert_memory_equal(key, expected[seen].bytes, key_len);
        seen++;
    }
    assert_int_equal(seen, count);
    assert_false(sl_store_iter_next(iter, &key, &key_len, &value, &value_len)); /* stays done */
    assert_int_equal(sl_store_iter_error(iter, errstr, sizeof(errstr)), SL_OK);
    sl_store_iter_destroy(iter);
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *file = fopen(path, "wb");
    assert_non_null(file);
    assert_int_equal(fwrite(data, 1, len, file), len);
    assert_int_equal(fclose(file), 0);
}

/* Whole file into buf (NUL-terminated); returns its length. */
static size_t read_file(const char *path, char *buf, size_t size) {
    FILE *file = fopen(path, "rb");
    assert_non_null(file);
    size_t len = fread(buf, 1, size - 1, file);
    assert_true(feof(file));
    fclose(file);
    buf[len] = '\0';
    return len;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* An independent CRC-32 (IEEE, as zlib) so tests can craft files. */
static uint32_t test_crc32(const char *data, size_t len) {
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned char)data[i];
        for (int bit = 0; bit < 8; bit++)
            crc = crc & 1u ? (crc >> 1) ^ 0xedb88320u : crc >> 1;
    }
    return ~crc;
}

/* Write `body` followed by its correct checksum line. */
static void write_checkpoint_body(const char *path, const char *body) {
    char text[4096];
    int len = snprintf(text, sizeof(text), "%scrc32 %08x\n", body,
                       (unsigned)test_crc32(body, strlen(body)));
    assert_true(len > 0 && (size_t)len < sizeof(text));
    write_file(path, text, (size_t)len);
}

static sl_checkpoint_entry entry(const char *store, int32_t partition, int64_t offset) {
    sl_checkpoint_entry e = {.partition = partition, .offset = offset};
    snprintf(e.store, sizeof(e.store), "%s", store);
    return e;
}

static void write_three_entries(const char *path) {
    const sl_checkpoint_entry entries[] = {
        entry("orders", 0, 42),
        entry("orders", 7, 0),
        entry("customer-totals_v2.by.id", 2147483647, INT64_MAX),
    };
    assert_int_equal(sl_checkpoint_write(path, entries, 3, errstr, sizeof(errstr)), SL_OK);
}

/* ------------------------------------------------------------ stores */

static void batch_put_get_and_delete_round_trip(void **state) {
    sl_store *store = open_store(*state, "store");
    put_str(store, "alpha", "1");
    put_str(store, "beta", "two");
    assert_stored_value(store, "alpha", "1");
    assert_stored_value(store, "beta", "two");
    put_str(store, "alpha", "one"); /* overwrite */
    assert_stored_value(store, "alpha", "one");
    del_str(store, "alpha");
    assert_key_missing(store, "alpha");
    assert_stored_value(store, "beta", "two");
    sl_store_close(store);
}

static void get_of_a_missing_key_is_not_found(void **state) {
    sl_store *store = open_store(*state, "store");
    assert_key_missing(store, "never-written");
    sl_store_close(store);
}

static void empty_values_and_binary_keys_round_trip(void **state) {
    sl_store *store = open_store(*state, "store");
    const char key[] = {0x00, (char)0xff, 0x00};
    put(store, key, sizeof(key), "");
    char *value = NULL;
    size_t value_len = 99;
    assert_int_equal(
        sl_store_get(store, key, sizeof(key), &value, &value_len, errstr, sizeof(errstr)), SL_OK);
    assert_non_null(value); /* a malloc'd empty value, not NULL */
    assert_int_equal(value_len, 0);
    free(value);
    assert_int_equal(sl_store_get(store, key, 2, &value, &value_len, errstr, sizeof(errstr)),
                     SL_ERR_NOT_FOUND);
    sl_store_close(store);
}

static void batch_applies_all_or_nothing_and_count_and_clear_work(void **state) {
    sl_store *store = open_store(*state, "store");
    put_str(store, "doomed", "x");
    sl_store_batch *batch = sl_store_batch_new();
    assert_non_null(batch);
    assert_int_equal(sl_store_batch_count(batch), 0);
    sl_store_batch_put(batch, "a", 1, "1", 1);
    sl_store_batch_put(batch, "b", 1, "2", 1);
    sl_store_batch_delete(batch, "doomed", 6);
    assert_int_equal(sl_store_batch_count(batch), 3);
    /* Nothing is visible before apply... */
    assert_key_missing(store, "a");
    assert_stored_value(store, "doomed", "x");
    assert_int_equal(sl_store_apply(store, batch, false, errstr, sizeof(errstr)), SL_OK);
    /* ...and everything after. */
    assert_stored_value(store, "a", "1");
    assert_stored_value(store, "b", "2");
    assert_key_missing(store, "doomed");
    assert_int_equal(sl_store_batch_count(batch), 3); /* apply does not clear */

    sl_store_batch_clear(batch);
    assert_int_equal(sl_store_batch_count(batch), 0);
    sl_store_batch_put(batch, "c", 1, "3", 1);
    assert_int_equal(sl_store_batch_count(batch), 1);
    assert_int_equal(sl_store_apply(store, batch, false, errstr, sizeof(errstr)), SL_OK);
    assert_stored_value(store, "c", "3");
    assert_stored_value(store, "a", "1"); /* the cleared operations were not replayed */
    sl_store_batch_destroy(batch);
    sl_store_batch_destroy(NULL);
    sl_store_close(store);
}

static void batch_copies_keys_and_values(void **state) {
    sl_store *store = open_store(*state, "store");
    sl_store_batch *batch = sl_store_batch_new();
    assert_non_null(batch);
    char key[] = "key", value[] = "value";
    sl_store_batch_put(batch, key, 3, value, 5);
    memset(key, 'X', 3);
    memset(value, 'Y', 5);
    assert_int_equal(sl_store_apply(store, batch, false, errstr, sizeof(errstr)), SL_OK);
    assert_stored_value(store, "key", "value");
    sl_store_batch_destroy(batch);
    sl_store_close(store);
}

static const key_bytes binary_keys[] = {
    KEY("\x00"), KEY("\x00\x00"), KEY("\x01"),     KEY("\x7f"),
    KEY("\xff"), KEY("\xff\x00"), KEY("\xff\xff"),
};

static void range_iteration_includes_from_and_excludes_to(void **state) {
    sl_store *store = open_store(*state, "store");
    put_keys(store, binary_keys, N_KEYS(binary_keys));
    const key_bytes expected[] = {KEY("\x00\x00"), KEY("\x01"), KEY("\x7f")};
    assert_iterates(sl_store_iter_range(store, "\x00\x00", 2, "\xff", 1), expected,
                    N_KEYS(expected));
    sl_store_close(store);
}

static void range_bounds_between_keys_and_at_0xff(void **state) {
    sl_store *store = open_store(*state, "store");
    put_keys(store, binary_keys, N_KEYS(binary_keys));
    /* from is not a key; to lies between two keys */
    const key_bytes middle[] = {KEY("\x01"), KEY("\x7f"), KEY("\xff")};
    assert_iterates(sl_store_iter_range(store, "\x00\x01", 2, "\xff\x00", 2), middle,
                    N_KEYS(middle));
    const key_bytes tail[] = {KEY("\xff\x00"), KEY("\xff\xff")};
    assert_iterates(sl_store_iter_range(store, "\xff\x00", 2, "\xff\xff\xff", 3), tail,
                    N_KEYS(tail));
    /* empty and inverted ranges yield nothing */
    assert_iterates(sl_store_iter_range(store, "\x01", 1, "\x01", 1), NULL, 0);
    assert_iterates(sl_store_iter_range(store, "\x7f", 1, "\x01", 1), NULL, 0);
    sl_store_close(store);
}

static void range_with_null_bounds_is_open(void **state) {
    sl_store *store = open_store(*state, "store");
    put_keys(store, binary_keys, N_KEYS(binary_keys));
    assert_iterates(sl_store_iter_range(store, NULL, 0, NULL, 0), binary_keys, N_KEYS(binary_keys));
    assert_iterates(sl_store_iter_range(store, NULL, 0, "\x01", 1), binary_keys, 2);
    assert_iterates(sl_store_iter_range(store, "\xff", 1, NULL, 0), binary_keys + 4, 3);
    /* an empty (non-NULL) from is the smallest key: everything */
    assert_iterates(sl_store_iter_range(store, "", 0, NULL, 0), binary_keys, N_KEYS(binary_keys));
    sl_store_close(store);
}

static void prefix_iteration_stops_at_the_prefix_end(void **state) {
    sl_store *store = open_store(*state, "store");
    const key_bytes keys[] = {KEY("a"),          KEY("ab"), KEY("ab\x00"), KEY("ab\xff"),
                              KEY("ab\xff\xff"), KEY("ac"), KEY("b")};
    put_keys(store, keys, N_KEYS(keys));
    assert_iterates(sl_store_iter_prefix(store, "ab", 2), keys + 1, 4);
    assert_iterates(sl_store_iter_prefix(store, "zz", 2), NULL, 0);
    sl_store_close(store);
}

static void prefix_ending_in_0xff_stops_before_the_next_prefix(void **state) {
    sl_store *store = open_store(*state, "store");
    const key_bytes keys[] = {KEY("\x01\xfe\xff"),     KEY("\x01\xff"), KEY("\x01\xff\x00"),
                              KEY("\x01\xff\xff\x05"), KEY("\x02"),     KEY("\x02\x00")};
    put_keys(store, keys, N_KEYS(keys));
    /* successor of 01 ff is 02: must not include 02 */
    assert_iterates(sl_store_iter_prefix(store, "\x01\xff", 2), keys + 1, 3);
    sl_store_close(store);
}

static void all_0xff_prefix_runs_to_the_last_key(void **state) {
    sl_store *store = open_store(*state, "store");
    const key_bytes keys[] = {KEY("\xfe"), KEY("\xff"), KEY("\xff\x01"), KEY("\xff\xff"),
                              KEY("\xff\xff\xff")};
    put_keys(store, keys, N_KEYS(keys));
    assert_iterates(sl_store_iter_prefix(store, "\xff", 1), keys + 1, 4);
    assert_iterates(sl_store_iter_prefix(store, "\xff\xff", 2), keys + 3, 2);
    sl_store_close(store);
}

static void empty_prefix_iterates_everything(void **state) {
    sl_store *store = open_store(*state, "store");
    put_keys(store, binary_keys, N_KEYS(binary_keys));
    assert_iterates(sl_store_iter_prefix(store, "", 0), binary_keys, N_KEYS(binary_keys));
    sl_store_close(store);
}

static void iterator_sees_the_snapshot_taken_at_creation(void **state) {
    sl_store *store = open_store(*state, "store");
    put_str(store, "a", "1");
    put_str(store, "b", "2");
    sl_store_iter *iter = sl_store_iter_prefix(store, "", 0);
    assert_non_null(iter);
    put_str(store, "c", "3");
    put_str(store, "b", "changed");
    del_str(store, "a");

    const void *key, *value;
    size_t key_len, value_len;
    assert_true(sl_store_iter_next(iter, &key, &key_len, &value, &value_len));
    assert_memory_equal(key, "a", 1);
    assert_true(sl_store_iter_next(iter, &key, &key_len, &value, &value_len));
    assert_memory_equal(key, "b", 1);
    assert_int_equal(value_len, 1);
    assert_memory_equal(value, "2", 1);
    assert_false(sl_store_iter_next(iter, &key, &key_len, &value, &value_len));
    sl_store_iter_destroy(iter);

    const key_bytes now[] = {KEY("b"), KEY("c")};
    assert_iterates(sl_store_iter_prefix(store, "", 0), now, N_KEYS(now));
    sl_store_close(store);
}

static void data_survives_close_and_reopen(void **state) {
    sl_store *store = open_store(*state, "store");
    put_str(store, "kept", "yes");
    put_str(store, "gone", "no");
    del_str(store, "gone");
    sl_store_close(store);
    store = open_store(*state, "store");
    assert_stored_value(store, "kept", "yes");
    assert_key_missing(store, "gone");
    sl_store_close(store);
}

static void wal_disabled_writes_survive_reopen_after_flush(void **state) {
    sl_store *store = open_store(*state, "store");
    sl_store_batch *batch = sl_store_batch_new();
    assert_non_null(batch);
    char key[16];
    for (int i = 0; i < 100; i++) {
        int len = snprintf(key, sizeof(key), "key-%03d", i);
        sl_store_batch_put(batch, key, (size_t)len, "restored", 8);
    }
    assert_int_equal(sl_store_apply(store, batch, true, errstr, sizeof(errstr)), SL_OK);
    sl_store_batch_destroy(batch);
    assert_int_equal(sl_store_disk_bytes(store), 0); /* nothing flushed yet */
    assert_int_equal(sl_store_flush(store, errstr, sizeof(errstr)), SL_OK);
    assert_true(sl_store_disk_bytes(store) > 0);
    sl_store_close(store);

    store = open_store(*state, "store");
    assert_stored_value(store, "key-000", "restored");
    assert_stored_value(store, "key-099", "restored");
    assert_true(sl_store_estimate_keys(store) >= 100 / 2); /* an estimate */
    sl_store_close(store);
}

static void two_stores_share_one_env_and_its_cache(void **state) {
    fixture *fx = *state;
    assert_int_equal(sl_store_env_memory_usage(fx->env), 0);
    sl_store *first = open_store(fx, "task-0/first");
    sl_store *second = open_store(fx, "task-1/second");
    put_str(first, "k", "from first");
    put_str(second, "k", "from second");
    /* Only SST blocks are charged to the cache (no write-buffer manager in
     * RocksDB 7.8's C API), so flush and read them back. */
    assert_int_equal(sl_store_flush(first, errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(sl_store_flush(second, errstr, sizeof(errstr)), SL_OK);
    assert_stored_value(first, "k", "from first");
    assert_stored_value(second, "k", "from second");
    size_t usage = sl_store_env_memory_usage(fx->env);
    assert_true(usage > 0);
    assert_true(usage <= CACHE_BYTES);
    sl_store_close(first);
    sl_store_close(second);
}

static void env_refuses_a_write_buffer_below_the_minimum(void **state) {
    (void)state;
    errstr[0] = '\0';
    assert_null(sl_store_env_new(CACHE_BYTES, 1024, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "write buffer"));
}

static void open_creates_missing_parent_directories(void **state) {
    fixture *fx = *state;
    char path[256];
    path_in(fx, "app//task-3/deep/store/", path, sizeof(path));
    sl_store *store = sl_store_open(fx->env, path, errstr, sizeof(errstr));
    if (!store)
        fail_msg("open %s: %s", path, errstr);
    put_str(store, "k", "v");
    sl_store_close(store);
    path_in(fx, "app/task-3/deep/store/CURRENT", path, sizeof(path));
    assert_true(file_exists(path));
}

static void opening_an_open_store_again_fails_on_its_lock(void **state) {
    fixture *fx = *state;
    sl_store *store = open_store(fx, "store");
    char path[256];
    path_in(fx, "store", path, sizeof(path));
    errstr[0] = '\0';
    assert_null(sl_store_open(fx->env, path, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, path));
    assert_non_null(strstr(errstr, "LOCK"));
    sl_store_close(store);
    /* and the first open still works, and the lock is released by close */
    store = open_store(fx, "store");
    sl_store_close(store);
}

static void open_fails_when_a_parent_is_a_file(void **state) {
    fixture *fx = *state;
    char path[256];
    path_in(fx, "plain-file", path, sizeof(path));
    write_file(path, "x", 1);
    path_in(fx, "plain-file/store", path, sizeof(path));
    errstr[0] = '\0';
    assert_null(sl_store_open(fx->env, path, errstr, sizeof(errstr)));
    assert_true(strlen(errstr) > 0);
}

static void destroy_files_removes_the_store(void **state) {
    fixture *fx = *state;
    sl_store *store = open_store(fx, "task-0/store");
    put_str(store, "k", "v");
    assert_int_equal(sl_store_flush(store, errstr, sizeof(errstr)), SL_OK);
    char path[256];
    path_in(fx, "task-0/store", path, sizeof(path));
    /* refused while open */
    assert_int_equal(sl_store_destroy_files(path, errstr, sizeof(errstr)), SL_ERR_STORE);
    assert_stored_value(store, "k", "v");
    sl_store_close(store);

    assert_int_equal(sl_store_destroy_files(path, errstr, sizeof(errstr)), SL_OK);
    assert_false(file_exists(path));
    store = open_store(fx, "task-0/store"); /* a fresh, empty store */
    assert_key_missing(store, "k");
    sl_store_close(store);
}

static void destroy_files_of_a_missing_path_is_ok(void **state) {
    fixture *fx = *state;
    char path[256];
    path_in(fx, "never/created", path, sizeof(path));
    assert_int_equal(sl_store_destroy_files(path, errstr, sizeof(errstr)), SL_OK);
}

/* ------------------------------------------------------------ checkpoints */

static void checkpoint_round_trips_several_entries(void **state) {
    char path[256];
    path_in(*state, ".checkpoint", path, sizeof(path));
    write_three_entries(path);
    sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
    size_t count = 0;
    assert_int_equal(sl_checkpoint_read(path, entries, SL_CHECKPOINT_MAX_ENTRIES, &count, errstr,
                                        sizeof(errstr)),
                     SL_OK);
    assert_int_equal(count, 3);
    assert_string_equal(entries[0].store, "orders");
    assert_int_equal(entries[0].partition, 0);
    assert_int_equal(entries[0].offset, 42);
    assert_string_equal(entries[1].store, "orders");
    assert_int_equal(entries[1].partition, 7);
    assert_int_equal(entries[1].offset, 0);
    assert_string_equal(entries[2].store, "customer-totals_v2.by.id");
    assert_int_equal(entries[2].partition, INT32_MAX);
    assert_int_equal(entries[2].offset, INT64_MAX);
}

static void checkpoint_with_no_entries_round_trips(void **state) {
    char path[256];
    path_in(*state, ".checkpoint", path, sizeof(path));
    assert_int_equal(sl_checkpoint_write(path, NULL, 0, errstr, sizeof(errstr)), SL_OK);
    size_t count = 99;
    assert_int_equal(sl_checkpoint_read(path, NULL, 0, &count, errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(count, 0);
}

static void checkpoint_rewrite_replaces_the_file_and_leaves_no_temp(void **state) {
    char path[256], tmp_path[300];
    path_in(*state, ".checkpoint", path, sizeof(path));
    write_three_entries(path);
    const sl_checkpoint_entry newer = entry("orders", 0, 1000);
    assert_int_equal(sl_checkpoint_write(path, &newer, 1, errstr, sizeof(errstr)), SL_OK);
    sl_checkpoint_entry read_back[4];
    size_t count;
    assert_int_equal(sl_checkpoint_read(path, read_back, 4, &count, errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(count, 1);
    assert_int_equal(read_back[0].offset, 1000);
    snprintf(tmp_path, sizeof(tmp_path), "%s.tmp", path);
    assert_false(file_exists(tmp_path));
}

static void checkpoint_file_is_text_with_an_ieee_crc(void **state) {
    assert_int_equal(test_crc32("123456789", 9), 0xcbf43926u); /* the CRC-32 check value */
    char path[256];
    path_in(*state, ".checkpoint", path, sizeof(path));
    const sl_checkpoint_entry one = entry("orders", 3, 17);
    assert_int_equal(sl_checkpoint_write(path, &one, 1, errstr, sizeof(errstr)), SL_OK);
    char text[256];
    read_file(path, text, sizeof(text));
    const char *body = "sluice-checkpoint 1\norders 3 17\n";
    char expected[256];
    snprintf(expected, sizeof(expected), "%scrc32 %08x\n", body,
             (unsigned)test_crc32(body, strlen(body)));
    assert_string_equal(text, expected);
}

static void missing_checkpoint_is_not_found(void **state) {
    char path[256];
    path_in(*state, "no-such-checkpoint", path, sizeof(path));
    sl_checkpoint_entry entries[4];
    size_t count = 99;
    assert_int_equal(sl_checkpoint_read(path, entries, 4, &count, errstr, sizeof(errstr)),
                     SL_ERR_NOT_FOUND);
    assert_int_equal(count, 0);
}

static void checkpoint_with_any_flipped_byte_is_corrupt(void **state) {
    char path[256], original[1024], damaged[1024];
    path_in(*state, ".checkpoint", path, sizeof(path));
    write_three_entries(path);
    size_t len = read_file(path, original, sizeof(original));
    sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
    size_t count;
    for (size_t position = 0; position < len; position++) {
        for (unsigned flip = 0x01; flip <= 0x80; flip <<= 1) {
            memcpy(damaged, original, len);
            damaged[position] = (char)(damaged[position] ^ flip);
            write_file(path, damaged, len);
            sl_err err = sl_checkpoint_read(path, entries, SL_CHECKPOINT_MAX_ENTRIES, &count,
                                            errstr, sizeof(errstr));
            if (err != SL_ERR_IO)
                fail_msg("byte %zu ^ 0x%02x: %s, not SL_ERR_IO", position, flip, sl_err_name(err));
            assert_int_equal(count, 0);
        }
    }
}

static void truncated_checkpoint_is_corrupt(void **state) {
    char path[256], original[1024];
    path_in(*state, ".checkpoint", path, sizeof(path));
    write_three_entries(path);
    size_t len = read_file(path, original, sizeof(original));
    sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
    size_t count;
    for (size_t torn_len = 0; torn_len < len; torn_len++) {
        write_file(path, original, torn_len);
        sl_err err = sl_checkpoint_read(path, entries, SL_CHECKPOINT_MAX_ENTRIES, &count, errstr,
                                        sizeof(errstr));
        if (err != SL_ERR_IO)
            fail_msg("first %zu of %zu bytes: %s, not SL_ERR_IO", torn_len, len, sl_err_name(err));
    }
    /* trailing garbage after the checksum line is corruption too */
    memcpy(original + len, "x\n", 3);
    write_file(path, original, len + 2);
    assert_int_equal(sl_checkpoint_read(path, entries, SL_CHECKPOINT_MAX_ENTRIES, &count, errstr,
                                        sizeof(errstr)),
                     SL_ERR_IO);
}

static void malformed_entries_with_a_valid_crc_are_corrupt(void **state) {
    char path[256];
    path_in(*state, ".checkpoint", path, sizeof(path));
    const char *bodies[] = {
        "sluice-checkpoint 2\norders 0 1\n",                   /* unknown version */
        "sluice-checkpoint 1\norders -1 5\n",                  /* negative partition */
        "sluice-checkpoint 1\norders 1 -5\n",                  /* negative offset */
        "sluice-checkpoint 1\norders 1 5x\n",                  /* trailing junk */
        "sluice-checkpoint 1\norders 1  5\n",                  /* two spaces */
        "sluice-checkpoint 1\norders +1 5\n",                  /* sign */
        "sluice-checkpoint 1\norders 2147483648 5\n",          /* partition > INT32_MAX */
        "sluice-checkpoint 1\norders 1 9223372036854775808\n", /* offset overflow */
        "sluice-checkpoint 1\norders 1\n",                     /* missing offset */
        "sluice-checkpoint 1\nor/ders 1 5\n",                  /* bad store name */
        "sluice-checkpoint 1\n 1 5\n",                         /* empty store name */
        "sluice-checkpoint 1\n\n",                             /* empty line */
        "sluice-checkpoint 1\norders 1 5",                     /* no newline before the crc */
    };
    sl_checkpoint_entry entries[4];
    size_t count;
    for (size_t i = 0; i < N_KEYS(bodies); i++) {
        write_checkpoint_body(path, bodies[i]);
        sl_err err = sl_checkpoint_read(path, entries, 4, &count, errstr, sizeof(errstr));
        if (err != SL_ERR_IO)
            fail_msg("body %zu: %s, not SL_ERR_IO", i, sl_err_name(err));
    }
    write_checkpoint_body(path, "sluice-checkpoint 1\norders 1 5\n"); /* the control */
    assert_int_equal(sl_checkpoint_read(path, entries, 4, &count, errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(count, 1);
}

static void oversized_checkpoint_is_corrupt(void **state) {
    char path[256];
    path_in(*state, ".checkpoint", path, sizeof(path));
    size_t len = 1024 * 1024;
    char *big = malloc(len);
    assert_non_null(big);
    memset(big, 'a', len);
    write_file(path, big, len);
    free(big);
    sl_checkpoint_entry entries[4];
    size_t count;
    assert_int_equal(sl_checkpoint_read(path, entries, 4, &count, errstr, sizeof(errstr)),
                     SL_ERR_IO);
}

static void checkpoint_with_more_entries_than_room_is_full(void **state) {
    char path[256];
    path_in(*state, ".checkpoint", path, sizeof(path));
    write_three_entries(path);
    sl_checkpoint_entry entries[3];
    size_t count = 99;
    assert_int_equal(sl_checkpoint_read(path, entries, 2, &count, errstr, sizeof(errstr)),
                     SL_ERR_FULL);
    assert_int_equal(count, 0);
    assert_int_equal(sl_checkpoint_read(path, entries, 3, &count, errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(count, 3);
}

static void corrupt_checkpoint_is_corrupt_even_with_too_many_entries(void **state) {
    char path[256];
    path_in(*state, ".checkpoint", path, sizeof(path));
    write_checkpoint_body(path, "sluice-checkpoint 1\na 0 1\nb 0 2\nc 0 3\nd zero 4\n");
    sl_checkpoint_entry entries[2];
    size_t count;
    assert_int_equal(sl_checkpoint_read(path, entries, 2, &count, errstr, sizeof(errstr)),
                     SL_ERR_IO);
}

static void checkpoint_write_refuses_more_than_the_maximum(void **state) {
    char path[256];
    path_in(*state, ".checkpoint", path, sizeof(path));
    sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES + 1];
    for (size_t i = 0; i < SL_CHECKPOINT_MAX_ENTRIES + 1; i++)
        entries[i] = entry("s", (int32_t)i, (int64_t)i);
    assert_int_equal(
        sl_checkpoint_write(path, entries, SL_CHECKPOINT_MAX_ENTRIES + 1, errstr, sizeof(errstr)),
        SL_ERR_FULL);
    assert_false(file_exists(path));
    /* exactly the maximum, with the longest names, fits */
    for (size_t i = 0; i < SL_CHECKPOINT_MAX_ENTRIES; i++) {
        memset(entries[i].store, 'n', SL_CHECKPOINT_MAX_NAME);
        entries[i].store[SL_CHECKPOINT_MAX_NAME] = '\0';
        entries[i].partition = INT32_MAX;
        entries[i].offset = INT64_MAX;
    }
    assert_int_equal(
        sl_checkpoint_write(path, entries, SL_CHECKPOINT_MAX_ENTRIES, errstr, sizeof(errstr)),
        SL_OK);
    size_t count;
    assert_int_equal(sl_checkpoint_read(path, entries, SL_CHECKPOINT_MAX_ENTRIES, &count, errstr,
                                        sizeof(errstr)),
                     SL_OK);
    assert_int_equal(count, SL_CHECKPOINT_MAX_ENTRIES);
    assert_int_equal(strlen(entries[SL_CHECKPOINT_MAX_ENTRIES - 1].store), SL_CHECKPOINT_MAX_NAME);
}

static void checkpoint_rejects_invalid_store_names(void **state) {
    char path[256];
    path_in(*state, ".checkpoint", path, sizeof(path));
    const char *bad_names[] = {"",          "has space", "a/b",        "../up",
                               "tab\there", "new\nline", "caf\xc3\xa9"};
    for (size_t i = 0; i < N_KEYS(bad_names); i++) {
        const sl_checkpoint_entry bad = entry(bad_names[i], 0, 0);
        if (sl_checkpoint_write(path, &bad, 1, errstr, sizeof(errstr)) != SL_ERR_INVALID)
            fail_msg("store name '%s' was accepted", bad_names[i]);
    }
    /* a name filling the whole array has no terminator: too long */
    sl_checkpoint_entry unterminated = {.partition = 0, .offset = 0};
    memset(unterminated.store, 'a', sizeof(unterminated.store));
    assert_int_equal(sl_checkpoint_write(path, &unterminated, 1, errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    assert_false(file_exists(path));
}

static void checkpoint_rejects_negative_partitions_and_offsets(void **state) {
    char path[256];
    path_in(*state, ".checkpoint", path, sizeof(path));
    const sl_checkpoint_entry negative_partition = entry("s", -1, 0);
    const sl_checkpoint_entry negative_offset = entry("s", 0, -1);
    assert_int_equal(sl_checkpoint_write(path, &negative_partition, 1, errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
    assert_int_equal(sl_checkpoint_write(path, &negative_offset, 1, errstr, sizeof(errstr)),
                     SL_ERR_INVALID);
}

static void checkpoint_remove_deletes_and_a_missing_file_is_ok(void **state) {
    char path[256];
    path_in(*state, ".checkpoint", path, sizeof(path));
    assert_int_equal(sl_checkpoint_remove(path, errstr, sizeof(errstr)), SL_OK);
    write_three_entries(path);
    assert_int_equal(sl_checkpoint_remove(path, errstr, sizeof(errstr)), SL_OK);
    sl_checkpoint_entry entries[4];
    size_t count;
    assert_int_equal(sl_checkpoint_read(path, entries, 4, &count, errstr, sizeof(errstr)),
                     SL_ERR_NOT_FOUND);
}

/* ------------------------------------------------------------ pending writes */

static void pending_put_str(sl_store_pending *pending, const char *key, const char *value) {
    assert_int_equal(sl_store_pending_put(pending, key, strlen(key), value, strlen(value)), SL_OK);
}

static void assert_pending_value(sl_store *store, sl_store_pending *pending, const char *key,
                                 const char *expected) {
    char *value = NULL;
    size_t value_len = 0;
    sl_err err = sl_store_pending_get(store, pending, key, strlen(key), &value, &value_len, errstr,
                                      sizeof(errstr));
    if (err != SL_OK)
        fail_msg("pending get %s: %s", key, sl_err_name(err));
    assert_int_equal(value_len, strlen(expected));
    assert_memory_equal(value, expected, value_len);
    free(value);
}

static void assert_pending_missing(sl_store *store, sl_store_pending *pending, const char *key) {
    char *value = (char *)"untouched";
    size_t value_len = 99;
    assert_int_equal(sl_store_pending_get(store, pending, key, strlen(key), &value, &value_len,
                                          errstr, sizeof(errstr)),
                     SL_ERR_NOT_FOUND);
    assert_null(value);
    assert_int_equal(value_len, 0);
}

static void pending_writes_are_visible_to_get_and_win_over_the_store(void **state) {
    fixture *fx = *state;
    sl_store *store = open_store(fx, "s");
    put_str(store, "a", "committed-a");
    put_str(store, "b", "committed-b");
    sl_store_pending *pending = sl_store_pending_new();
    assert_non_null(pending);
    pending_put_str(pending, "b", "first");
    pending_put_str(pending, "b", "second");
    pending_put_str(pending, "c", "new-c");
    assert_int_equal(sl_store_pending_count(pending), 2);
    assert_pending_value(store, pending, "a", "committed-a"); /* falls through */
    assert_pending_value(store, pending, "b", "second");      /* latest write wins */
    assert_pending_value(store, pending, "c", "new-c");
    assert_pending_missing(store, pending, "d");
    /* Nothing reached RocksDB yet. */
    assert_stored_value(store, "b", "committed-b");
    assert_key_missing(store, "c");
    sl_store_pending_destroy(pending);
    sl_store_close(store);
}

static void pending_delete_shadows_the_committed_value(void **state) {
    fixture *fx = *state;
    sl_store *store = open_store(fx, "s");
    put_str(store, "a", "committed-a");
    sl_store_pending *pending = sl_store_pending_new();
    assert_non_null(pending);
    assert_int_equal(sl_store_pending_delete(pending, "a", 1), SL_OK);
    assert_pending_missing(store, pending, "a");
    assert_stored_value(store, "a", "committed-a");
    /* A put after the delete brings the key back, with an empty value too. */
    assert_int_equal(sl_store_pending_put(pending, "a", 1, "", 0), SL_OK);
    assert_pending_value(store, pending, "a", "");
    assert_int_equal(sl_store_pending_delete(pending, "a", 1), SL_OK);
    assert_int_equal(sl_store_pending_apply(store, pending, false, errstr, sizeof(errstr)), SL_OK);
    assert_key_missing(store, "a");
    assert_int_equal(sl_store_pending_count(pending), 0);
    sl_store_pending_destroy(pending);
    sl_store_close(store);
}

/* Many keys: the map grows (rehashes) and every key keeps its latest value;
 * binary keys that differ only after a NUL are distinct. */
static void pending_holds_many_keys_across_growth(void **state) {
    fixture *fx = *state;
    sl_store *store = open_store(fx, "s");
    sl_store_pending *pending = sl_store_pending_new();
    assert_non_null(pending);
    enum { N = 5000 };
    char key[32], value[32];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < N; i++) {
            int key_len = snprintf(key, sizeof(key), "k%c%d", '\0', i);
            int value_len = snprintf(value, sizeof(value), "v%d.%d", i, round);
            assert_int_equal(
                sl_store_pending_put(pending, key, (size_t)key_len, value, (size_t)value_len),
                SL_OK);
        }
    assert_int_equal(sl_store_pending_count(pending), N);
    for (int i = 0; i < N; i++) {
        int key_len = snprintf(key, sizeof(key), "k%c%d", '\0', i);
        char *got = NULL;
        size_t got_len = 0;
        assert_int_equal(sl_store_pending_get(store, pending, key, (size_t)key_len, &got, &got_len,
                                              errstr, sizeof(errstr)),
                         SL_OK);
        int value_len = snprintf(value, sizeof(value), "v%d.1", i);
        assert_int_equal(got_len, (size_t)value_len);
        assert_memory_equal(got, value, got_len);
        free(got);
    }
    sl_store_pending_destroy(pending);
    sl_store_close(store);
}

static void pending_range_merges_with_the_store_in_key_order(void **state) {
    fixture *fx = *state;
    sl_store *store = open_store(fx, "s");
    put_str(store, "b", "committed");
    put_str(store, "d", "committed");
    put_str(store, "f", "committed");
    put_str(store, "h", "committed");
    sl_store_pending *pending = sl_store_pending_new();
    assert_non_null(pending);
    pending_put_str(pending, "a", "p");   /* before the range */
    pending_put_str(pending, "c", "p");   /* between committed keys */
    pending_put_str(pending, "d", "new"); /* overwrites a committed key */
    assert_int_equal(sl_store_pending_delete(pending, "f", 1), SL_OK); /* hides one */
    assert_int_equal(sl_store_pending_delete(pending, "e", 1), SL_OK); /* deletes nothing */
    pending_put_str(pending, "g", "p");
    pending_put_str(pending, "z", "p"); /* past the range */
    sl_store_iter *iter = sl_store_pending_iter_range(store, pending, "b", 1, "i", 1);
    assert_non_null(iter);
    const char *expected_keys[] = {"b", "c", "d", "g", "h"};
    const char *expected_values[] = {"committed", "p", "new", "p", "committed"};
    const void *key, *value;
    size_t key_len, value_len, seen = 0;
    while (sl_store_iter_next(iter, &key, &key_len, &value, &value_len)) {
        assert_true(seen < 5);
        assert_int_equal(key_len, 1);
        assert_memory_equal(key, expected_keys[seen], 1);
        assert_int_equal(value_len, strlen(expected_values[seen]));
        assert_memory_equal(value, expected_values[seen], value_len);
        seen++;
    }
    assert_int_equal(seen, 5);
    assert_false(sl_store_iter_next(iter, &key, &key_len, &value, &value_len));
    assert_int_equal(sl_store_iter_error(iter, errstr, sizeof(errstr)), SL_OK);
    sl_store_iter_destroy(iter);

    /* Open bounds, a prefix-free order check: "a" < "ab" < "b". */
    pending_put_str(pending, "ab", "p");
    static const key_bytes all[] = {KEY("a"), KEY("ab"), KEY("b"), KEY("c"),
                                    KEY("d"), KEY("g"),  KEY("h"), KEY("z")};
    assert_iterates(sl_store_pending_iter_range(store, pending, NULL, 0, NULL, 0), all,
                    N_KEYS(all));
    sl_store_pending_destroy(pending);
    sl_store_close(store);
}

static void pending_range_with_only_tombstones_is_empty(void **state) {
    fixture *fx = *state;
    sl_store *store = open_store(fx, "s");
    put_str(store, "a", "committed");
    put_str(store, "b", "committed");
    sl_store_pending *pending = sl_store_pending_new();
    assert_non_null(pending);
    assert_int_equal(sl_store_pending_delete(pending, "a", 1), SL_OK);
    assert_int_equal(sl_store_pending_delete(pending, "b", 1), SL_OK);
    assert_iterates(sl_store_pending_iter_range(store, pending, NULL, 0, NULL, 0), NULL, 0);
    sl_store_pending_destroy(pending);
    sl_store_close(store);
}

/* RocksDB's key estimate counts every entry in the memtable, superseded
 * versions included: after the apply it must count one per key. */
static void pending_apply_writes_one_version_per_key(void **state) {
    fixture *fx = *state;
    sl_store *store = open_store(fx, "s");
    sl_store_pending *pending = sl_store_pending_new();
    assert_non_null(pending);
    char value[16];
    for (int i = 0; i < 100; i++) {
        snprintf(value, sizeof(value), "%d", i);
        pending_put_str(pending, "hot", value);
        pending_put_str(pending, "warm", value);
    }
    assert_int_equal(sl_store_pending_count(pending), 2);
    assert_int_equal(sl_store_pending_apply(store, pending, true, errstr, sizeof(errstr)), SL_OK);
    assert_int_equal(sl_store_estimate_keys(store), 2);
    assert_stored_value(store, "hot", "99");
    assert_stored_value(store, "warm", "99");
    assert_int_equal(sl_store_pending_count(pending), 0);
    assert_int_equal(sl_store_pending_bytes(pending), 0);
    /* Applied with the WAL off: durable once flushed. */
    assert_int_equal(sl_store_flush(store, errstr, sizeof(errstr)), SL_OK);
    sl_store_close(store);
    store = open_store(fx, "s");
    assert_stored_value(store, "hot", "99");
    sl_store_pending_destroy(pending);
    sl_store_close(store);
}

/* The size the engine compares with store.pending.max.bytes: grows with new
 * keys and longer values, not with overwrites of the same size, and drops
 * to zero on clear. */
static void pending_bytes_track_the_latest_values(void **state) {
    (void)state;
    sl_store_pending *pending = sl_store_pending_new();
    assert_non_null(pending);
    assert_int_equal(sl_store_pending_bytes(pending), 0);
    pending_put_str(pending, "key", "value-1");
    size_t one = sl_store_pending_bytes(pending);
    assert_true(one >= strlen("key") + strlen("value-1"));
    pending_put_str(pending, "key", "value-2");
    assert_int_equal(sl_store_pending_bytes(pending), one);
    char big[1000];
    memset(big, 'x', sizeof(big));
    assert_int_equal(sl_store_pending_put(pending, "key", 3, big, sizeof(big)), SL_OK);
    assert_int_equal(sl_store_pending_bytes(pending), one - strlen("value-2") + sizeof(big));
    pending_put_str(pending, "other", "value-1");
    assert_true(sl_store_pending_bytes(pending) > one - strlen("value-2") + sizeof(big));
    /* A bound of 64 KiB is passed after a bounded number of distinct writes. */
    char key[32];
    size_t writes = 0;
    while (sl_store_pending_bytes(pending) <= 64 * 1024) {
        int key_len = snprintf(key, sizeof(key), "k%zu", writes++);
        assert_int_equal(sl_store_pending_put(pending, key, (size_t)key_len, big, 100), SL_OK);
        assert_true(writes < 64 * 1024 / 100 + 1);
    }
    sl_store_pending_clear(pending);
    assert_int_equal(sl_store_pending_bytes(pending), 0);
    assert_int_equal(sl_store_pending_count(pending), 0);
    sl_store_pending_destroy(pending);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
int main(void) {
    const struct CMUnitTest tests[] = {
        T(batch_put_get_and_delete_round_trip),
        T(get_of_a_missing_key_is_not_found),
        T(empty_values_and_binary_keys_round_trip),
        T(batch_applies_all_or_nothing_and_count_and_clear_work),
        T(batch_copies_keys_and_values),
        T(range_iteration_includes_from_and_excludes_to),
        T(range_bounds_between_keys_and_at_0xff),
        T(range_with_null_bounds_is_open),
        T(prefix_iteration_stops_at_the_prefix_end),
        T(prefix_ending_in_0xff_stops_before_the_next_prefix),
        T(all_0xff_prefix_runs_to_the_last_key),
        T(empty_prefix_iterates_everything),
        T(iterator_sees_the_snapshot_taken_at_creation),
        T(data_survives_close_and_reopen),
        T(wal_disabled_writes_survive_reopen_after_flush),
        T(two_stores_share_one_env_and_its_cache),
        T(env_refuses_a_write_buffer_below_the_minimum),
        T(open_creates_missing_parent_directories),
        T(opening_an_open_store_again_fails_on_its_lock),
        T(open_fails_when_a_parent_is_a_file),
        T(destroy_files_removes_the_store),
        T(destroy_files_of_a_missing_path_is_ok),
        T(checkpoint_round_trips_several_entries),
        T(checkpoint_with_no_entries_round_trips),
        T(checkpoint_rewrite_replaces_the_file_and_leaves_no_temp),
        T(checkpoint_file_is_text_with_an_ieee_crc),
        T(missing_checkpoint_is_not_found),
        T(checkpoint_with_any_flipped_byte_is_corrupt),
        T(truncated_checkpoint_is_corrupt),
        T(malformed_entries_with_a_valid_crc_are_corrupt),
        T(oversized_checkpoint_is_corrupt),
        T(checkpoint_with_more_entries_than_room_is_full),
        T(corrupt_checkpoint_is_corrupt_even_with_too_many_entries),
        T(checkpoint_write_refuses_more_than_the_maximum),
        T(checkpoint_rejects_invalid_store_names),
        T(checkpoint_rejects_negative_partitions_and_offsets),
        T(checkpoint_remove_deletes_and_a_missing_file_is_ok),
        T(pending_writes_are_visible_to_get_and_win_over_the_store),
        T(pending_delete_shadows_the_committed_value),
        T(pending_holds_many_keys_across_growth),
        T(pending_range_merges_with_the_store_in_key_order),
        T(pending_range_with_only_tombstones_is_empty),
        T(pending_apply_writes_one_version_per_key),
        T(pending_bytes_track_the_latest_values),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
