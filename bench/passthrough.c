/*
 * passthrough: the raw librdkafka baseline of the engine benchmark. It does
 * what the engine does for a record, minus the engine: consume an input
 * topic in a consumer group (read_committed, cooperative-sticky, manual
 * offsets) and produce each record unchanged, to the same partition of one
 * or more output topics, inside a transaction that also carries the consumed
 * offsets (send_offsets_to_transaction), committed every
 * --commit-interval-ms (100, the engine's default commit.interval.ms).
 * Producers are configured through sl_kafka_conf_new, as the engine's are
 * (murmur2_random partitioner, idempotence, acks=all), and use a delivery
 * report callback, as the engine does.
 *
 * usage: passthrough --bootstrap HOST:PORT --input TOPIC --output TOPIC
 *                    [--output TOPIC]... --group GROUP --records N
 *                    [--commit-interval-ms MS] [--timeout-s S]
 *
 * It exits 0 once it has consumed N records and committed them, and prints
 * one line with the records/s it reached: over its whole life (process start
 * to last commit) and from its first record to its last commit. Exit 1 on a
 * Kafka error it cannot recover from or when --timeout-s passes first, 2 on
 * bad usage, 3 when stopped by SIGINT/SIGTERM.
 *
 * Transaction state machine (one transaction at a time):
 *
 *   IDLE --first record (rd_kafka_begin_transaction)--> OPEN
 *   OPEN --interval passed or N reached (commit_batch)--> IDLE
 *   OPEN --abortable error (abort_batch: abort, rewind to the committed
 *          offsets, forget the batch)--> IDLE
 *   any  --fatal error--> exit 1
 *
 * Invariant: `committed` counts records whose transaction committed;
 * `pending` those of the open transaction. Only committed ones count toward N.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/support/benchutil.h"
#include "processor/kafka/client.h"

#define MAX_OUTPUTS    4
#define MAX_PARTITIONS 1024
#define POLL_BATCH     1000 /* the engine's default poll.batch.records */
#define TXN_TIMEOUT_MS 60000

static void stderr_log(void *opaque, sl_log_level level, const char *component, const char *line) {
    (void)opaque;
    fprintf(stderr, "passthrough %s %s: %s\n", sl_log_level_name(level), component, line);
}

static const sl_logger logger = {.fn = stderr_log, .opaque = NULL, .level = SL_LOG_WARN};

typedef struct passthrough {
    const char *bootstrap, *input, *group;
    const char *outputs[MAX_OUTPUTS];
    int n_outputs;
    long long records;
    long long commit_interval_ms;
    long long timeout_s;

    rd_kafka_t *consumer, *producer;
    bool txn_open;
    int64_t next_offset[MAX_PARTITIONS]; /* next offset to commit; -1: none */
    long long committed, pending, commits, aborts;
    long long delivery_failures; /* written by the delivery callback */
} passthrough;

/* The client opaque is the logger (sl_kafka_conf_new), so the passthrough
 * travels as each message's opaque. */
static void delivery_cb(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque) {
    (void)rk;
    (void)opaque;
    passthrough *pt = message->_private;
    if (message->err && pt->delivery_failures++ == 0)
        fprintf(stderr, "passthrough: delivery failed: %s\n", rd_kafka_err2str(message->err));
}

/* A client from sl_kafka_conf_new plus `settings` ({"key", "value", ...,
 * NULL}). NULL after printing why. */
