/* config_keys.h: the configuration keys read by the engine (engine.c: the
 * loop, stores, transactions, topics). */
#ifndef SLUICE_PROCESSOR_ENGINE_CONFIG_KEYS_H
#define SLUICE_PROCESSOR_ENGINE_CONFIG_KEYS_H

#include "processor/base/config.h"

/* Registered by processor/cmd/config_groups.c (static, read-only). */
extern const sl_config_group sl_engine_config_keys;

#endif
