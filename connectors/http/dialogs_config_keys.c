/* dialogs_config_keys.c: the configuration keys read by the dialogs HTTP
 * routes (dialogs_routes.c: lists, read-your-writes), owned here and
 * registered with the others by processor/cmd/config_groups.c. */
#include "connectors/http/dialogs_config_keys.h"

#include <stddef.h>

static const sl_config_prop props[] = {
    {"dialogs.list.limit.max", SL_CONFIG_INT, "100", 1, 10000, NULL,
     "Largest `limit` of GET /dialog/{user_id}/list and GET /dialogs (also the default); a "
     "larger one is capped."},
    {"dialogs.read.wait.ms", SL_CONFIG_INT, "2000", 0, 60000, NULL,
     "Longest a list waits for read-your-writes: for the owner's commit in flight to be "
     "applied, and for `after=<sequence>` to be stored (then 503 + Retry-After)."},
};

const sl_config_group sl_dialogs_routes_config_keys = {"connectors/http/dialogs_routes", props,
                                                       sizeof(props) / sizeof(props[0])};
