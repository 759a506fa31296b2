/* topology.c: building and validating a topology description. */
#include "processor/topology_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

sl_topology *sl_topology_new(void) {
    return calloc(1, sizeof(sl_topology));
}

void sl_topology_destroy(sl_topology *topology) {
    free(topology);
}

/* Names become parts of topic names and directories: keep them safe. */
static bool valid_name(const char *name, size_t max) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > max)
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return false;
    return strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static bool valid_topic(const char *topic) {
    return valid_name(topic, 249);
}

static int source_index(const sl_topology *topology, const char *source) {
    for (size_t i = 0; i < topology->n_sources; i++)
        if (strcmp(topology->sources[i].name, source) == 0)
            return (int)i;
    return -1;
}

int sl_topology_store_index(const sl_topology *topology, const char *store) {
    for (size_t i = 0; i < topology->n_stores; i++)
        if (strcmp(topology->stores[i], store) == 0)
            return (int)i;
    return -1;
}

int sl_topology_sink_index(const sl_topology *topology, const char *sink) {
    for (size_t i = 0; i < topology->n_sinks; i++)
        if (strcmp(topology->sinks[i].name, sink) == 0)
            return (int)i;
    return -1;
}

int sl_topology_global_index(const sl_topology *topology, const char *store) {
    for (size_t i = 0; i < topology->n_globals; i++)
        if (strcmp(topology->globals[i].store, store) == 0)
            return (int)i;
    return -1;
}

sl_err sl_topology_add_source(sl_topology *topology, const char *name, const char *topic,
                              sl_validate_fn *validate, void *opaque) {
    if (!valid_name(name, SL_TOPOLOGY_MAX_NAME) || !valid_topic(topic) ||
        source_index(topology, name) >= 0)
        return SL_ERR_INVALID;
    for (size_t i = 0; i < topology->n_sources; i++)
        if (strcmp(topology->sources[i].topic, topic) == 0)
            return SL_ERR_INVALID; /* one source per topic */
    if (topology->n_sources == SL_TOPOLOGY_MAX_NODES)
        return SL_ERR_FULL;
    sl_source_def *s = &topology->sources[topology->n_sources++];
    strcpy(s->name, name);   /* lengths checked by valid_name */
    strcpy(s->topic, topic); /* and valid_topic */
    s->validate = validate;
    s->opaque = opaque;
    return SL_OK;
}

sl_err sl_topology_set_keyed(sl_topology *topology, const char *source) {
    int src = source_index(topology, source);
    if (src < 0)
        return SL_ERR_INVALID;
    topology->sources[src].keyed = true;
    return SL_OK;
}

sl_err sl_topology_add_store(sl_topology *topology, const char *store, const char *source) {
    int src = source_index(topology, source);
    if (!valid_name(store, SL_TOPOLOGY_MAX_NAME) || src < 0 ||
        sl_topology_store_index(topology, store) >= 0 ||
        sl_topology_global_index(topology, store) >= 0)
        return SL_ERR_INVALID;
    if (topology->n_stores == SL_TOPOLOGY_MAX_NODES)
        return SL_ERR_FULL;
    topology->store_source[topology->n_stores] = src;
    strcpy(topology->stores[topology->n_stores++], store);
    return SL_OK;
}

sl_err sl_topology_add_processor(sl_topology *topology, const char *name, const char *source,
                                 sl_process_fn *process, void *opaque) {
    int src = source_index(topology, source);
    if (!valid_name(name, SL_TOPOLOGY_MAX_NAME) || src < 0 || !process)
        return SL_ERR_INVALID;
    for (size_t i = 0; i < topology->n_processors; i++)
        if (strcmp(topology->processors[i].name, name) == 0)
            return SL_ERR_INVALID;
    if (topology->n_processors == SL_TOPOLOGY_MAX_NODES)
        return SL_ERR_FULL;
    sl_processor_def *p = &topology->processors[topology->n_processors++];
    strcpy(p->name, name);
    p->source = src;
    p->process = process;
    p->opaque = opaque;
    return SL_OK;
}

