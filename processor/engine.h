/*
 * engine.h: runs a topology: consumer group, tasks, state stores,
 * changelogs, restore, exactly-once commits, global stores, punctuation and
 * dead letters.
 *
 * Threading: every function runs on the one thread that owns the engine
 * (the instance's loop thread), except sl_engine_ready, sl_engine_stats and
 * sl_engine_global_get, which any thread may call.
 */
#ifndef SLUICE_ENGINE_H
#define SLUICE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "topology.h"

typedef struct sl_engine sl_engine;

/* Counters for tests, metrics and logs. Monotonic unless noted. */
typedef struct sl_engine_stats {
    uint64_t records_in;        /* records consumed from sources */
    uint64_t records_out;       /* records emitted to sinks */
    uint64_t records_dlq;       /* records sent to the dead-letter topic */
    uint64_t changelog_records; /* store writes sent to changelogs */
    uint64_t commits;           /* successful commits */
    uint64_t aborts;            /* aborted transactions */
    uint64_t producer_resets;   /* fatal producer errors recovered */
    uint64_t restored_records;  /* changelog records applied during restore */
    uint64_t restore_ms;        /* wall time spent restoring */
    uint64_t global_records;    /* records applied to global stores */
    uint64_t punctuations;      /* punctuator calls */
    int64_t tasks_assigned;     /* gauge */
    int64_t tasks_running;      /* gauge */
} sl_engine_stats;

/* A stopped engine for `topology` (borrowed; must outlive the engine) on the
 * cluster at `bootstrap`. `config` and `logger` are borrowed too. The state
 * directory <state.dir>/<application.id> must already be locked by the
 * caller (sl_app does). NULL + errstr on failure. */
sl_engine *sl_engine_new(const sl_config *config, const sl_topology *topology,
                         const char *bootstrap, const sl_logger *logger, char *errstr,
                         size_t errstr_size);

/* Publish the engine's metrics in `metrics` (borrowed; must outlive the
 * engine) instead of the engine's private registry. Only before
 * sl_engine_start; SL_ERR_INVALID afterwards. */
sl_err sl_engine_set_metrics(sl_engine *engine, sl_metrics *metrics);

/* Run on the embedded broker `cluster` (borrowed; must outlive the engine):
 * topics are created through its mock API, which answers no CreateTopics.
 * Only before sl_engine_start; SL_ERR_INVALID afterwards. */
sl_err sl_engine_set_embedded(sl_engine *engine, sl_embedded_cluster *cluster);

/* Check and create topics (changelogs, dead-letter topic), create the
 * clients, subscribe, and start bootstrapping global stores. A changelog
 * whose partition count differs from the sources', or a missing source
 * topic, is an error here. */
sl_err sl_engine_start(sl_engine *engine, char *errstr, size_t errstr_size);

/* One iteration of the loop: poll, restore, process, punctuate, and commit
 * when commit.interval.ms has passed. Waits at most timeout_ms for input.
 * Errors are handled inside (abort and rewind, producer reset); a returned
 * error is one the engine cannot recover from. */
sl_err sl_engine_poll(sl_engine *engine, int timeout_ms);

/* Finish the open transaction, checkpoint and close every task, leave the
 * consumer group. The engine can only be destroyed afterwards. */
sl_err sl_engine_close(sl_engine *engine);

void sl_engine_destroy(sl_engine *engine);

/* True once the engine joined the group, every assigned task is running
 * (restored) and every global store is bootstrapped. Any thread. */
bool sl_engine_ready(const sl_engine *engine);

/* Read `key` from the GLOBAL store `store` (the instance's local copy), from
 * any thread (the HTTP threads check the token blacklist with it): *value is
 * malloc'd (caller frees). SL_ERR_NOT_FOUND for a missing key,
 * SL_ERR_UNAVAILABLE until the global stores have been bootstrapped (caught
 * up once with their topics), SL_ERR_INVALID for a name that is not a global
 * store. Must not race sl_engine_destroy (sl_app stops HTTP first). */
sl_err sl_engine_global_get(sl_engine *engine, const char *store, const void *key, size_t key_len,
                            char **value, size_t *value_len);

/* A snapshot of the counters. Any thread. */
void sl_engine_stats_get(const sl_engine *engine, sl_engine_stats *stats);

#endif
