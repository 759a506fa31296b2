/* config_keys.h: the configuration keys read by the Postgres sink (sink.c). */
#ifndef SLUICE_CONNECTORS_POSTGRES_CONFIG_KEYS_H
#define SLUICE_CONNECTORS_POSTGRES_CONFIG_KEYS_H

#include "processor/base/config.h"

/* Registered by processor/cmd/config_groups.c (static, read-only). */
extern const sl_config_group sl_pgsink_config_keys;

#endif
