/* config_groups.c: every owner's configuration keys, in the order of the
 * rooms (runtime, then domain, then edges). */
#include "processor/cmd/config_groups.h"

#include <stddef.h>

#include "connectors/http/dialogs_config_keys.h"
#include "connectors/http/identity_config_keys.h"
#include "connectors/postgres/config_keys.h"
#include "processor/app_config_keys.h"
#include "processor/engine/config_keys.h"
#include "processor/gateway/config_keys.h"
#include "processor/http/config_keys.h"
#include "processor/kafka/config_keys.h"
#include "topology/dialogs/config_keys.h"
#include "topology/identity/config_keys.h"

const sl_config_group *const sl_config_groups[] = {
    &sl_kafka_config_keys,          &sl_engine_config_keys,
    &sl_http_config_keys,           &sl_gateway_config_keys,
    &sl_app_config_keys,            &sl_identity_config_keys,
    &sl_dialogs_config_keys,        &sl_identity_routes_config_keys,
    &sl_dialogs_routes_config_keys, &sl_pgsink_config_keys,
    NULL,
};
