/*
 * error.h: the one error enum of sluice.
 *
 * Every fallible function in libsluice returns an sl_err (0 is success) or
 * returns NULL and fills a caller-supplied errstr. Each code has a stable
 * name (for logs and metrics labels) and a human message. Kafka errors keep
 * their class (fatal / abortable / retriable) so callers can react: recreate
 * the producer, abort and rewind, or retry.
 */
#ifndef SLUICE_ERROR_H
#define SLUICE_ERROR_H

#include <stddef.h>

/* X-macro: one row per code. The table drives the enum, the names and the
 * messages, so they cannot drift apart. */
#define SL_ERRORS(X)                                                                               \
    X(SL_OK, "success")                                                                            \
    X(SL_ERR_NOMEM, "out of memory")                                                               \
    X(SL_ERR_INVALID, "invalid argument")                                                          \
    X(SL_ERR_CONFIG, "invalid configuration")                                                      \
    X(SL_ERR_FULL, "buffer or queue is full")                                                      \
    X(SL_ERR_NOT_FOUND, "not found")                                                               \
    X(SL_ERR_TIMEOUT, "timed out")                                                                 \
    X(SL_ERR_IO, "input/output error")                                                             \
    X(SL_ERR_BUSY, "resource is in use by another process")                                        \
    X(SL_ERR_KAFKA, "Kafka error")                                                                 \
    X(SL_ERR_KAFKA_RETRIABLE, "retriable Kafka error")                                             \
    X(SL_ERR_KAFKA_ABORTABLE, "Kafka error that requires a transaction abort")                     \
    X(SL_ERR_KAFKA_FATAL, "fatal Kafka error: the client must be recreated")                       \
    X(SL_ERR_TOPIC_MISMATCH, "existing topic does not match its definition")                       \
    X(SL_ERR_HTTP, "HTTP server error")                                                            \
    X(SL_ERR_STORE, "state store error")                                                           \
    X(SL_ERR_CANCELLED, "cancelled before it ran (shutdown or the caller gave up)")                \
    X(SL_ERR_NOT_READY, "not ready yet (a store is restoring or the instance is starting)")        \
    X(SL_ERR_NOT_OWNER, "owned by another instance")                                               \
    X(SL_ERR_UNAVAILABLE, "not available yet (a global store is bootstrapping): retry later")

typedef enum sl_err {
#define SL_ERR_ENUM_(code, msg) code,
    SL_ERRORS(SL_ERR_ENUM_)
#undef SL_ERR_ENUM_
        SL_ERR__COUNT
} sl_err;

/* Stable symbolic name of an error code ("SL_ERR_TIMEOUT"); never NULL.
 * The returned string is static. Any thread. */
const char *sl_err_name(sl_err err);

/* Human-readable message for an error code; never NULL. Static. Any thread. */
const char *sl_err_msg(sl_err err);

/* Format "fmt, args" into errstr (at most errstr_size bytes, always
 * NUL-terminated when errstr_size > 0) and return err, so a failure site can
 * write `return sl_fail(errstr, size, SL_ERR_CONFIG, "bad %s", key);`.
 * errstr may be NULL. Any thread. */
sl_err sl_fail(char *errstr, size_t errstr_size, sl_err err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
