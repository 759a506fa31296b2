/*
 * topics.c: the topics the engine uses, named from application.id and the
 * topology, and created or checked at start: the topics the topology owns,
 * the reply topic, the sources (which must exist; their partition counts
 * size the tasks), the repartition topics, the changelogs (compacted, as
 * many partitions as their source) and the dead-letter topic.
 */
#include <string.h>
#include <time.h>

#include "processor/engine/engine_int.h"
#include "processor/kafka/admin.h"

sl_err topics_name(sl_engine *engine, char *errstr, size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    bool names_fit =
        fits(snprintf(engine->dlq_topic, sizeof(engine->dlq_topic), "%s-dlq", engine->app_id),
             sizeof(engine->dlq_topic)) &&
        fits(snprintf(engine->reply_topic, sizeof(engine->reply_topic), "%s-replies",
                      engine->app_id),
             sizeof(engine->reply_topic));
    for (size_t i = 0; i < topology->n_sources; i++)
        names_fit &=
            fits(snprintf(engine->source_topic[i], sizeof(engine->source_topic[i]),
                          topology->sources[i].repartition ? "%s-%s-repartition" : "%.0s%s",
                          engine->app_id, topology->sources[i].topic),
                 sizeof(engine->source_topic[i]));
    for (size_t i = 0; i < topology->n_sinks; i++)
        names_fit &= fits(snprintf(engine->sink_topic[i], sizeof(engine->sink_topic[i]),
                                   topology->sinks[i].repartition ? "%s-%s-repartition" : "%.0s%s",
                                   engine->app_id, topology->sinks[i].topic),
                          sizeof(engine->sink_topic[i]));
    for (size_t s = 0; s < topology->n_stores; s++)
        names_fit &= fits(snprintf(engine->changelog_topic[s], sizeof(engine->changelog_topic[s]),
                                   "%s-%s-changelog", engine->app_id, topology->stores[s]),
                          sizeof(engine->changelog_topic[s]));
    if (!names_fit)
        return sl_fail(errstr, errstr_size, SL_ERR_CONFIG,
                       "application.id and store names make a topic name longer than 249 bytes");
    return SL_OK;
}

void sl_engine_use_embedded_cluster(sl_engine *engine, sl_embedded_cluster *cluster) {
    engine->embedded = cluster;
}

/* The embedded broker has no CreateTopics: create the topic there, or check
 * the partition count of the one that exists. (Not the other way round: a
 * metadata request for a missing topic auto-creates it with the mock's
 * default partition count.) */
static sl_err ensure_embedded_topic(sl_engine *engine, const sl_topic_spec *spec, char *errstr,
                                    size_t errstr_size) {
    bool created = false;
    sl_err err = sl_embedded_cluster_create_topic(engine->embedded, spec->name, spec->partitions,
                                                  &created, errstr, errstr_size);
    if (err || created)
        return err;
    return sl_admin_check_partitions(engine->producer, spec, ADMIN_TIMEOUT_MS, errstr,
                                     errstr_size);
}

static sl_err ensure_topic(sl_engine *engine, const sl_topic_spec *spec, char *errstr,
                           size_t errstr_size) {
    if (engine->embedded)
        return ensure_embedded_topic(engine, spec, errstr, errstr_size);
    return sl_admin_ensure_topic(engine->producer, spec, ADMIN_TIMEOUT_MS, errstr, errstr_size);
}

sl_err sl_engine_ensure_topic(sl_engine *engine, const sl_topic_spec *spec, char *errstr,
                              size_t errstr_size) {
    if (!engine->producer)
        return sl_fail(errstr, errstr_size, SL_ERR_INVALID, "the engine is not started");
    return ensure_topic(engine, spec, errstr, errstr_size);
}

static bool owned_topic(const sl_topology *topology, const char *topic) {
    for (size_t i = 0; i < topology->n_topics; i++)
        if (strcmp(topology->topics[i].topic, topic) == 0)
            return true;
    return false;
}

