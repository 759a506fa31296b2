/*
 * trace.h: W3C Trace Context (https://www.w3.org/TR/trace-context/) for a
 * trace that crosses HTTP, Kafka and the Postgres sink.
 *
 * A traceparent is "00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>".
 * Every hop that does work starts a span of its own: it keeps the trace id
 * and the flags it received and puts its own span id in the traceparent it
 * passes on (sl_trace_child). Where nothing valid arrives, a new trace
 * begins (not sampled: flags 00).
 *
 * The current trace of a thread (sl_trace_set_current) is what the thread
 * is working for: the HTTP server sets it for the duration of a handler, the
 * engine for the duration of a record's processing; log lines (sl_log) name
 * its trace id, and commands produced on that thread carry it.
 */
#ifndef SLUICE_TRACE_H
#define SLUICE_TRACE_H

#include <stdbool.h>
#include <stddef.h>

/* Length of a version-00 traceparent, without its NUL. */
#define SL_TRACEPARENT_LEN 55
/* Length of the trace id (hex). */
#define SL_TRACE_ID_LEN 32

/* The header and Kafka header name. */
#define SL_TRACEPARENT_HEADER "traceparent"

/* Whether `text` (len bytes, no NUL needed) is a traceparent this version
 * of the spec accepts: version 00 exactly, or a later version (not ff)
 * whose first 55 characters parse as version 00's and are followed by
 * nothing or by '-'. Lower-case hex only; an all-zero trace id or parent id
 * is invalid. */
bool sl_traceparent_valid(const char *text, size_t len);

/* A traceparent for the work done here: the trace id and the sampled flag
 * of `parent` (len bytes) when it is valid, a new random trace id and flags
 * 00 otherwise, and a new random span id. `out` gets a version-00
 * traceparent and a NUL. Any thread; never fails. */
void sl_trace_child(const char *parent, size_t len, char out[SL_TRACEPARENT_LEN + 1]);

/* The trace this thread works for: a copy of `traceparent` (NULL or an
 * invalid one clears it). */
void sl_trace_set_current(const char *traceparent);
/* This thread's current traceparent, or NULL. Valid until the next set. */
const char *sl_trace_current(void);

#endif
