/* config_keys.h: the configuration keys read by the HTTP server (server.c;
 * its options are filled by app.c and the Postgres sink). */
#ifndef SLUICE_PROCESSOR_HTTP_CONFIG_KEYS_H
#define SLUICE_PROCESSOR_HTTP_CONFIG_KEYS_H

#include "processor/base/config.h"

/* Registered by processor/cmd/config_groups.c (static, read-only). */
extern const sl_config_group sl_http_config_keys;

#endif
