/*
 * checkpoint.h: checkpoint files, one per task, saying how far each of its
 * stores is restored. Independent of RocksDB; implemented in checkpoint.c.
 */
#ifndef SLUICE_CHECKPOINT_H
#define SLUICE_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "processor/base/error.h"

/*
 * Checkpoint files: the changelog offset up to which each store of a task is
 * known to be in RocksDB (the offset of the next record to restore).
 * Written atomically (temp file, fsync, rename, fsync of the directory) with
 * a checksum, so a crash leaves either the old or the new file, and a torn
 * or corrupt file is detected (SL_ERR_IO) and treated as "no checkpoint".
 * Text: a version line, one "<store> <partition> <offset>" line per entry,
 * then "crc32 <hex>" (IEEE CRC-32, as zlib's) over everything before it.
 * Store names are 1..SL_CHECKPOINT_MAX_NAME bytes of [A-Za-z0-9._-];
 * partitions and offsets are non-negative.
 */
#define SL_CHECKPOINT_MAX_ENTRIES 64
#define SL_CHECKPOINT_MAX_NAME    200

typedef struct sl_checkpoint_entry {
    char store[SL_CHECKPOINT_MAX_NAME + 1];
    int32_t partition;
    int64_t offset;
} sl_checkpoint_entry;

/* Write `count` entries (borrowed) to `path`, replacing it atomically.
 * SL_ERR_INVALID for a bad store name or a negative partition or offset;
 * SL_ERR_FULL for more than SL_CHECKPOINT_MAX_ENTRIES entries; SL_ERR_IO if
 * it cannot be written: the old file, if any, is then intact, unless only
 * the final fsync of the directory failed (the new file is in place but may
 * not survive a crash). */
sl_err sl_checkpoint_write(const char *path, const sl_checkpoint_entry *entries, size_t count,
                           char *errstr, size_t errstr_size);
/* Reads at most `max` entries into `entries`, count in *count.
 * SL_ERR_NOT_FOUND if there is no file; SL_ERR_IO if it is corrupt (checked
 * before anything else: a corrupt file is never SL_ERR_FULL); SL_ERR_FULL if
 * it holds more than max entries. *count is 0 on any error, and `entries`
 * may then hold partial data. */
sl_err sl_checkpoint_read(const char *path, sl_checkpoint_entry *entries, size_t max, size_t *count,
                          char *errstr, size_t errstr_size);
/* Remove the file (missing is fine) and fsync its directory, so the removal
 * is durable when this returns. Under EOS a task removes its checkpoint
 * when it starts processing, so a crash afterwards forces a wipe + restore. */
sl_err sl_checkpoint_remove(const char *path, char *errstr, size_t errstr_size);

#endif