sl_err topics_prepare(sl_engine *engine, char *errstr, size_t errstr_size) {
    const sl_topology *topology = engine->topology;
    /* Topics the topology owns (its inputs and outputs) and the reply topic
     * first, so that the checks of the sources below find them. */
    static const char *const compact[] = {"cleanup.policy", "compact", NULL};
    for (size_t i = 0; i < topology->n_topics; i++) {
        sl_topic_spec spec = {.name = topology->topics[i].topic,
                              .partitions = topology->topics[i].partitions,
                              .replication_factor = engine->replication_factor,
                              .configs = topology->topics[i].compacted ? compact : NULL};
        sl_err err = ensure_topic(engine, &spec, errstr, errstr_size);
        if (err)
            return err;
    }
    if (topology->replies) {
        sl_topic_spec spec = {.name = engine->reply_topic,
                              .partitions =
                                  (int)sl_config_get_int(engine->config, "reply.partitions"),
                              .replication_factor = engine->replication_factor};
        sl_err err = ensure_topic(engine, &spec, errstr, errstr_size);
        if (err)
            return err;
    }
    /* Input topics first (they must exist), then the repartition topics the
     * engine owns, which default to the first input's partition count. */
    int default_partitions = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < topology->n_sources; i++) {
            const sl_source_def *def = &topology->sources[i];
            if (def->repartition != (pass == 1))
                continue;
            char why[512] = "";
            int partitions = 0;
            sl_err err;
            if (def->repartition) {
                partitions = def->partitions ? def->partitions : default_partitions;
                sl_topic_spec spec = {.name = engine->source_topic[i],
                                      .partitions = partitions > 0 ? partitions : 1,
                                      .replication_factor = engine->replication_factor};
                err = ensure_topic(engine, &spec, why, sizeof(why));
                partitions = spec.partitions;
            } else {
                err = sl_admin_topic_partitions(engine->producer, engine->source_topic[i],
                                                ADMIN_TIMEOUT_MS, &partitions, why, sizeof(why));
                /* A topic the topology just created can be missing from
                 * the metadata for a moment: wait for it (bounded). */
                for (int attempt = 0; err == SL_ERR_NOT_FOUND && attempt < 50 &&
                                      owned_topic(topology, engine->source_topic[i]);
                     attempt++) {
                    struct timespec pause = {0, 200 * 1000000};
                    nanosleep(&pause, NULL);
                    err = sl_admin_topic_partitions(engine->producer, engine->source_topic[i],
                                                    ADMIN_TIMEOUT_MS, &partitions, why,
                                                    sizeof(why));
                }
                if (err == SL_ERR_NOT_FOUND)
                    snprintf(why, sizeof(why), "does not exist (create it first)");
            }
            if (err)
                return sl_fail(errstr, errstr_size, err, "source topic %s: %s",
                               engine->source_topic[i], why);
            if (partitions > MAX_PARTITIONS)
                return sl_fail(errstr, errstr_size, SL_ERR_INVALID,
                               "source topic %s has %d partitions (max %d)",
                               engine->source_topic[i], partitions, MAX_PARTITIONS);
            if (!default_partitions)
                default_partitions = partitions;
            engine->source_partitions[i] = partitions;
            engine->tasks[i] = calloc((size_t)partitions, sizeof(task *));
            if (!engine->tasks[i])
                return sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        }
    }
    for (size_t s = 0; s < topology->n_stores; s++) {
        sl_topic_spec spec = {.name = engine->changelog_topic[s],
                              .partitions = engine->source_partitions[topology->store_source[s]],
                              .replication_factor = engine->replication_factor,
                              .configs = compact};
        sl_err err = ensure_topic(engine, &spec, errstr, errstr_size);
        if (err)
            return err;
    }
    sl_topic_spec dlq = {.name = engine->dlq_topic,
                         .partitions = engine->source_partitions[0],
                         .replication_factor = engine->replication_factor};
    return ensure_topic(engine, &dlq, errstr, errstr_size);
}

