/* identity_config_keys.h: the configuration keys read by the identity HTTP
 * routes (identity_routes.c: signing keys, tokens, password hashing,
 * throttling). */
#ifndef SLUICE_CONNECTORS_HTTP_IDENTITY_CONFIG_KEYS_H
#define SLUICE_CONNECTORS_HTTP_IDENTITY_CONFIG_KEYS_H

#include "processor/base/config.h"

/* Registered by processor/cmd/config_groups.c (static, read-only). */
extern const sl_config_group sl_identity_routes_config_keys;

#endif
