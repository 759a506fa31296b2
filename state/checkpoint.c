/*
 * checkpoint.c: the checkpoint files that say how far each store of a task
 * is restored (see state/checkpoint.h). Written atomically with a checksum.
 *
 * File format (text, at most CHECKPOINT_MAX_FILE bytes):
 *   sluice-checkpoint 1\n
 *   <store> <partition> <offset>\n      (one line per entry, decimal)
 *   crc32 <8 lowercase hex digits>\n    (IEEE CRC-32 of all preceding bytes)
 */
#include "state/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
