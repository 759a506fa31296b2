/* config_keys.h: the configuration keys read by the identity topology
 * (identity.c: topics, command ids, revocations). */
#ifndef SLUICE_TOPOLOGY_IDENTITY_CONFIG_KEYS_H
#define SLUICE_TOPOLOGY_IDENTITY_CONFIG_KEYS_H

#include "processor/base/config.h"

/* Registered by processor/cmd/config_groups.c (static, read-only). */
extern const sl_config_group sl_identity_config_keys;

#endif
