/*
 * fuzz_checkpoint.c: sl_checkpoint_read on untrusted files.
 *
 * Each input is read as a checkpoint file twice: as it is (mostly rejected
 * by the checksum) and with a valid "crc32 <hex>" line appended, so the
 * fuzzer reaches the entry parser behind the checksum. Each is read with
 * room for SL_CHECKPOINT_MAX_ENTRIES, 1 and 0 entries (exactly sized heap
 * arrays, so a write past `max` is an ASan report), and the answers must
 * agree: a corrupt file is SL_ERR_IO whatever the room, SL_ERR_FULL means
 * "valid but more entries than room". A file that reads back is written
 * with sl_checkpoint_write and read again: same entries.
 */
#include <stdbool.h>
#include <string.h>

#include "state/checkpoint.h"
#include "tests/fuzz/fuzz.h"

/* The IEEE CRC-32 (zlib's), as the checkpoint format specifies. */
static uint32_t crc32_ieee(const uint8_t *data, size_t len) {
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xffffffffu;
}

typedef struct read_result {
    sl_err err;
    size_t count;
    sl_checkpoint_entry *entries; /* malloc'd, `max` of them (NULL if 0) */
} read_result;

static read_result read_checkpoint(const char *path, size_t max) {
    read_result result = {.entries = max ? malloc(max * sizeof(sl_checkpoint_entry)) : NULL};
    FUZZ_CHECK(max == 0 || result.entries != NULL);
    char errstr[512] = "";
    result.count = 12345; /* must be overwritten */
    result.err =
        sl_checkpoint_read(path, result.entries, max, &result.count, errstr, sizeof(errstr));
    FUZZ_CHECK(result.err == SL_OK || result.err == SL_ERR_IO || result.err == SL_ERR_FULL);
    FUZZ_CHECK(result.err == SL_OK || (result.count == 0 && errstr[0] != '\0'));
    FUZZ_CHECK(result.count <= max);
    return result;
}

static bool valid_entry(const sl_checkpoint_entry *entry) {
    size_t len = strnlen(entry->store, sizeof(entry->store));
    if (len == 0 || len > SL_CHECKPOINT_MAX_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = entry->store[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return entry->partition >= 0 && entry->offset >= 0;
}

static bool same_entries(const sl_checkpoint_entry *a, const sl_checkpoint_entry *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i].store, b[i].store) != 0 || a[i].partition != b[i].partition ||
            a[i].offset != b[i].offset)
            return false;
    return true;
}

/* What sl_checkpoint_read answers for a valid file of `count` entries when
 * it has room for `max`. */
static sl_err expected_for(sl_err full_read, size_t count, size_t max) {
    if (full_read != SL_OK)
        return full_read;
    return count <= max ? SL_OK : SL_ERR_FULL;
}

static void write_and_read_back(const read_result *full) {
    char dir[] = "/tmp/sluice-fuzz-checkpoint-XXXXXX";
    FUZZ_CHECK(mkdtemp(dir) != NULL);
    char path[sizeof(dir) + 16], errstr[512];
    snprintf(path, sizeof(path), "%s/checkpoint", dir);
    FUZZ_CHECK(sl_checkpoint_write(path, full->entries, full->count, errstr, sizeof(errstr)) ==
               SL_OK);
    read_result again = read_checkpoint(path, SL_CHECKPOINT_MAX_ENTRIES);
    FUZZ_CHECK(again.err == SL_OK && again.count == full->count);
    FUZZ_CHECK(same_entries(again.entries, full->entries, full->count));
    free(again.entries);
    FUZZ_CHECK(unlink(path) == 0 && rmdir(dir) == 0);
}

static void check_file(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof(path));
    FUZZ_CHECK(fd >= 0);
    read_result full = read_checkpoint(path, SL_CHECKPOINT_MAX_ENTRIES);
    read_result one = read_checkpoint(path, 1);
    read_result none = read_checkpoint(path, 0);
    close(fd);

    /* With max entries of room, SL_ERR_FULL needs more than that in the
     * file; the other reads must agree with the full one. */
    size_t count = full.count;
    if (full.err == SL_ERR_FULL) {
        FUZZ_CHECK(one.err == SL_ERR_FULL && none.err == SL_ERR_FULL);
    } else {
        FUZZ_CHECK(one.err == expected_for(full.err, count, 1));
        FUZZ_CHECK(none.err == expected_for(full.err, count, 0));
    }
    if (full.err == SL_OK) {
        for (size_t i = 0; i < count; i++)
            FUZZ_CHECK(valid_entry(&full.entries[i]));
        if (one.err == SL_OK)
            FUZZ_CHECK(same_entries(one.entries, full.entries, one.count));
        write_and_read_back(&full);
    }
    free(full.entries);
    free(one.entries);
    free(none.entries);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_file(data, size);

    /* The same bytes behind a valid checksum line. */
    char crc_line[32];
    int crc_len =
        snprintf(crc_line, sizeof(crc_line), "crc32 %08x\n", (unsigned)crc32_ieee(data, size));
    uint8_t *signed_file = malloc(size + (size_t)crc_len);
    FUZZ_CHECK(signed_file != NULL);
    if (size)
        memcpy(signed_file, data, size);
    memcpy(signed_file + size, crc_line, (size_t)crc_len);
    check_file(signed_file, size + (size_t)crc_len);
    free(signed_file);
    return 0;
}
