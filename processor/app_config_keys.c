/* app_config_keys.c: the configuration keys read by the app (app.c: the
 * embedded broker, the Kafka health check), owned here and registered with
 * the others by processor/cmd/config_groups.c. */
#include "processor/app_config_keys.h"

#include <stddef.h>

static const sl_config_prop props[] = {
    {"embedded.brokers", SL_CONFIG_INT, "1", 1, 5, NULL,
     "Number of brokers of the embedded mock cluster (only when "
     "bootstrap.servers is empty)."},
    {"health.kafka.interval.ms", SL_CONFIG_INT, "2000", 100, 600000, NULL,
     "How often the instance checks that the Kafka cluster answers; /readyz "
     "reports not ready while it does not."},
};

const sl_config_group sl_app_config_keys = {"processor/app", props,
                                            sizeof(props) / sizeof(props[0])};
