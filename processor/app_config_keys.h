/* app_config_keys.h: the configuration keys read by the app (app.c: the
 * embedded broker, the Kafka health check). */
#ifndef SLUICE_PROCESSOR_APP_CONFIG_KEYS_H
#define SLUICE_PROCESSOR_APP_CONFIG_KEYS_H

#include "processor/base/config.h"

/* Registered by processor/cmd/config_groups.c (static, read-only). */
extern const sl_config_group sl_app_config_keys;

#endif
