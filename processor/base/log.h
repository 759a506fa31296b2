/*
 * log.h: leveled, one-line-per-event logging through a caller's callback.
 *
 * Library code never prints: it formats a line and hands it to the callback
 * the program installed (main.c writes to stderr). Lines never contain record
 * payloads, passwords or full tokens; callers log keys and offsets only.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdbool.h>

typedef enum sl_log_level {
    SL_LOG_ERROR = 3, /* syslog numbering, as librdkafka uses */
    SL_LOG_WARN = 4,
    SL_LOG_INFO = 6,
    SL_LOG_DEBUG = 7,
} sl_log_level;

/* Receives one formatted line (no trailing newline). May be called from any
 * thread (the loop thread, librdkafka's threads, HTTP worker threads), so it
 * must be thread-safe. `component` is a short static tag ("kafka", "http"). */
typedef void sl_log_fn(void *opaque, sl_log_level level, const char *component, const char *line);

/* A logger is a small value: copy it freely. fn may be NULL (discard). */
typedef struct sl_logger {
    sl_log_fn *fn;
    void *opaque;
    sl_log_level level; /* lines above this level are dropped */
} sl_logger;

/* Format and emit one line if `level` passes the logger's threshold. Lines
 * longer than 1 KiB are truncated. A thread working for a trace
 * (sl_trace_set_current) ends the line with " trace=<trace id>". Any
 * thread. */
void sl_log(const sl_logger *logger, sl_log_level level, const char *component, const char *fmt,
            ...) __attribute__((format(printf, 4, 5)));

/* "error", "warn", "info", "debug". Static; never NULL. */
const char *sl_log_level_name(sl_log_level level);

/* Parse a level name as above; false if unknown. */
bool sl_log_level_parse(const char *name, sl_log_level *level);

#endif
