-- What the ingest endpoint needs beyond the first schema.

-- Every record received in a migration, once however often its batch was sent: the source of
-- the verification report (per kind: count and XOR of content hashes, compared by the browser
-- with its own before it marks a migration done).
CREATE TABLE ferry_received (
    user_id      uuid        NOT NULL,
    migration_id uuid        NOT NULL,
    kind         text        NOT NULL,
    hash         text        NOT NULL CHECK (hash ~ '^[0-9a-f]{32}$'),
    outcome      text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, migration_id, kind, hash)
);

-- A manual conflict is queued once per distinct incoming version while it is open, so a
-- second migration of the same unchanged data does not ask the user twice.
ALTER TABLE ferry_conflicts ADD COLUMN incoming_hash text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX ferry_conflicts_open_once
    ON ferry_conflicts (user_id, kind, row_id, incoming_hash) WHERE status = 'open';
