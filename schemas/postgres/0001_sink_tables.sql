-- 0001: the Postgres sink's tables (see schemas/README.md for the choices).
-- Applied once by the sink (connectors/pgsink_pg.c) inside a transaction,
-- under an advisory lock, and recorded in sluice_schema_version.

-- Creates the users table under any name, so `sluice sink rebuild` builds
-- users_rebuild with exactly the same DDL. Never a password hash column.
CREATE FUNCTION sluice_create_users_table(tbl text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE %I (
            id          text        NOT NULL PRIMARY KEY,
            email       text        NOT NULL,
            first_name  text        NOT NULL DEFAULT '',
            second_name text        NOT NULL DEFAULT '',
            birthdate   date,
            biography   text        NOT NULL DEFAULT '',
            city        text        NOT NULL DEFAULT '',
            created_at  timestamptz NOT NULL
        )$ddl$, tbl);
    EXECUTE format('CREATE INDEX %I ON %I (email)', tbl || '_email_idx', tbl);
END $$;

-- Creates the messages table under any name: hash-partitioned by dialog_id
-- into `partitions` partitions named <tbl>_p<i>. The primary key contains
-- the partition key, as both PARTITION BY HASH and Citus'
-- create_distributed_table(..., 'dialog_id') require.
CREATE FUNCTION sluice_create_messages_table(tbl text, partitions int) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE %I (
            dialog_id    text        NOT NULL,
            sequence     bigint      NOT NULL CHECK (sequence > 0),
            sender_id    text        NOT NULL,
            recipient_id text        NOT NULL,
            text         text        NOT NULL,
            sent_at      timestamptz NOT NULL,
            PRIMARY KEY (dialog_id, sequence)
        ) PARTITION BY HASH (dialog_id)$ddl$, tbl);
    FOR i IN 0 .. partitions - 1 LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES WITH (MODULUS %s, REMAINDER %s)',
                       tbl || '_p' || i, tbl, partitions, i);
    END LOOP;
END $$;

-- Replaces table `old_name` by `new_name` (for the rebuild's swap; run it
-- inside the swapping transaction): drops the old table, renames the new one
-- and every relation named after it (partitions, indexes), so the next
-- rebuild can create <tbl>_rebuild again.
CREATE FUNCTION sluice_swap_table(new_name text, old_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel record;
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', old_name);
    EXECUTE format('ALTER TABLE %I RENAME TO %I', new_name, old_name);
    FOR rel IN
        SELECT c.relname, c.relkind FROM pg_class c
         WHERE c.relnamespace = current_schema()::regnamespace
           AND left(c.relname, length(new_name) + 1) = new_name || '_'
           AND c.relkind IN ('r', 'p', 'i', 'I')
         ORDER BY c.relkind DESC -- tables before their indexes
    LOOP
        EXECUTE format('ALTER %s %I RENAME TO %I',
                       CASE WHEN rel.relkind IN ('i', 'I') THEN 'INDEX' ELSE 'TABLE' END,
                       rel.relname, old_name || substr(rel.relname, length(new_name) + 1));
    END LOOP;
END $$;

SELECT sluice_create_users_table('users');
SELECT sluice_create_messages_table('messages', 8);

-- Where the sink is in each input partition: the next offset to read.
-- Written in the same transaction as the rows, so rows and offsets commit
-- together (exactly-once into Postgres). group_id is the sink's consumer
-- group (a rebuild writes under '<group>/rebuild' until its swap).
CREATE TABLE sluice_sink_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   int         NOT NULL CHECK (partition >= 0),
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
