/* config_keys.c: the configuration keys read by the HTTP server (server.c;
 * its options are filled by app.c and the Postgres sink), owned here and
 * registered with the others by processor/cmd/config_groups.c. */
#include "processor/http/config_keys.h"

#include <stddef.h>

static const sl_config_prop props[] = {
    {"http.host", SL_CONFIG_STRING, "127.0.0.1", 0, 0, NULL,
     "Numeric IPv4 or IPv6 address the HTTP server (API, /healthz, /readyz) binds to."},
    {"http.port", SL_CONFIG_INT, "8080", 0, 65535, NULL,
     "TCP port of the HTTP server; 0 picks a free port (logged at start)."},
    {"http.threads", SL_CONFIG_INT, "0", 0, 64, NULL,
     "0: a thread per HTTP connection (a request that waits for a password hash or a "
     "command's outcome blocks only its own connection); n > 0: a pool of n threads "
     "multiplexing connections (only for deployments whose routes never wait)."},
    {"http.max.connections", SL_CONFIG_INT, "1024", 1, 65536, NULL,
     "Concurrent HTTP connections; more are refused."},
    {"http.connection.timeout.s", SL_CONFIG_INT, "30", 1, 3600, NULL,
     "Idle HTTP connections (and slow clients) are closed after this many "
     "seconds."},
    {"http.header.timeout.s", SL_CONFIG_INT, "10", 0, 3600, NULL,
     "A request's head (request line and headers) must arrive within this many seconds of "
     "the connection's start or of the previous answer on it, however steadily its bytes "
     "trickle in (the idle timeout alone lets a client sending a byte every few seconds "
     "hold a connection for ever: slowloris); else the connection is closed. Also bounds "
     "how long a kept-alive connection may wait for its next request. 0: no deadline."},
    {"http.body.timeout.s", SL_CONFIG_INT, "30", 0, 3600, NULL,
     "A request's body must arrive within this many seconds of its head; else the "
     "connection is closed. 0: no deadline."},
    {"admin.http.host", SL_CONFIG_STRING, "127.0.0.1", 0, 0, NULL,
     "Address of the admin listener: /metrics, /v1/members, /v1/metadata and whatever else "
     "shows an instance's internals (instance ids, internal addresses, assignments), plus "
     "/healthz and /readyz. Loopback by default: expose it only to operators and scrapers."},
    {"admin.http.port", SL_CONFIG_INT, "8081", 0, 65535, NULL,
     "TCP port of the admin listener; 0 picks a free port (logged at start). The public "
     "http.port does not serve the admin routes."},
    {"http.max.connections.per.address", SL_CONFIG_INT, "64", 0, 65536, NULL,
     "Concurrent HTTP connections from one client address (more are closed at once, so "
     "one address cannot hold every connection open: slowloris); 0: no per-address cap."},
};

const sl_config_group sl_http_config_keys = {"processor/http", props,
                                             sizeof(props) / sizeof(props[0])};
