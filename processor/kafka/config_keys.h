/* config_keys.h: the configuration keys read by the Kafka client constructor
 * (client.c). */
#ifndef SLUICE_PROCESSOR_KAFKA_CONFIG_KEYS_H
#define SLUICE_PROCESSOR_KAFKA_CONFIG_KEYS_H

#include "processor/base/config.h"

/* Registered by processor/cmd/config_groups.c (static, read-only). */
extern const sl_config_group sl_kafka_config_keys;

#endif
