-- 0002: each row names the trace of the event that wrote it last: the W3C
-- traceparent header of that event's Kafka record (the span of the
-- processor that emitted it), NULL when the event had none. Lets an
-- operator follow a row back through the processor and the gateway's logs
-- to the HTTP request.

ALTER TABLE users ADD COLUMN traceparent text;
ALTER TABLE messages ADD COLUMN traceparent text;

CREATE OR REPLACE FUNCTION sluice_create_users_table(tbl text) RETURNS void
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
            created_at  timestamptz NOT NULL,
            traceparent text
        )$ddl$, tbl);
    EXECUTE format('CREATE INDEX %I ON %I (email)', tbl || '_email_idx', tbl);
END $$;

CREATE OR REPLACE FUNCTION sluice_create_messages_table(tbl text, partitions int) RETURNS void
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
            traceparent  text,
            PRIMARY KEY (dialog_id, sequence)
        ) PARTITION BY HASH (dialog_id)$ddl$, tbl);
    FOR i IN 0 .. partitions - 1 LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES WITH (MODULUS %s, REMAINDER %s)',
                       tbl || '_p' || i, tbl, partitions, i);
    END LOOP;
END $$;
