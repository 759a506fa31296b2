/* config_keys.c: the configuration keys read by the engine (engine.c: the
 * loop, stores, transactions, topics), owned here and registered with the
 * others by processor/cmd/config_groups.c. */
#include "processor/engine/config_keys.h"

#include <stddef.h>

static const char *const guarantee_choices[] = {"exactly_once_v2", "at_least_once", NULL};
static const char *const bool_choices[] = {"true", "false", NULL};

static const sl_config_prop props[] = {
    {"processing.guarantee", SL_CONFIG_ENUM, "exactly_once_v2", 0, 0, guarantee_choices,
     "exactly_once_v2: store changelogs, outputs and consumed offsets commit in one Kafka "
     "transaction, and RocksDB is updated only after it commits. at_least_once: flush, then "
     "commit offsets; a crash replays records, so handlers must be idempotent."},
    {"commit.interval.ms", SL_CONFIG_INT, "100", 1, 600000, NULL,
     "How often the open transaction (or the at-least-once offsets) is committed. Shorter: "
     "lower end-to-end latency for read_committed readers; longer: higher throughput."},
    {"poll.batch.records", SL_CONFIG_INT, "1000", 1, 1000000, NULL,
     "Records processed per loop iteration before restore, punctuation and commit get a "
     "turn."},
    {"restore.batch.records", SL_CONFIG_INT, "10000", 1, 10000000, NULL,
     "Changelog records applied per RocksDB write batch (WAL off) and per loop iteration "
     "while restoring; the consumer group is polled between batches."},
    {"store.pending.max.bytes", SL_CONFIG_INT, "67108864", 1024, 1099511627776LL, NULL,
     "Bound on the uncommitted store writes the instance holds in memory (the record cache "
     "of every task's stores: the latest value per key, applied to RocksDB after the "
     "commit). Past it the engine commits early, after the current record."},
    {"rocksdb.block.cache.bytes", SL_CONFIG_INT, "67108864", 1048576, 1099511627776LL, NULL,
     "Block cache shared by every store of the instance; memtables are charged to it too."},
    {"rocksdb.write.buffer.bytes", SL_CONFIG_INT, "33554432", 1048576, 1099511627776LL, NULL,
     "Upper bound of all memtables of all stores of the instance together."},
    {"topic.replication.factor", SL_CONFIG_INT, "-1", -1, 32767, NULL,
     "Replication factor of the topics sluice creates (changelogs, dead-letter topic); -1 "
     "uses the broker's default.replication.factor."},
    {"cache.max.bytes", SL_CONFIG_INT, "10485760", 1024, 1099511627776LL, NULL,
     "Memory of the record cache (coalescing emits, sl_ctx_emit_coalesced): the latest "
     "record per cache key is kept and produced once per commit; a full cache is flushed "
     "early, inside the same transaction."},
    {"num.standby.replicas", SL_CONFIG_INT, "1", 0, 16, NULL,
     "Standby replicas per stateful task: the instances that follow, in the ring of live "
     "instance ids, the task's owner keep a copy of its stores by reading its changelogs, so "
     "a task that moves to one of them restores only the tail instead of the whole "
     "changelog. No effect with one instance. Each replica costs the disk of the stores and "
     "the reading of their changelogs. The group's assignor does not know where the "
     "replicas are: with more than num.standby.replicas + 1 instances a moved task may land "
     "on an instance without one and restore in full."},
    {"acceptable.recovery.lag", SL_CONFIG_INT, "10000", 0, 1000000000, NULL,
     "A new instance (its state directory had no instance id) joins the groups only once its "
     "standby copy of every task the running instances own is within this many records of "
     "the changelogs' ends (Kafka Streams' KIP-441 warm-up): the current owners keep serving "
     "meanwhile, and a task that then moves here restores only that tail. The group's "
     "assignor, not sluice, picks which tasks move, so every task is copied; the copies the "
     "instance does not keep as standbys are closed once it runs (their directories stay on "
     "disk). A restarted instance (same state directory) does not warm up: it rejoins at "
     "once with its identity (group.static.membership)."},
    {"warmup.max.ms", SL_CONFIG_INT, "300000", 0, 86400000, NULL,
     "The longest a new instance warms up (acceptable.recovery.lag) before it joins the "
     "groups anyway. 0: join at once, no warm-up; the tasks that move to a new instance are "
     "then unavailable while they restore."},
    {"group.static.membership", SL_CONFIG_ENUM, "true", 0, 0, bool_choices,
     "true: each group consumer joins with group.instance.id = the instance id kept in the "
     "state directory (static membership), so an instance that crashes and is started again "
     "within the session timeout gets its partitions back without a rebalance. A static "
     "member fenced by another with its id (librdkafka 2.0's own rejoin after a broker bounce "
     "can do that, issue #3437, or a second instance on a copy of the state directory) closes "
     "that group's tasks and joins again with a new consumer, backing off from 500 ms to 60 s "
     "while it repeats (sluice_group_rejoins_total counts it). The session timeout defaults "
     "to 6 s (kafka.consumer.session.timeout.ms; heartbeats every 1 s, "
     "kafka.consumer.heartbeat.interval.ms), so the partitions of an instance that dies move "
     "within about 6 s. Heartbeats come from librdkafka's own thread, not the processing "
     "loop, so a slow record does not end the session; a longer timeout rides out longer "
     "network trouble and longer restarts but leaves a dead instance's partitions unserved "
     "longer."},
    {"group.leave.on.shutdown", SL_CONFIG_ENUM, "true", 0, 0, bool_choices,
     "On a graceful stop (SIGTERM), leave every group at once so the partitions move to the "
     "other instances now (scaling down). false: a static member (group.static.membership) "
     "keeps its place for the session timeout, for a restart in place (rolling upgrade) with "
     "no rebalance at all; its partitions wait while it is down."},
    {"reply.partitions", SL_CONFIG_INT, "4", 1, 4096, NULL,
     "Partitions of `<application.id>-replies`, the topic command outcomes are answered on "
     "(created if missing when the topology sends replies). Replies are keyed by the "
     "waiting gateway's reply_key."},
};

const sl_config_group sl_engine_config_keys = {"processor/engine", props,
                                               sizeof(props) / sizeof(props[0])};
