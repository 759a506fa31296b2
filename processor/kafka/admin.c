/* admin.c: CreateTopics / DescribeConfigs / metadata, synchronously. */
#include "processor/kafka/admin.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "processor/kafka/client.h"

/* Wait on `queue` for one event of `type`. The caller destroys the event. */
static rd_kafka_event_t *wait_event(rd_kafka_queue_t *queue, rd_kafka_event_type_t type,
                                    int timeout_ms) {
    rd_kafka_event_t *event = rd_kafka_queue_poll(queue, timeout_ms + 1000);
    if (event && rd_kafka_event_type(event) != type) {
        rd_kafka_event_destroy(event);
        return NULL;
    }
    return event;
}

static rd_kafka_AdminOptions_t *admin_options(rd_kafka_t *rk, rd_kafka_admin_op_t op,
                                              int timeout_ms) {
    rd_kafka_AdminOptions_t *options = rd_kafka_AdminOptions_new(rk, op);
    char why[256];
    if (options)
        rd_kafka_AdminOptions_set_request_timeout(options, timeout_ms, why, sizeof(why));
    return options;
}

sl_err sl_admin_topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms, int *partitions,
                                 char *errstr, size_t errstr_size) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt)
        return sl_fail(errstr, errstr_size, SL_ERR_KAFKA, "topic handle for %s: %s", topic,
                       rd_kafka_err2str(rd_kafka_last_error()));
    const struct rd_kafka_metadata *metadata = NULL;
    rd_kafka_resp_err_t code = rd_kafka_metadata(rk, 0, rkt, &metadata, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (code)
        return sl_fail(errstr, errstr_size, sl_kafka_classify(code, NULL), "metadata for %s: %s",
                       topic, rd_kafka_err2str(code));
    sl_err err = SL_OK;
    if (metadata->topic_cnt != 1 || metadata->topics[0].err)
        err = sl_fail(errstr, errstr_size, SL_ERR_NOT_FOUND, "topic %s does not exist", topic);
    else
        *partitions = metadata->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(metadata);
    return err;
}