sl_err sl_topology_add_sink(sl_topology *topology, const char *name, const char *topic) {
    if (!valid_name(name, SL_TOPOLOGY_MAX_NAME) || !valid_topic(topic) ||
        sl_topology_sink_index(topology, name) >= 0)
        return SL_ERR_INVALID;
    if (topology->n_sinks == SL_TOPOLOGY_MAX_NODES)
        return SL_ERR_FULL;
    sl_sink_def *s = &topology->sinks[topology->n_sinks++];
    strcpy(s->name, name);
    strcpy(s->topic, topic);
    return SL_OK;
}

sl_err sl_topology_add_repartition(sl_topology *topology, const char *name, int partitions) {
    if (partitions < 0 || partitions > 4096 || sl_topology_sink_index(topology, name) >= 0)
        return SL_ERR_INVALID;
    sl_err err = sl_topology_add_source(topology, name, name, NULL, NULL);
    if (err)
        return err;
    err = sl_topology_add_sink(topology, name, name);
    if (err) {
        topology->n_sources--;
        return err;
    }
    topology->sources[topology->n_sources - 1].repartition = true;
    topology->sources[topology->n_sources - 1].partitions = partitions;
    topology->sources[topology->n_sources - 1].keyed = true;
    topology->sinks[topology->n_sinks - 1].repartition = true;
    return SL_OK;
}

sl_err sl_topology_add_topic(sl_topology *topology, const char *topic, int partitions,
                             bool compacted) {
    if (!valid_topic(topic) || partitions < 1 || partitions > 4096)
        return SL_ERR_INVALID;
    for (size_t i = 0; i < topology->n_topics; i++)
        if (strcmp(topology->topics[i].topic, topic) == 0)
            return SL_ERR_INVALID;
    if (topology->n_topics == SL_TOPOLOGY_MAX_NODES)
        return SL_ERR_FULL;
    sl_topic_def *t = &topology->topics[topology->n_topics++];
    strcpy(t->topic, topic); /* length checked by valid_topic */
    t->partitions = partitions;
    t->compacted = compacted;
    return SL_OK;
}

sl_err sl_topology_add_replies(sl_topology *topology) {
    topology->replies = true;
    return SL_OK;
}

sl_err sl_topology_add_global_store(sl_topology *topology, const char *store, const char *topic) {
    if (!valid_name(store, SL_TOPOLOGY_MAX_NAME) || !valid_topic(topic) ||
        sl_topology_global_index(topology, store) >= 0 ||
        sl_topology_store_index(topology, store) >= 0)
        return SL_ERR_INVALID;
    if (topology->n_globals == SL_TOPOLOGY_MAX_NODES)
        return SL_ERR_FULL;
    sl_global_def *g = &topology->globals[topology->n_globals++];
    strcpy(g->store, store);
    strcpy(g->topic, topic);
    return SL_OK;
}

sl_err sl_topology_describe_store(sl_topology *topology, const char *store,
                                  const struct ProtobufCMessageDescriptor *value_type) {
    int s = sl_topology_store_index(topology, store);
    int g = sl_topology_global_index(topology, store);
    if (s >= 0)
        topology->store_types[s] = value_type;
    else if (g >= 0)
        topology->globals[g].type = value_type;
    else
        return SL_ERR_INVALID;
    return SL_OK;
}

sl_err sl_topology_add_punctuator(sl_topology *topology, const char *name, sl_punctuation_type type,
                                  int64_t interval_ms, sl_punctuate_fn *punctuate, void *opaque) {
    if (!valid_name(name, SL_TOPOLOGY_MAX_NAME) || !punctuate || interval_ms < 1 ||
        (type != SL_PUNCTUATE_WALL_CLOCK && type != SL_PUNCTUATE_STREAM_TIME))
        return SL_ERR_INVALID;
    if (topology->n_punctuators == SL_TOPOLOGY_MAX_NODES)
        return SL_ERR_FULL;
    sl_punctuator_def *p = &topology->punctuators[topology->n_punctuators++];
    strcpy(p->name, name);
    p->type = type;
    p->interval_ms = interval_ms;
    p->punctuate = punctuate;
    p->opaque = opaque;
    return SL_OK;
}
