/*
 * topology_int.h: the body of sl_topology, for the engine only.
 * Topology files use topology.h.
 */
#ifndef SLUICE_TOPOLOGY_INT_H
#define SLUICE_TOPOLOGY_INT_H

#include "processor/topology.h"

typedef struct sl_source_def {
    char name[SL_TOPOLOGY_MAX_NAME + 1];
    char topic[250]; /* for a repartition source: the repartition's name */
    bool repartition;
    int partitions; /* repartition only; 0: as many as the first source */
    bool keyed;     /* check that each key is on its murmur2 partition */
    sl_validate_fn *validate;
    void *opaque;
} sl_source_def;

typedef struct sl_processor_def {
    char name[SL_TOPOLOGY_MAX_NAME + 1];
    int source; /* index into sources */
    sl_process_fn *process;
    void *opaque;
} sl_processor_def;

typedef struct sl_sink_def {
    char name[SL_TOPOLOGY_MAX_NAME + 1];
    char topic[250]; /* for a repartition sink: the repartition's name */
    bool repartition;
} sl_sink_def;

typedef struct sl_global_def {
    char store[SL_TOPOLOGY_MAX_NAME + 1];
    char topic[250];
    const struct ProtobufCMessageDescriptor *type; /* of the values, or NULL */
} sl_global_def;

typedef struct sl_punctuator_def {
    char name[SL_TOPOLOGY_MAX_NAME + 1];
    sl_punctuation_type type;
    int64_t interval_ms;
    sl_punctuate_fn *punctuate;
    void *opaque;
} sl_punctuator_def;

/* A topic the topology owns (sl_topology_add_topic). */
typedef struct sl_topic_def {
    char topic[250];
    int partitions;
    bool compacted;
} sl_topic_def;

struct sl_topology {
    sl_topic_def topics[SL_TOPOLOGY_MAX_NODES];
    size_t n_topics;
    bool replies; /* sl_topology_add_replies */
    sl_source_def sources[SL_TOPOLOGY_MAX_NODES];
    size_t n_sources;
    char stores[SL_TOPOLOGY_MAX_NODES][SL_TOPOLOGY_MAX_NAME + 1];
    int store_source[SL_TOPOLOGY_MAX_NODES]; /* index into sources */
    const struct ProtobufCMessageDescriptor *store_types[SL_TOPOLOGY_MAX_NODES]; /* or NULL */
    size_t n_stores;
    sl_processor_def processors[SL_TOPOLOGY_MAX_NODES];
    size_t n_processors;
    sl_sink_def sinks[SL_TOPOLOGY_MAX_NODES];
    size_t n_sinks;
    sl_global_def globals[SL_TOPOLOGY_MAX_NODES];
    size_t n_globals;
    sl_punctuator_def punctuators[SL_TOPOLOGY_MAX_NODES];
    size_t n_punctuators;
};

/* Index of a store / sink / global by name, or -1. */
int sl_topology_store_index(const sl_topology *topology, const char *store);
int sl_topology_sink_index(const sl_topology *topology, const char *sink);
int sl_topology_global_index(const sl_topology *topology, const char *store);

#endif
