/* config_keys.c: the configuration keys read by the Postgres sink (sink.c),
 * owned here and registered with the others by
 * processor/cmd/config_groups.c. */
#include "connectors/postgres/config_keys.h"

#include <stddef.h>

static const sl_config_prop props[] = {
    {"pg.dsn", SL_CONFIG_STRING, "", 0, 0, NULL,
     "Postgres sink (`sluice sink`): libpq connection string or URI of the database it writes "
     "to. Env: SLUICE_PG_DSN. Never logged (it may hold a password)."},
    {"pg.sink.group.id", SL_CONFIG_STRING, "", 0, 0, NULL,
     "Consumer group of the Postgres sink; empty: `<application.id>-pgsink`. Its position is "
     "the offsets stored in Postgres (`sluice_sink_offsets`), not the group's committed offsets."},
    {"pg.sink.users.topic", SL_CONFIG_STRING, "users.events", 0, 0, NULL,
     "Topic of UsersEvent records that the sink materializes into the `users` table."},
    {"pg.sink.messages.topic", SL_CONFIG_STRING, "dialogs.events", 0, 0, NULL,
     "Topic of DialogsEvent records that the sink materializes into the `messages` table."},
    {"pg.sink.batch.rows", SL_CONFIG_INT, "5000", 1, 1000000, NULL,
     "Records per Postgres transaction (COPY into a staging table, then one upsert)."},
    {"pg.sink.linger.ms", SL_CONFIG_INT, "200", 0, 600000, NULL,
     "A batch that is not full is written at the latest this long after its first record."},
    {"pg.sink.retry.backoff.ms", SL_CONFIG_INT, "200", 10, 600000, NULL,
     "First delay before reconnecting to Postgres; doubles per failure."},
    {"pg.sink.retry.backoff.max.ms", SL_CONFIG_INT, "5000", 10, 3600000, NULL,
     "Longest delay between two attempts to reach Postgres."},
};

const sl_config_group sl_pgsink_config_keys = {"connectors/postgres", props,
                                               sizeof(props) / sizeof(props[0])};
