/* config_keys.c: the configuration keys read by the identity topology
 * (identity.c: topics, command ids, revocations), owned here and registered
 * with the others by processor/cmd/config_groups.c. */
#include "topology/identity/config_keys.h"

#include <stddef.h>

static const sl_config_prop props[] = {
    {"identity.topic.prefix", SL_CONFIG_STRING, "", 0, 0, NULL,
     "Prefix of the identity topics (`<prefix>users.commands`, `users.events`, "
     "`tokens.commands`, `tokens.revoked`). Empty in production; tests set a unique one. "
     "Letters, digits, '.', '_' and '-' only."},
    {"identity.topic.partitions", SL_CONFIG_INT, "4", 1, 4096, NULL,
     "Partitions of the identity topics sluice creates if missing (users.commands, "
     "users.events, tokens.commands, tokens.revoked); an existing topic with another count "
     "is a startup error."},
    {"identity.idempotency.ttl.ms", SL_CONFIG_INT, "86400000", 1000, 2592000000LL, NULL,
     "How long a users command id is remembered: a repeated id within this time is answered "
     "with the original outcome and changes nothing."},
    {"identity.idempotency.sweep.interval.ms", SL_CONFIG_INT, "60000", 100, 86400000, NULL,
     "Wall-clock interval of the punctuator that forgets expired command ids."},
    {"identity.revocation.sweep.interval.ms", SL_CONFIG_INT, "60000", 100, 86400000, NULL,
     "Wall-clock interval of the punctuator that removes revocations of expired tokens "
     "(a tombstone on tokens.revoked, then the store entry)."},
    {"identity.revocation.grace.ms", SL_CONFIG_INT, "60000", 0, 86400000, NULL,
     "How long after a revoked token's expiry its revocation is kept, for clock skew between "
     "sluice and the services that verify tokens."},
};

const sl_config_group sl_identity_config_keys = {"topology/identity", props,
                                                 sizeof(props) / sizeof(props[0])};
