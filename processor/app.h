/*
 * app.h: one sluice instance: its Kafka connection, state directory and HTTP
 * server.
 *
 * Threading: sl_app_run is the instance's loop and runs on the caller's
 * thread; librdkafka's and the HTTP server's own threads do the I/O. The
 * other functions are called from the thread that owns the app.
 */
#ifndef SLUICE_APP_H
#define SLUICE_APP_H

#include <signal.h>

#include "processor/base/config.h"
#include "processor/engine/engine.h"
#include "processor/base/error.h"
#include "processor/http/server.h"
#include "processor/base/log.h"
#include "processor/topology.h"

typedef struct sl_app sl_app;
typedef struct sl_gateway sl_gateway;

/* Prepare an instance: lock <state.dir>/<application.id> (SL_ERR_BUSY if
 * another instance holds it), connect to bootstrap.servers or, when that is
 * empty, start the embedded broker, start the HTTP server (/healthz,
 * /readyz) and, if `topology` is not NULL, start an engine running it.
 * `config`, `logger` and `topology` are borrowed and must outlive the app.
 * NULL + errstr on failure (nothing is left running). */
sl_app *sl_app_new(const sl_config *config, const sl_logger *logger, const sl_topology *topology,
                   char *errstr, size_t errstr_size);

/* Registers an application's HTTP routes (identity, dialogs, a test app's)
 * on `http`, before it starts; `gateway` (borrowed, lives as long as the
 * app) is what handlers read stores and send commands through. Runs once,
 * on the thread calling sl_app_new_with_routes. */
typedef sl_err sl_app_routes_fn(void *opaque, sl_http_server *http, sl_gateway *gateway);

/* sl_app_new plus the application's routes (called only when `topology` is
 * not NULL, since the gateway needs an engine). `opaque` is borrowed. The
 * gateway starts after the HTTP server: it advertises the bound port in
 * "<application.id>-members". */
sl_app *sl_app_new_with_routes(const sl_config *config, const sl_logger *logger,
                               const sl_topology *topology, sl_app_routes_fn *routes, void *opaque,
                               char *errstr, size_t errstr_size);

/* The gateway, or NULL when the app runs no topology. Borrowed. */
sl_gateway *sl_app_gateway(const sl_app *app);

/* The engine, or NULL when the app runs no topology. Borrowed. */
sl_engine *sl_app_engine(const sl_app *app);

/* Run until *stop becomes non-zero (a signal handler may set it), then close
 * the engine cleanly (finish the transaction, checkpoint, leave the group). */
sl_err sl_app_run(sl_app *app, volatile sig_atomic_t *stop);

/* The HTTP port actually bound (useful with http.port = 0). */
int sl_app_http_port(const sl_app *app);

/* Kafka bootstrap servers in use (the embedded broker's when embedded).
 * Borrowed from the app. */
const char *sl_app_bootstrap(const sl_app *app);

/* The port the admin listener (admin.http.*: /metrics, the gateway's
 * /v1/members, /v1/metadata, /v1/routes) is bound to. */
int sl_app_admin_port(const sl_app *app);

/* Stop the HTTP server, close Kafka clients, release the state-dir lock. */
void sl_app_destroy(sl_app *app);

#endif
