/*
 * members.h: who owns which partition, for routing interactive queries.
 *
 * Every instance writes one record to the compacted topic
 * "<application.id>-members" (one partition, created if missing): key = its
 * instance id, value = JSON {"instance", "address" (its advertised HTTP
 * host:port), "assignment": {"<source topic>": [partitions...]}}. It writes
 * on every assignment change (the engine's assignment version) and every
 * interval, and a tombstone when it shuts down cleanly. Every instance
 * reads the whole topic continuously into an in-memory table; an entry not
 * refreshed within the expiry is ignored (a crashed instance's record stays
 * in the topic until its tombstone or until it restarts, but stops counting
 * after expiry_ms). Ages come from record timestamps when the topic is
 * first read, then from arrival times.
 *
 * Every record (tombstones too) carries a MAC under the cluster secret in
 * the Kafka header "sluice-mac" (trust.h). A record without a valid one is
 * ignored, counted and logged: whoever can write to the topic but does not
 * hold the secret cannot claim partitions (and so receive forwarded logins)
 * nor remove an instance.
 *
 * Threading: one thread of its own (producer and consumer); lookups from
 * any thread.
 */
#ifndef SLUICE_MEMBERS_H
#define SLUICE_MEMBERS_H

#include <stddef.h>
#include <stdint.h>

#include "processor/base/config.h"
#include "processor/base/metrics.h"
#include "processor/gateway/trust.h"
#include "processor/engine/engine.h"
#include "processor/base/error.h"
#include "processor/base/log.h"

#define SL_MEMBERS_MAX         256 /* instances in the table */
#define SL_MEMBERS_MAX_ADDRESS 256
#define SL_MEMBERS_MAX_ID      64

typedef struct sl_members sl_members;

typedef struct sl_members_options {
    const char *topic;       /* "<application.id>-members" */
    const char *instance_id; /* this instance */
    const char *address;     /* advertised "host:port" */
    int interval_ms;         /* republish at least this often */
    int expiry_ms;           /* entries older than this are ignored */
    int replication_factor;  /* for creating the topic; -1: broker default */
    const sl_trust *trust;   /* signs and checks records (borrowed, required) */
    sl_counter *rejected;    /* records with no valid MAC (borrowed; NULL: none) */
} sl_members_options;

/* Create the topic if missing, read it from the beginning and start
 * publishing this instance's assignment, read from `engine` (borrowed; may
 * be NULL: an instance that owns nothing, e.g. a test observer). Strings
 * are copied; config and logger are borrowed. NULL + errstr on failure. */
sl_members *sl_members_new(const sl_config *config, const char *bootstrap,
                           const sl_members_options *options, sl_engine *engine,
                           const sl_logger *logger, char *errstr, size_t errstr_size);

/* Stop the thread, write this instance's tombstone (bounded wait), free
 * everything. NULL is fine. */
void sl_members_destroy(sl_members *members);

/* The live instance that owns partition `partition` of `topic`: its id and
 * advertised address (copied into buffers of SL_MEMBERS_MAX_ID and
 * SL_MEMBERS_MAX_ADDRESS bytes; either may be NULL). When two claim it (a
 * rebalance in flight) the most recently refreshed wins. SL_ERR_NOT_FOUND
 * if nobody live claims it. Any thread. */
sl_err sl_members_owner(sl_members *members, const char *topic, int32_t partition,
                        char *instance_id, char *address);

/* The instances that keep (or are building) a standby of partition
 * `partition` of `topic`, as the placement above plans it from the table:
 * up to `max` ids into ids, in ring order after the owner; the count (0
 * when nobody live owns it or num.standby.replicas is 0). Whether a
 * standby has caught up is known only to the instance keeping it. Any
 * thread. */
size_t sl_members_standbys(sl_members *members, const char *topic, int32_t partition,
                           char (*ids)[SL_MEMBERS_MAX_ID], size_t max);

/* Number of live instances (this one included once its record is read
 * back). Any thread. */
size_t sl_members_live(sl_members *members);

/* The live table as JSON {"members": [{"instance", "address", "age_ms",
 * "assignment": {...}}]}, malloc'd (caller frees); NULL when out of
 * memory. Any thread. */
char *sl_members_json(sl_members *members);

#endif
