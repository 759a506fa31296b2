/*
 * globals.c: global stores. Every instance reads all partitions of each
 * global topic into its own RocksDB (assign-only, read_committed, from the
 * checkpointed offsets), so a lookup is local. The engine is ready only
 * after every global store reached the end of its topic once
 * (bootstrapped); after that sl_engine_global_get may read from any thread.
 * A processor's lookup that misses first catches the store up to the
 * topic's ends as of now (globals_catch_up), so what was committed to the
 * topic before the record was produced is seen.
 */
#include <string.h>
#include <unistd.h>

#include "processor/base/clock.h"
#include "processor/engine/engine_int.h"
#include "processor/kafka/admin.h"

sl_err globals_start(sl_engine *engine, char *errstr, size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    if (topology->n_globals == 0) {
        engine->globals_bootstrapped = true;
        return SL_OK;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(16);
    sl_err err = SL_OK;
    for (size_t g = 0; g < topology->n_globals; g++) {
        global_state *gs = &engine->globals[g];
        int partitions = 0;
        err = sl_admin_topic_partitions(engine->producer, topology->globals[g].topic,
                                        ADMIN_TIMEOUT_MS, &partitions, errstr, errstr_size);
        if (err)
            break;
        if (!fits(snprintf(gs->path, sizeof(gs->path), "%s/global/%s", engine->state_path,
                           topology->globals[g].store),
                  sizeof(gs->path))) {
            err = sl_fail(errstr, errstr_size, SL_ERR_CONFIG, "state.dir too long");
            break;
        }
        char cp_path[PATH_MAX + 16];
        snprintf(cp_path, sizeof(cp_path), "%s.checkpoint", gs->path);
        sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
        size_t n_entries = 0;
        char why[256];
        bool have_cp = sl_checkpoint_read(cp_path, entries, SL_CHECKPOINT_MAX_ENTRIES, &n_entries,
                                          why, sizeof(why)) == SL_OK;
        gs->store = sl_store_open(engine->env, gs->path, errstr, errstr_size);
        gs->partitions = calloc((size_t)partitions, sizeof(global_partition));
        if (!gs->store || !gs->partitions) {
            err = SL_ERR_STORE;
            break;
        }
        gs->n_partitions = partitions;
        gs->caught_up_asked_ms = INT64_MIN;
        for (int p = 0; p < partitions; p++) {
            gs->partitions[p].partition = p;
            gs->partitions[p].next_offset = RD_KAFKA_OFFSET_BEGINNING;
            for (size_t e = 0; have_cp && e < n_entries; e++)
                if (entries[e].partition == p)
                    gs->partitions[p].next_offset = entries[e].offset;
            rd_kafka_topic_partition_list_add(list, topology->globals[g].topic, p)->offset =
                gs->partitions[p].next_offset;
        }
    }
    if (!err && rd_kafka_assign(engine->global_consumer, list))
        err = sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "cannot assign global topics");
    rd_kafka_topic_partition_list_destroy(list);
    return err;
}

void globals_checkpoint(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    char why[256];
    for (size_t g = 0; g < topology->n_globals; g++) {
        global_state *gs = &engine->globals[g];
        if (!gs->store)
            continue;
        sl_checkpoint_entry entries[SL_CHECKPOINT_MAX_ENTRIES];
        size_t n = 0;
        for (int p = 0; p < gs->n_partitions && n < SL_CHECKPOINT_MAX_ENTRIES; p++) {
            if (gs->partitions[p].next_offset < 0)
                continue;
            snprintf(entries[n].store, sizeof(entries[n].store), "%s", topology->globals[g].store);
            entries[n].partition = p;
            entries[n].offset = gs->partitions[p].next_offset;
            n++;
        }
        char cp_path[PATH_MAX + 16];
        snprintf(cp_path, sizeof(cp_path), "%s.checkpoint", gs->path);
        if (n > 0 && (sl_store_flush(gs->store, why, sizeof(why)) ||
                      sl_checkpoint_write(cp_path, entries, n, why, sizeof(why))))
            LOG(engine, SL_LOG_WARN, "global store %s: checkpoint: %s", topology->globals[g].store,
                why);
    }
}

void globals_poll(sl_engine *engine) {
    const sl_topology *topology = engine->topology;
    if (topology->n_globals == 0)
        return;
    sl_store_batch *batch = sl_store_batch_new();
    int last_global = -1;
    char why[256];
    for (int n = 0; n < engine->restore_batch; n++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(engine->global_consumer, 0);
        if (!m)
            break;
        const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "";
        int g = -1;
        for (size_t i = 0; i < topology->n_globals; i++)
            if (strcmp(topology->globals[i].topic, topic) == 0)
                g = (int)i;
        global_state *gs = g >= 0 ? &engine->globals[g] : NULL;
        if (gs && m->partition >= 0 && m->partition < gs->n_partitions) {
            if (g != last_global && last_global >= 0) {
                sl_store_apply(engine->globals[last_global].store, batch, false, why, sizeof(why));
                sl_store_batch_clear(batch);
            }
            last_global = g;
            global_partition *gp = &gs->partitions[m->partition];
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                gp->at_end = true;
                gp->next_offset = m->offset;
            } else if (!m->err && m->key) {
                if (m->payload)
                    sl_store_batch_put(batch, m->key, m->key_len, m->payload, m->len);
                else
                    sl_store_batch_delete(batch, m->key, m->key_len);
                gp->next_offset = m->offset + 1;
                sl_counter_add(engine->m.global_records, 1);
            }
        }
        rd_kafka_message_destroy(m);
    }
    if (last_global >= 0 && sl_store_batch_count(batch) > 0 &&
        sl_store_apply(engine->globals[last_global].store, batch, false, why, sizeof(why)))
        LOG(engine, SL_LOG_ERROR, "global store write: %s", why);
    sl_store_batch_destroy(batch);
    if (last_global >= 0)
        engine_notify_applied(engine);
    if (!engine->globals_bootstrapped) {
        bool all = true;
        for (size_t g = 0; all && g < topology->n_globals; g++)
            for (int p = 0; all && p < engine->globals[g].n_partitions; p++)
                all = engine->globals[g].partitions[p].at_end;
        if (all) {
            engine->globals_bootstrapped = true;
            atomic_store(&engine->globals_readable, true);
            globals_checkpoint(engine);
            LOG(engine, SL_LOG_INFO, "global stores bootstrapped");
        }
    }
}

