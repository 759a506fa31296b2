/*
 * topology.h: the public API a topology is written against.
 *
 * A topology declares, top to bottom:
 *
 *   sources     input topics, each with an optional validator (decode and
 *               check; a record that fails goes to the dead-letter topic)
 *   stores      key-value state stores, each backed by a compacted changelog
 *               topic <application.id>-<store>-changelog
 *   processors  a C callback per record of one source
 *   sinks       output topics, written through sl_ctx_emit
 *   globals     stores filled from every partition of a topic, on every
 *               instance (read-only for processors)
 *   punctuators per-task timers on wall-clock or stream time
 *
 * Tasks: a store belongs to one source (its sub-topology). Task <source>_<p>
 * owns partition p of the source and partition p of the changelog of each of
 * the source's stores, so a changelog has the partition count of its source.
 * Processors of a source can use that source's stores (and every global
 * store). Two sources cannot share a store: librdkafka's C API cannot
 * register the custom assignor that would keep partition p of two topics on
 * one instance under cooperative rebalancing; join streams by repartitioning
 * one into the other's topic instead.
 *
 * The topology object is built once, before the engine starts, on one
 * thread; the engine borrows it and never changes it. Callbacks run on the
 * engine's loop thread, one record at a time per instance.
 */
#ifndef SLUICE_TOPOLOGY_H
#define SLUICE_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/base/error.h"

typedef struct sl_topology sl_topology;
typedef struct sl_ctx sl_ctx;

#define SL_TOPOLOGY_MAX_NAME  100 /* store, source, sink, processor names */
#define SL_TOPOLOGY_MAX_NODES 32  /* of each kind */

/* One consumed record; everything is borrowed for the duration of the
 * callback. key/value may be NULL (a tombstone or a keyless record). */
typedef struct sl_record {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms;
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    const void *message; /* the underlying rd_kafka_message_t, for headers */
} sl_record;

/* The last value of header `name` of a record: true and *value, *size set
 * (borrowed, valid during the callback; *value may be NULL for a null
 * header), or false if the record has no such header. */
bool sl_record_header(const sl_record *record, const char *name, const void **value, size_t *size);

/* Decode/validate a record of a source. Return false and write a short
 * reason (no payload bytes!) to `reason` to send the record to the
 * dead-letter topic instead of the processors. */
typedef bool sl_validate_fn(const sl_record *record, char *reason, size_t reason_size,
                            void *opaque);

/* Process one record. Return SL_OK (also after sl_ctx_reject). Any other
 * code is a processing failure: the record goes to the dead-letter topic
 * with the code's name as the reason, and the stream continues. */
typedef sl_err sl_process_fn(sl_ctx *ctx, const sl_record *record, void *opaque);

typedef enum sl_punctuation_type {
    SL_PUNCTUATE_WALL_CLOCK, /* every interval of real time */
    SL_PUNCTUATE_STREAM_TIME /* when the task's stream time (max record
                                timestamp seen) crosses the next multiple */
} sl_punctuation_type;

/* A timer of one task; `now_ms` is the wall clock or stream time that fired
 * it. Same context rules as a processor (it may read, write, emit). */
typedef sl_err sl_punctuate_fn(sl_ctx *ctx, int64_t now_ms, void *opaque);

sl_topology *sl_topology_new(void);
void sl_topology_destroy(sl_topology *topology);

/* Builders. Names are copied; opaque pointers are borrowed and must outlive
 * the engine. SL_ERR_INVALID for a bad or duplicate name or an unknown
 * reference, SL_ERR_FULL past SL_TOPOLOGY_MAX_NODES. */
sl_err sl_topology_add_source(sl_topology *topology, const char *name, const char *topic,
                              sl_validate_fn *validate, void *opaque);
/* Declare a source keyed: its producers place each record on the partition
 * that murmur2(key) selects over the topic's partition count (the Java
 * client's default partitioner and librdkafka's murmur2_random, which every
 * sluice producer uses). The engine then checks every keyed record before
 * the validator and the processors see it: one on another partition goes to
 * the dead-letter topic with reason "wrong_partition" and is not processed
 * (a key on two partitions would be two tasks, two stores: two truths).
 * Records without a key are not checked. Repartition sources are keyed from
 * the start (we produce them). SL_ERR_INVALID for an unknown source. */