static rd_kafka_t *new_client(const passthrough *pt, rd_kafka_type_t type,
                              const char *const *settings) {
    char errstr[512];
    rd_kafka_conf_t *conf =
        sl_kafka_conf_new(type, pt->bootstrap, NULL, &logger, errstr, sizeof(errstr));
    if (!conf) {
        fprintf(stderr, "passthrough: %s\n", errstr);
        return NULL;
    }
    for (const char *const *s = settings; s[0]; s += 2) {
        if (sl_kafka_conf_set(conf, s[0], s[1], errstr, sizeof(errstr))) {
            fprintf(stderr, "passthrough: %s\n", errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    if (type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(conf, delivery_cb);
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "passthrough: cannot create Kafka client: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Report a transactional error and say whether it can be recovered by
 * aborting (true) or is fatal / unexpected (false). Takes `error`. */
static bool recoverable(const char *what, rd_kafka_error_t *error) {
    bool abortable = rd_kafka_error_txn_requires_abort(error) && !rd_kafka_error_is_fatal(error);
    fprintf(stderr, "passthrough: %s: %s (%s)\n", what, rd_kafka_error_string(error),
            abortable ? "abortable" : "fatal");
    rd_kafka_error_destroy(error);
    return abortable;
}

/* Seek every assigned partition back to the group's committed offset. */
static bool rewind_to_committed(passthrough *pt) {
    rd_kafka_topic_partition_list_t *assignment = NULL;
    rd_kafka_resp_err_t code = rd_kafka_assignment(pt->consumer, &assignment);
    if (code) {
        fprintf(stderr, "passthrough: assignment: %s\n", rd_kafka_err2str(code));
        return false;
    }
    code = rd_kafka_committed(pt->consumer, assignment, TXN_TIMEOUT_MS);
    bool ok = code == 0;
    if (ok) {
        for (int i = 0; i < assignment->cnt; i++)
            if (assignment->elems[i].offset < 0)
                assignment->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_error_t *error =
            rd_kafka_seek_partitions(pt->consumer, assignment, TXN_TIMEOUT_MS);
        if (error) {
            fprintf(stderr, "passthrough: seek: %s\n", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            ok = false;
        }
    } else {
        fprintf(stderr, "passthrough: committed offsets: %s\n", rd_kafka_err2str(code));
    }
    rd_kafka_topic_partition_list_destroy(assignment);
    return ok;
}

static bool abort_batch(passthrough *pt) {
    pt->aborts++;
    rd_kafka_error_t *error = rd_kafka_abort_transaction(pt->producer, TXN_TIMEOUT_MS);
    pt->txn_open = false;
    if (error && !recoverable("abort_transaction", error))
        return false;
    pt->pending = 0;
    for (int p = 0; p < MAX_PARTITIONS; p++)
        pt->next_offset[p] = -1;
    return rewind_to_committed(pt);
}

/* Commit the open transaction with the consumed offsets. False only on an
 * error that cannot be recovered by aborting. */
static bool commit_batch(passthrough *pt) {
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(16);
    for (int p = 0; p < MAX_PARTITIONS; p++)
        if (pt->next_offset[p] >= 0)
            rd_kafka_topic_partition_list_add(offsets, pt->input, p)->offset = pt->next_offset[p];
    rd_kafka_consumer_group_metadata_t *group = rd_kafka_consumer_group_metadata(pt->consumer);
    rd_kafka_error_t *error = NULL;
    for (int attempt = 0; attempt < 5; attempt++) {
        if (error)
            rd_kafka_error_destroy(error);
        error = rd_kafka_send_offsets_to_transaction(pt->producer, offsets, group, TXN_TIMEOUT_MS);
        if (!error || !rd_kafka_error_is_retriable(error))
            break;
    }
    rd_kafka_consumer_group_metadata_destroy(group);
    rd_kafka_topic_partition_list_destroy(offsets);
    if (error)
        return recoverable("send_offsets_to_transaction", error) && abort_batch(pt);
    for (int attempt = 0; attempt < 5; attempt++) {
        error = rd_kafka_commit_transaction(pt->producer, TXN_TIMEOUT_MS);
        if (!error || !rd_kafka_error_is_retriable(error) || attempt == 4)
            break;
        rd_kafka_error_destroy(error);
    }
    if (error)
        return recoverable("commit_transaction", error) && abort_batch(pt);
    pt->txn_open = false;
    pt->committed += pt->pending;
    pt->pending = 0;
    pt->commits++;
    for (int p = 0; p < MAX_PARTITIONS; p++)
        pt->next_offset[p] = -1;
    return true;
}

/* Produce one record to every output, waiting out a full queue. */
static bool forward(passthrough *pt, const rd_kafka_message_t *m) {
    for (int o = 0; o < pt->n_outputs; o++) {
        for (int attempt = 0;; attempt++) {
            rd_kafka_resp_err_t code = rd_kafka_producev(
                pt->producer, RD_KAFKA_V_TOPIC(pt->outputs[o]), RD_KAFKA_V_PARTITION(m->partition),
                RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE(m->payload, m->len),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(pt), RD_KAFKA_V_END);
            if (!code)
                break;
            if (code != RD_KAFKA_RESP_ERR__QUEUE_FULL || attempt >= 600) {
                fprintf(stderr, "passthrough: produce to %s: %s\n", pt->outputs[o],
                        rd_kafka_err2str(code));
                return false;
            }
            rd_kafka_poll(pt->producer, 100); /* backpressure, as the engine does */
        }
    }
    return true;
}

static int usage(void) {
    fprintf(stderr, "usage: passthrough --bootstrap HOST:PORT --input TOPIC --output TOPIC "
                    "[--output TOPIC]... --group GROUP --records N [--commit-interval-ms MS] "
                    "[--timeout-s S]\n");
    return 2;
}

static int parse_args(passthrough *pt, int argc, char **argv) {
    pt->commit_interval_ms = 100;
    pt->timeout_s = 900;
    for (int i = 1; i < argc; i += 2) {
        const char *name = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!value)
            return usage();
        if (strcmp(name, "--bootstrap") == 0)
            pt->bootstrap = value;
        else if (strcmp(name, "--input") == 0)
            pt->input = value;
        else if (strcmp(name, "--group") == 0)
            pt->group = value;
        else if (strcmp(name, "--output") == 0 && pt->n_outputs < MAX_OUTPUTS)
            pt->outputs[pt->n_outputs++] = value;
        else if (strcmp(name, "--records") == 0) {
            if (!bench_parse_ll(value, 1, INT64_MAX / 2, &pt->records))
                return usage();
        } else if (strcmp(name, "--commit-interval-ms") == 0) {
            if (!bench_parse_ll(value, 1, 600000, &pt->commit_interval_ms))
                return usage();
        } else if (strcmp(name, "--timeout-s") == 0) {
            if (!bench_parse_ll(value, 1, 86400, &pt->timeout_s))
                return usage();
        } else
            return usage();
    }
    if (!pt->bootstrap || !pt->input || !pt->group || pt->n_outputs == 0 || pt->records == 0)
        return usage();
    return 0;
}

static bool start_clients(passthrough *pt) {
    char txn_id[300];
    if (snprintf(txn_id, sizeof(txn_id), "%s-passthrough", pt->group) >= (int)sizeof(txn_id)) {
        fprintf(stderr, "passthrough: group name too long\n");
        return false;
    }
    const char *const producer_settings[] = {
        "transactional.id", txn_id, "enable.idempotence", "true", "acks", "all", NULL};
    const char *const consumer_settings[] = {SL_KAFKA_GROUP_CONSUMER_SETTINGS(pt->group), NULL};
    pt->producer = new_client(pt, RD_KAFKA_PRODUCER, producer_settings);
    pt->consumer = pt->producer ? new_client(pt, RD_KAFKA_CONSUMER, consumer_settings) : NULL;
    if (!pt->consumer)
        return false;
    rd_kafka_error_t *error = rd_kafka_init_transactions(pt->producer, TXN_TIMEOUT_MS);
    if (error) {
        fprintf(stderr, "passthrough: init_transactions: %s\n", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return false;
    }
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, pt->input, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t code = rd_kafka_subscribe(pt->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (code) {
        fprintf(stderr, "passthrough: subscribe: %s\n", rd_kafka_err2str(code));
        return false;
    }
    return true;
}

/* The loop: returns the exit status. */
static int run(passthrough *pt, int64_t started_us, int64_t *first_record_us) {
    int64_t deadline_us = started_us + pt->timeout_s * 1000000;
    int64_t last_commit_us = bench_now_us();
    while (pt->committed < pt->records) {
        if (bench_stop_requested)
            return 3;
        if (bench_now_us() > deadline_us) {
            fprintf(stderr, "passthrough: %lld of %lld records after %lld s: giving up\n",
                    pt->committed, pt->records, pt->timeout_s);
            return 1;
        }
        for (int n = 0; n < POLL_BATCH && pt->committed + pt->pending < pt->records; n++) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(pt->consumer, n ? 0 : 100);
            if (!m)
                break;
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    fprintf(stderr, "passthrough: consumer: %s\n", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                continue;
            }
            if (m->partition < 0 || m->partition >= MAX_PARTITIONS) {
                fprintf(stderr, "passthrough: partition %d is beyond %d\n", m->partition,
                        MAX_PARTITIONS);
                rd_kafka_message_destroy(m);
                return 1;
            }
            if (!*first_record_us)
                *first_record_us = bench_now_us();
            if (!pt->txn_open) {
                rd_kafka_error_t *error = rd_kafka_begin_transaction(pt->producer);
                if (error) {
                    fprintf(stderr, "passthrough: begin_transaction: %s\n",
                            rd_kafka_error_string(error));
                    rd_kafka_error_destroy(error);
                    rd_kafka_message_destroy(m);
                    return 1;
                }
                pt->txn_open = true;
            }
            bool ok = forward(pt, m);
            pt->next_offset[m->partition] = m->offset + 1;
            pt->pending++;
            rd_kafka_message_destroy(m);
            if (!ok) {
                if (!abort_batch(pt))
                    return 1;
                break;
            }
        }
        rd_kafka_poll(pt->producer, 0);
        bool due = bench_now_us() - last_commit_us >= pt->commit_interval_ms * 1000 ||
                   pt->committed + pt->pending >= pt->records;
        if (due) {
            last_commit_us = bench_now_us();
            if (pt->txn_open && !commit_batch(pt))
                return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    int64_t started_us = bench_now_us();
    passthrough *pt = calloc(1, sizeof(*pt));
    if (!pt) {
        fprintf(stderr, "passthrough: out of memory\n");
        return 1;
    }
    for (int p = 0; p < MAX_PARTITIONS; p++)
        pt->next_offset[p] = -1;
    int status = parse_args(pt, argc, argv);
    if (status) {
        free(pt);
        return status;
    }
    if (!bench_catch_stop_signals()) {
        fprintf(stderr, "passthrough: sigaction: %s\n", strerror(errno));
        free(pt);
        return 1;
    }
    int64_t first_record_us = 0;
    status = start_clients(pt) ? run(pt, started_us, &first_record_us) : 1;
    int64_t finished_us = bench_now_us();
    if (status == 0) {
        double total_s = (double)(finished_us - started_us) / 1e6;
        double active_s = (double)(finished_us - first_record_us) / 1e6;
        printf("passthrough: %lld records to %d output%s in %.3f s (%.0f records/s); "
               "first record to last commit %.3f s (%.0f records/s); %lld commits, %lld aborts, "
               "%lld delivery failures\n",
               pt->committed, pt->n_outputs, pt->n_outputs == 1 ? "" : "s", total_s,
               (double)pt->committed / total_s, active_s, (double)pt->committed / active_s,
               pt->commits, pt->aborts, pt->delivery_failures);
        fflush(stdout);
    } else if (pt->txn_open) {
        rd_kafka_error_t *error = rd_kafka_abort_transaction(pt->producer, 10000);
        if (error)
            rd_kafka_error_destroy(error);
    }
    if (pt->consumer) {
        rd_kafka_resp_err_t code = rd_kafka_consumer_close(pt->consumer);
        if (code)
            fprintf(stderr, "passthrough: consumer close: %s\n", rd_kafka_err2str(code));
        rd_kafka_destroy(pt->consumer);
    }
    if (pt->producer)
        rd_kafka_destroy(pt->producer);
    free(pt);
    return status;
}
