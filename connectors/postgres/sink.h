/*
 * sink.h: the Postgres sink: an exactly-once, batched, rebuildable SQL copy
 * of the users and messages event topics (`sluice sink`).
 *
 * The sink is its own consumer group (pg.sink.group.id, default
 * "<application.id>-pgsink"): it reads users.events and dialogs.events with
 * read_committed and writes rows plus the consumed offsets in one Postgres
 * transaction per batch. Postgres, not Kafka, holds its position. See the
 * design note at the top of sink.c and docs/ARCHITECTURE.md section 7.
 *
 * Threading: sl_pgsink_run is the sink's loop and runs on the caller's thread;
 * librdkafka's and the HTTP server's threads do their I/O. The other
 * functions are called from the thread that owns the sink.
 */
#ifndef SLUICE_PGSINK_H
#define SLUICE_PGSINK_H

#include <signal.h>
#include <stddef.h>

#include "processor/base/config.h"
#include "processor/base/error.h"
#include "processor/base/log.h"

typedef struct sl_pgsink sl_pgsink;

typedef enum sl_pgsink_mode {
    SL_PGSINK_RUN,     /* consume as the group, from the offsets stored in Postgres */
    SL_PGSINK_REBUILD, /* build new tables from the beginning, swap, then run */
} sl_pgsink_mode;

typedef enum sl_pgsink_state {
    SL_PGSINK_STARTING,
    SL_PGSINK_RUNNING,
    SL_PGSINK_PAUSED_FOR_POSTGRES,
    SL_PGSINK_REBUILDING,
} sl_pgsink_state;

/* "starting", "running", "paused_for_postgres", "rebuilding". Static. */
const char *sl_pgsink_state_name(sl_pgsink_state state);

/* Prepare a sink: check the configuration (pg.dsn, bootstrap.servers: the
 * sink needs a real cluster), start the HTTP server (/healthz, /readyz,
 * /metrics). Kafka and Postgres are connected by sl_pgsink_run, which keeps
 * retrying Postgres. `config` and `logger` are borrowed and must outlive the
 * sink. NULL + errstr on failure. */
sl_pgsink *sl_pgsink_new(const sl_config *config, const sl_logger *logger, sl_pgsink_mode mode,
                         char *errstr, size_t errstr_size);

/* Run until *stop becomes non-zero (a signal handler may set it): apply the
 * migrations, then (rebuild mode) build and swap in new tables, then consume
 * and write. Returns SL_OK on a requested stop; an error only for what
 * retrying cannot fix (bad configuration, a topic that does not exist). */
sl_err sl_pgsink_run(sl_pgsink *sink, volatile sig_atomic_t *stop);

/* The bound HTTP port. */
int sl_pgsink_http_port(const sl_pgsink *sink);

/* Current state. Any thread. */
sl_pgsink_state sl_pgsink_state_get(const sl_pgsink *sink);

/* Rows written in committed transactions so far (both tables). Any thread. */
unsigned long long sl_pgsink_rows_written(const sl_pgsink *sink);

/* Stop the HTTP server, close Kafka and Postgres, free. NULL is fine. */
void sl_pgsink_destroy(sl_pgsink *sink);

/* Apply the migrations of schemas/postgres/ (compiled in) that `dsn`'s
 * database has not applied yet, each in its own transaction, under an
 * advisory lock, recording them in sluice_schema_version. *applied (may be
 * NULL) receives how many ran this time; a second call applies none.
 * The DSN is never logged. Blocking; any thread. */
sl_err sl_pgsink_migrate(const char *dsn, const sl_logger *logger, int *applied, char *errstr,
                         size_t errstr_size);

#endif