#define SL_DLQ_WRONG_PARTITION "wrong_partition"
sl_err sl_topology_set_keyed(sl_topology *topology, const char *source);
sl_err sl_topology_add_store(sl_topology *topology, const char *store, const char *source);
sl_err sl_topology_add_processor(sl_topology *topology, const char *name, const char *source,
                                 sl_process_fn *process, void *opaque);
sl_err sl_topology_add_sink(sl_topology *topology, const char *name, const char *topic);
/* A repartition topic, <application.id>-<name>-repartition, created by the
 * engine with `partitions` partitions (0: as many as the first source). It
 * is both a sink named `name` (emit with a new key: the record moves to the
 * partition that owns that key) and a source named `name` (add processors
 * and stores to it like any source). Under exactly-once the write and the
 * read are part of the transactions like everything else. */
sl_err sl_topology_add_repartition(sl_topology *topology, const char *name, int partitions);

/* A topic the topology owns: the engine creates it at start if it is missing
 * (with `partitions` partitions and topic.replication.factor), before it
 * checks the sources. An existing topic must have `partitions` partitions,
 * and cleanup.policy=compact when `compacted`; otherwise sl_engine_start
 * fails with SL_ERR_TOPIC_MISMATCH and a message naming the difference. */
sl_err sl_topology_add_topic(sl_topology *topology, const char *topic, int partitions,
                             bool compacted);

/* The topology answers commands (sl_ctx_reply): the engine creates
 * <application.id>-replies with reply.partitions partitions if missing. */
sl_err sl_topology_add_replies(sl_topology *topology);

sl_err sl_topology_add_global_store(sl_topology *topology, const char *store, const char *topic);

/* The protobuf message type of a store's values (task or global), so the
 * state endpoint (GET /v1/stores/...) renders them as JSON; a store without
 * one is shown as base64 bytes. SL_ERR_INVALID for an unknown store. */
struct ProtobufCMessageDescriptor;
sl_err sl_topology_describe_store(sl_topology *topology, const char *store,
                                  const struct ProtobufCMessageDescriptor *value_type);
sl_err sl_topology_add_punctuator(sl_topology *topology, const char *name, sl_punctuation_type type,
                                  int64_t interval_ms, sl_punctuate_fn *punctuate, void *opaque);

/*
 * The processing context, valid only during a callback.
 *
 * Reads see this task's committed state plus the writes made since the last
 * commit (read-your-writes inside the transaction). Writes are recorded in
 * the changelog immediately (inside the open transaction under exactly-once)
 * and applied to RocksDB only after the transaction commits, so an abort or
 * a crash never leaves local state ahead of Kafka.
 */

/* Value of `key` in `store`: *value is malloc'd (caller frees), or
 * SL_ERR_NOT_FOUND. */
sl_err sl_ctx_get(sl_ctx *ctx, const char *store, const void *key, size_t key_len, char **value,
                  size_t *value_len);
sl_err sl_ctx_put(sl_ctx *ctx, const char *store, const void *key, size_t key_len,
                  const void *value, size_t value_len);
sl_err sl_ctx_delete(sl_ctx *ctx, const char *store, const void *key, size_t key_len);

/* Visit the entries of `store` with keys in [from, to) (NULL bound = open)
 * in key order, pending writes included. The visitor returns false to stop.
 * Pointers passed to the visitor are valid only during its call. */
typedef bool sl_visit_fn(const void *key, size_t key_len, const void *value, size_t value_len,
                         void *opaque);
sl_err sl_ctx_range(sl_ctx *ctx, const char *store, const void *from, size_t from_len,
                    const void *to, size_t to_len, sl_visit_fn *visit, void *opaque);