sl_err sl_admin_describe_config(rd_kafka_t *rk, rd_kafka_ResourceType_t type, const char *name,
                                const char *key, char *out, size_t out_size, int timeout_ms,
                                char *errstr, size_t errstr_size) {
    sl_err err = SL_OK;
    rd_kafka_queue_t *queue = rd_kafka_queue_new(rk);
    rd_kafka_ConfigResource_t *resource = rd_kafka_ConfigResource_new(type, name);
    rd_kafka_AdminOptions_t *options =
        admin_options(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, timeout_ms);
    rd_kafka_event_t *event = NULL;
    if (!queue || !resource || !options) {
        err = sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    rd_kafka_DescribeConfigs(rk, &resource, 1, options, queue);
    event = wait_event(queue, RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT, timeout_ms);
    if (!event) {
        err = sl_fail(errstr, errstr_size, SL_ERR_TIMEOUT, "DescribeConfigs %s timed out", name);
        goto done;
    }
    if (rd_kafka_event_error(event)) {
        err = sl_fail(errstr, errstr_size, sl_kafka_classify(rd_kafka_event_error(event), NULL),
                      "DescribeConfigs %s: %s", name, rd_kafka_event_error_string(event));
        goto done;
    }
    size_t n_resources;
    const rd_kafka_ConfigResource_t **resources = rd_kafka_DescribeConfigs_result_resources(
        rd_kafka_event_DescribeConfigs_result(event), &n_resources);
    if (n_resources != 1 || rd_kafka_ConfigResource_error(resources[0])) {
        err =
            sl_fail(errstr, errstr_size, SL_ERR_NOT_FOUND, "DescribeConfigs %s: %s", name,
                    n_resources ? rd_kafka_ConfigResource_error_string(resources[0]) : "no result");
        goto done;
    }
    size_t n_entries;
    const rd_kafka_ConfigEntry_t **entries =
        rd_kafka_ConfigResource_configs(resources[0], &n_entries);
    err = sl_fail(errstr, errstr_size, SL_ERR_NOT_FOUND, "%s has no config %s", name, key);
    for (size_t i = 0; i < n_entries; i++) {
        if (strcmp(rd_kafka_ConfigEntry_name(entries[i]), key) != 0)
            continue;
        const char *value = rd_kafka_ConfigEntry_value(entries[i]);
        if (!value)
            value = "";
        if (snprintf(out, out_size, "%s", value) >= (int)out_size)
            err = sl_fail(errstr, errstr_size, SL_ERR_FULL, "%s of %s does not fit", key, name);
        else
            err = SL_OK;
        break;
    }
done:
    if (event)
        rd_kafka_event_destroy(event);
    if (options)
        rd_kafka_AdminOptions_destroy(options);
    if (resource)
        rd_kafka_ConfigResource_destroy(resource);
    if (queue)
        rd_kafka_queue_destroy(queue);
    return err;
}

sl_err sl_admin_check_partitions(rd_kafka_t *rk, const sl_topic_spec *spec, int timeout_ms,
                                 char *errstr, size_t errstr_size) {
    int partitions = 0;
    sl_err err =
        sl_admin_topic_partitions(rk, spec->name, timeout_ms, &partitions, errstr, errstr_size);
    if (err)
        return err;
    if (partitions != spec->partitions)
        return sl_fail(errstr, errstr_size, SL_ERR_TOPIC_MISMATCH,
                       "topic %s exists with %d partitions, expected %d", spec->name, partitions,
                       spec->partitions);
    return SL_OK;
}

/* The topic exists: does it match spec? */
static sl_err check_existing(rd_kafka_t *rk, const sl_topic_spec *spec, int timeout_ms,
                             char *errstr, size_t errstr_size) {
    sl_err err = sl_admin_check_partitions(rk, spec, timeout_ms, errstr, errstr_size);
    if (err)
        return err;
    for (const char *const *c = spec->configs; c && c[0]; c += 2) {
        char value[256];
        err = sl_admin_describe_config(rk, RD_KAFKA_RESOURCE_TOPIC, spec->name, c[0], value,
                                       sizeof(value), timeout_ms, errstr, errstr_size);
        if (err)
            return err;
        if (strcmp(value, c[1]) != 0)
            return sl_fail(errstr, errstr_size, SL_ERR_TOPIC_MISMATCH,
                           "topic %s exists with %s=%s, expected %s", spec->name, c[0], value,
                           c[1]);
    }
    return SL_OK;
}

sl_err sl_admin_ensure_topic(rd_kafka_t *rk, const sl_topic_spec *spec, int timeout_ms,
                             char *errstr, size_t errstr_size) {
    char why[512];
    sl_err err = SL_OK;
    rd_kafka_queue_t *queue = rd_kafka_queue_new(rk);
    rd_kafka_NewTopic_t *topic = rd_kafka_NewTopic_new(spec->name, spec->partitions,
                                                       spec->replication_factor, why, sizeof(why));
    rd_kafka_AdminOptions_t *options =
        admin_options(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS, timeout_ms);
    rd_kafka_event_t *event = NULL;
    if (!topic) {
        err = sl_fail(errstr, errstr_size, SL_ERR_INVALID, "topic %s: %s", spec->name, why);
        goto done;
    }
    if (!queue || !options) {
        err = sl_fail(errstr, errstr_size, SL_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (const char *const *c = spec->configs; c && c[0]; c += 2) {
        if (!c[1]) {
            err = sl_fail(errstr, errstr_size, SL_ERR_INVALID, "topic %s: config %s has no value",
                          spec->name, c[0]);
            goto done;
        }
        rd_kafka_NewTopic_set_config(topic, c[0], c[1]);
    }
    rd_kafka_CreateTopics(rk, &topic, 1, options, queue);
    event = wait_event(queue, RD_KAFKA_EVENT_CREATETOPICS_RESULT, timeout_ms);
    if (!event) {
        err = sl_fail(errstr, errstr_size, SL_ERR_TIMEOUT, "CreateTopics %s timed out", spec->name);
        goto done;
    }
    rd_kafka_resp_err_t code = rd_kafka_event_error(event);
    const char *message = rd_kafka_event_error_string(event);
    if (!code) {
        size_t n;
        const rd_kafka_topic_result_t **results =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &n);
        if (n == 1) {
            code = rd_kafka_topic_result_error(results[0]);
            message = rd_kafka_topic_result_error_string(results[0]);
        }
    }
    if (code == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        /* Created a moment ago by someone else (another instance starting at
         * the same time): its metadata may not have reached this broker yet,
         * so "not found" is retried for a while. */
        for (int attempt = 0; attempt < 50; attempt++) {
            err = check_existing(rk, spec, timeout_ms, errstr, errstr_size);
            if (err != SL_ERR_NOT_FOUND)
                break;
            usleep(200 * 1000);
        }
    } else if (code)
        err = sl_fail(errstr, errstr_size, sl_kafka_classify(code, NULL), "CreateTopics %s: %s",
                      spec->name, message ? message : rd_kafka_err2str(code));
done:
    if (event)
        rd_kafka_event_destroy(event);
    if (options)
        rd_kafka_AdminOptions_destroy(options);
    if (topic)
        rd_kafka_NewTopic_destroy(topic);
    if (queue)
        rd_kafka_queue_destroy(queue);
    return err;
}