/* How long a lookup that missed may wait for its global store to read up to
 * the ends it asked for (an open transaction on the topic holds the last
 * stable offset back until it ends). */
#define GLOBAL_CATCH_UP_MS 2000

static bool reached(const global_state *gs, const rd_kafka_topic_partition_list_t *ends) {
    for (int i = 0; i < ends->cnt; i++) {
        const rd_kafka_topic_partition_t *end = &ends->elems[i];
        if (!end->err && end->offset >= 0 && end->partition < gs->n_partitions &&
            gs->partitions[end->partition].next_offset < end->offset)
            return false;
    }
    return true;
}

/* The ends are the last stable offsets (ListOffsets with the consumer's
 * read_committed isolation, one request per leader): everything committed
 * when they were asked for lies below them. A record produced before the
 * last completed catch-up asked is answered from the store as it is, so a
 * run of lookups that miss (sends to ids that do not exist) costs one
 * round trip per catch-up, not one each. */
void globals_catch_up(sl_engine *engine, int g, int64_t produced_ms) {
    global_state *gs = &engine->globals[g];
    if (!engine->globals_bootstrapped || gs->caught_up_asked_ms >= produced_ms)
        return;
    const char *topic = engine->topology->globals[g].topic;
    int64_t asked = sl_clock_wall_ms();
    rd_kafka_topic_partition_list_t *ends = rd_kafka_topic_partition_list_new(gs->n_partitions);
    for (int p = 0; p < gs->n_partitions; p++)
        rd_kafka_topic_partition_list_add(ends, topic, p)->offset = RD_KAFKA_OFFSET_END;
    rd_kafka_resp_err_t code =
        rd_kafka_offsets_for_times(engine->global_consumer, ends, GLOBAL_CATCH_UP_MS);
    sl_counter_add(engine->m.global_catch_ups, 1);
    if (code) {
        LOG(engine, SL_LOG_WARN, "global store %s: cannot read the topic's ends: %s",
            engine->topology->globals[g].store, rd_kafka_err2str(code));
        rd_kafka_topic_partition_list_destroy(ends);
        return;
    }
    int64_t deadline = sl_clock_mono_ms() + GLOBAL_CATCH_UP_MS;
    while (!reached(gs, ends)) {
        if (sl_clock_mono_ms() >= deadline) {
            LOG(engine, SL_LOG_WARN, "global store %s: not at its topic's ends after %d ms",
                engine->topology->globals[g].store, GLOBAL_CATCH_UP_MS);
            rd_kafka_topic_partition_list_destroy(ends);
            return;
        }
        globals_poll(engine);
        if (!reached(gs, ends))
            usleep(1000);
    }
    gs->caught_up_asked_ms = asked;
    rd_kafka_topic_partition_list_destroy(ends);
}

void globals_free(sl_engine *engine) {
    for (size_t g = 0; g < SL_TOPOLOGY_MAX_NODES; g++) {
        sl_store_close(engine->globals[g].store);
        free(engine->globals[g].partitions);
    }
}

/* The open store named `store` for a reader on any thread. The store is
 * opened before globals_readable is set and closed only by
 * sl_engine_destroy, so a reader that saw the flag reads an open store;
 * RocksDB's Get and iterators (each on its own snapshot) are thread-safe. */
static sl_err readable_global(sl_engine *engine, const char *store, sl_store **out) {
    int g = sl_topology_global_index(engine->topology, store);
    if (g < 0)
        return SL_ERR_INVALID;
    if (!atomic_load(&engine->globals_readable))
        return SL_ERR_UNAVAILABLE;
    *out = engine->globals[g].store;
    return SL_OK;
}

sl_err sl_engine_global_get(sl_engine *engine, const char *store, const void *key, size_t key_len,
                            char **value, size_t *value_len) {
    *value = NULL;
    *value_len = 0;
    sl_store *st;
    sl_err err = readable_global(engine, store, &st);
    char why[256];
    return err ? err : sl_store_get(st, key, key_len, value, value_len, why, sizeof(why));
}

sl_err sl_engine_global_scan(sl_engine *engine, const char *store, const sl_query_range *range,
                             sl_query_visit_fn *visit, void *opaque, size_t *visited) {
    if (visited)
        *visited = 0;
    sl_store *st;
    sl_err err = readable_global(engine, store, &st);
    if (err)
        return err;
    char why[256];
    err = queries_scan_store(st, range, visit, opaque, visited, why, sizeof(why));
    if (err)
        LOG(engine, SL_LOG_WARN, "scan of global store %s: %s", store, why);
    return err;
}
