-- The demo app's tables: where the records migrated out of localStorage land. Every table is
-- keyed by (user_id, id): a user's rows never collide with another user's, and every ingest
-- statement is scoped by the user of the bearer token.
--
-- An app whose tables already exist runs `ferry-server migrate --baseline` instead, which
-- checks them and records this migration as applied without running it.

CREATE TABLE tasks (
    user_id     uuid        NOT NULL,
    id          uuid        NOT NULL,
    title       text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'in_progress', 'completed')),
    description text,
    priority    text,
    tags        text[],
    due_date    timestamptz,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    legacy_id   text        NOT NULL,
    PRIMARY KEY (user_id, id)
);

CREATE TABLE environments (
    user_id        uuid        NOT NULL,
    id             uuid        NOT NULL,
    name           text        NOT NULL,
    description    text,
    config         jsonb       NOT NULL,
    is_active      boolean     NOT NULL DEFAULT true,
    created_at     timestamptz,
    updated_at     timestamptz,
    schema_version integer     NOT NULL,
    legacy_id      text,
    PRIMARY KEY (user_id, id)
);

-- One row per user.
CREATE TABLE user_preferences (
    user_id     uuid        NOT NULL,
    id          uuid        NOT NULL,
    preferences jsonb       NOT NULL,
    updated_at  timestamptz,
    PRIMARY KEY (user_id, id),
    UNIQUE (user_id)
);

CREATE TABLE form_drafts (
    user_id     uuid        NOT NULL,
    id          uuid        NOT NULL,
    form_name   text        NOT NULL,
    data        jsonb       NOT NULL,
    updated_at  timestamptz,
    PRIMARY KEY (user_id, id)
);

CREATE TABLE custom_data (
    user_id     uuid        NOT NULL,
    id          uuid        NOT NULL,
    key         text        NOT NULL,
    value       jsonb       NOT NULL,
    updated_at  timestamptz,
    PRIMARY KEY (user_id, id)
);
