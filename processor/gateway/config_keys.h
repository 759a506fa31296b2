/* config_keys.h: the configuration keys read by the gateway (gateway.c,
 * members.c, replies.c, trust.c). */
#ifndef SLUICE_PROCESSOR_GATEWAY_CONFIG_KEYS_H
#define SLUICE_PROCESSOR_GATEWAY_CONFIG_KEYS_H

#include "processor/base/config.h"

/* Registered by processor/cmd/config_groups.c (static, read-only). */
extern const sl_config_group sl_gateway_config_keys;

#endif
