/* config_keys.c: the configuration keys read by the dialogs topology
 * (dialogs.c: topics, command ids), owned here and registered with the
 * others by processor/cmd/config_groups.c. */
#include "topology/dialogs/config_keys.h"

#include <stddef.h>

static const sl_config_prop props[] = {
    {"dialogs.topic.prefix", SL_CONFIG_STRING, "", 0, 0, NULL,
     "Prefix of the dialogs topics (`<prefix>dialogs.commands`, `dialogs.events`, "
     "`dialogs.users`). Empty in production; tests set a unique one."},
    {"dialogs.topic.partitions", SL_CONFIG_INT, "8", 1, 4096, NULL,
     "Partitions of the dialogs topics sluice creates if missing and of the dialogs-by-user "
     "repartition topic: the number of message shards. An existing topic with another count "
     "is a startup error (see ARCHITECTURE.md, resharding)."},
    {"dialogs.idempotency.ttl.ms", SL_CONFIG_INT, "86400000", 1000, 2592000000LL, NULL,
     "How long a SendMessage command id is remembered: a repeated id within this time gets "
     "the original outcome and stores nothing."},
    {"dialogs.idempotency.sweep.interval.ms", SL_CONFIG_INT, "60000", 100, 86400000, NULL,
     "Wall-clock interval of the punctuator that forgets expired dialogs command ids."},
};

const sl_config_group sl_dialogs_config_keys = {"topology/dialogs", props,
                                                sizeof(props) / sizeof(props[0])};
