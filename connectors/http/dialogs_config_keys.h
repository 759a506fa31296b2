/* dialogs_config_keys.h: the configuration keys read by the dialogs HTTP
 * routes (dialogs_routes.c: lists, read-your-writes). */
#ifndef SLUICE_CONNECTORS_HTTP_DIALOGS_CONFIG_KEYS_H
#define SLUICE_CONNECTORS_HTTP_DIALOGS_CONFIG_KEYS_H

#include "processor/base/config.h"

/* Registered by processor/cmd/config_groups.c (static, read-only). */
extern const sl_config_group sl_dialogs_routes_config_keys;

#endif
