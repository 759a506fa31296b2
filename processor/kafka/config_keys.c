/* config_keys.c: the configuration keys read by the Kafka client constructor
 * (client.c), owned here and registered with the others by
 * processor/cmd/config_groups.c. */
#include "processor/kafka/config_keys.h"

#include <stddef.h>

static const sl_config_prop props[] = {
    {"bootstrap.servers", SL_CONFIG_STRING, "", 0, 0, NULL,
     "Kafka brokers (host:port,...). Empty: start the embedded in-process "
     "broker (librdkafka's mock cluster: no compaction, no real transactions; "
     "for trying sluice out, never for production). Env: KAFKA_BOOTSTRAP."},
};

const sl_config_group sl_kafka_config_keys = {"processor/kafka", props,
                                              sizeof(props) / sizeof(props[0])};
