-- Ferry's own bookkeeping tables. Every row belongs to one user (`user_id`, taken from the
-- bearer token, never from a payload) and, where it concerns a migration, to one migration run
-- (`migration_id`, chosen by the browser when the run starts).

-- One row per migration run of one user's browser.
CREATE TABLE ferry_migration_runs (
    user_id      uuid        NOT NULL,
    migration_id uuid        NOT NULL,
    device_id    text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    status       text        NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'completed', 'failed', 'rolled_back')),
    PRIMARY KEY (user_id, migration_id),
    CHECK ((status = 'running') = (finished_at IS NULL))
);

-- The idempotency ledger: one row per accepted batch. A retried batch (same user, run and
-- sequence) with the same content hash gets the stored response again and changes nothing; a
-- different hash under the same key is a client bug and is refused.
CREATE TABLE ferry_ingest_ledger (
    user_id      uuid        NOT NULL,
    migration_id uuid        NOT NULL,
    sequence     bigint      NOT NULL CHECK (sequence >= 0),
    request_hash bytea       NOT NULL CHECK (octet_length(request_hash) = 32),
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, migration_id, sequence)
);

-- Records that could not be migrated, kept verbatim with the reasons, for a human to look at.
CREATE TABLE ferry_quarantine (
    id           bigserial   PRIMARY KEY,
    user_id      uuid        NOT NULL,
    migration_id uuid        NOT NULL,
    kind         text        NOT NULL,
    key          text        NOT NULL,
    locator      text,
    raw_value    text,
    reasons      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ferry_quarantine_by_run ON ferry_quarantine (user_id, migration_id);

-- Incoming rows that collided with a newer stored row, waiting for a decision.
CREATE TABLE ferry_conflicts (
    id           bigserial   PRIMARY KEY,
    user_id      uuid        NOT NULL,
    migration_id uuid        NOT NULL,
    kind         text        NOT NULL,
    row_id       uuid        NOT NULL,
    stored       jsonb       NOT NULL,
    incoming     jsonb       NOT NULL,
    status       text        NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'kept_stored', 'took_incoming', 'dismissed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    CHECK ((status = 'open') = (resolved_at IS NULL))
);
CREATE INDEX ferry_conflicts_open ON ferry_conflicts (user_id, status);

-- What each app row looked like before a migration run first touched it, so the run can be
-- rolled back. Written once per (run, table, row): later batches of the same run must not
-- overwrite the original. `before` NULL means "the row did not exist".
CREATE TABLE ferry_before_images (
    user_id      uuid        NOT NULL,
    migration_id uuid        NOT NULL,
    table_name   text        NOT NULL,
    row_id       uuid        NOT NULL,
    before       jsonb,
    captured_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, migration_id, table_name, row_id)
);

-- Encrypted backups uploaded by the browser (opaque to the server).
CREATE TABLE ferry_backups (
    user_id      uuid        NOT NULL,
    id           uuid        NOT NULL,
    migration_id uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    size_bytes   bigint      NOT NULL,
    blob         bytea       NOT NULL,
    PRIMARY KEY (user_id, id),
    CHECK (size_bytes = octet_length(blob))
);