sl_err sl_ctx_prefix(sl_ctx *ctx, const char *store, const void *prefix, size_t prefix_len,
                     sl_visit_fn *visit, void *opaque);

/* Value of `key` in a global store (read-only, the instance's local copy). */
sl_err sl_ctx_global_get(sl_ctx *ctx, const char *store, const void *key, size_t key_len,
                         char **value, size_t *value_len);

/* Produce a record to a sink. partition < 0: the murmur2 partitioner by key. */
sl_err sl_ctx_emit(sl_ctx *ctx, const char *sink, const void *key, size_t key_len,
                   const void *value, size_t value_len, int32_t partition);

/* Emit through the record cache: like sl_ctx_emit (murmur2 partition of
 * `key`), but the record is kept in memory under (sink, cache_key) and a
 * later emit with the same pair replaces it; the engine produces what is
 * cached once, just before the commit, inside the transaction (an abort
 * drops it). For updates that carry the whole new state of cache_key (not a
 * delta): downstream sees at most one record per cache key per commit
 * interval. Bounded by cache.max.bytes (a full cache is flushed early, in
 * the same transaction). Counted in sluice_record_cache_emitted_total and
 * sluice_record_cache_coalesced_total. */
sl_err sl_ctx_emit_coalesced(sl_ctx *ctx, const char *sink, const void *cache_key,
                             size_t cache_key_len, const void *key, size_t key_len,
                             const void *value, size_t value_len);

/* Answer the command being processed: produce `value` with `key` to the
 * topic `reply_to`, in the same transaction as the command's other effects.
 * Only <application.id>-replies is ever written (the topology must have
 * called sl_topology_add_replies): an empty reply_to means nobody waits and
 * is SL_OK with nothing produced; any other topic is ignored, counted in
 * sluice_replies_ignored_total and also SL_OK (a producer cannot make us
 * write to an arbitrary topic). Produce errors are returned like
 * sl_ctx_emit's. */
sl_err sl_ctx_reply(sl_ctx *ctx, const char *reply_to, const void *key, size_t key_len,
                    const void *value, size_t value_len);

/* Trace context. A record that carries a valid W3C `traceparent` header
 * is processed as a span of that trace: every record emitted, replied or
 * sent to the dead-letter topic while processing it carries a
 * `traceparent` header of that span (a coalesced emit: of its last
 * update), and the engine's log lines name the trace. A record without the
 * header may name its trace in its payload (CommandMeta.traceparent from a
 * producer that sets no headers): sl_ctx_adopt_trace continues that trace
 * instead. Ignored when the record had the header or the value is not a
 * valid traceparent. */
void sl_ctx_adopt_trace(sl_ctx *ctx, const char *traceparent);

/* Send the current record to the dead-letter topic with this reason. */
void sl_ctx_reject(sl_ctx *ctx, const char *reason);

/* The task's partition and its stream time (max record timestamp seen). */
int32_t sl_ctx_partition(const sl_ctx *ctx);
/* Name of the source whose task runs the callback (punctuators run on the
 * tasks of every source: a punctuator uses this to act only on its own). */
const char *sl_ctx_source(const sl_ctx *ctx);
int64_t sl_ctx_stream_time(const sl_ctx *ctx);

/*
 * Reading a running instance's global stores, for the domain helpers that
 * the edges call outside the loop (a token check against the blacklist).
 * The engine implements it; the type is opaque here so that domain code
 * needs no engine header.
 */
typedef struct sl_engine sl_engine;

/* Read `key` from the GLOBAL store `store` (the instance's local copy), from
 * any thread (the HTTP threads check the token blacklist with it): *value is
 * malloc'd (caller frees). SL_ERR_NOT_FOUND for a missing key,
 * SL_ERR_UNAVAILABLE until the global stores have been bootstrapped (caught
 * up once with their topics), SL_ERR_INVALID for a name that is not a global
 * store. Must not race sl_engine_destroy (sl_app stops HTTP first). */
sl_err sl_engine_global_get(sl_engine *engine, const char *store, const void *key, size_t key_len,
                            char **value, size_t *value_len);

#endif
