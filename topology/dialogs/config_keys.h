/* config_keys.h: the configuration keys read by the dialogs topology
 * (dialogs.c: topics, command ids). */
#ifndef SLUICE_TOPOLOGY_DIALOGS_CONFIG_KEYS_H
#define SLUICE_TOPOLOGY_DIALOGS_CONFIG_KEYS_H

#include "processor/base/config.h"

/* Registered by processor/cmd/config_groups.c (static, read-only). */
extern const sl_config_group sl_dialogs_config_keys;

#endif
