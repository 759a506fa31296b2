/* config_keys.c: the configuration keys read by the gateway (gateway.c,
 * members.c, replies.c, trust.c), owned here and registered with the others by
 * processor/cmd/config_groups.c. */
#include "processor/gateway/config_keys.h"

#include <stddef.h>

static const sl_config_prop props[] = {
    {"cluster.secret.file", SL_CONFIG_STRING, "", 0, 0, NULL,
     "File holding the cluster secret (at least 32 random bytes, e.g. `head -c 32 "
     "/dev/urandom`), the same on every instance: it authenticates forwarded requests "
     "(X-Sluice-Hop) and membership records. Never logged. Empty: generated on first start as "
     "<state.dir>/<application.id>/cluster-secret (one instance only)."},
    {"cluster.secret.previous.file", SL_CONFIG_STRING, "", 0, 0, NULL,
     "The previous cluster secret during a rotation: accepted, never used to sign. Empty: "
     "none."},
    {"cluster.hop.window.s", SL_CONFIG_INT, "30", 1, 3600, NULL,
     "A forwarded request's signed timestamp must be within this many seconds of the "
     "receiver's clock (the replay window; instance clocks must agree within it)."},
    {"gateway.advertised.address", SL_CONFIG_STRING, "", 0, 0, NULL,
     "host:port other instances use to forward HTTP requests to this one (written to "
     "`<application.id>-members`). Empty: http.host and the bound HTTP port (set it when "
     "http.host is 0.0.0.0 or behind NAT)."},
    {"gateway.members.interval.ms", SL_CONFIG_INT, "2000", 100, 600000, NULL,
     "How often an instance republishes its membership record (it also publishes at once "
     "on every assignment change)."},
    {"gateway.members.expiry.ms", SL_CONFIG_INT, "10000", 500, 3600000, NULL,
     "A membership record not refreshed for this long is ignored for routing (a crashed "
     "instance); a clean shutdown removes its record at once."},
    {"gateway.forward.timeout.ms", SL_CONFIG_INT, "5000", 100, 600000, NULL,
     "Deadline for forwarding a request to the instance that owns its key (connect, send and "
     "answer); past it the client gets 503 with Retry-After."},
    {"gateway.forward.max.bytes", SL_CONFIG_INT, "1048576", 1024, 268435456, NULL,
     "Largest forwarded answer (headers and body) relayed; a larger one is a 502."},
    {"gateway.reply.max.waiters", SL_CONFIG_INT, "1024", 1, 1000000, NULL,
     "HTTP requests that may wait for a command's reply at once; more get 503 with "
     "Retry-After."},
    {"gateway.reply.timeout.ms", SL_CONFIG_INT, "5000", 100, 600000, NULL,
     "How long an HTTP request waits for its command's reply before answering 503 with "
     "Retry-After (the command is not lost: it was produced)."},
};

const sl_config_group sl_gateway_config_keys = {"processor/gateway", props,
                                                sizeof(props) / sizeof(props[0])};
