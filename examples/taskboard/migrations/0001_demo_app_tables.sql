-- The demo app's tables: where the records migrated out of localStorage land. They follow
-- `specs/taskboard.json` exactly (the server's start-up check compares the two): a column is
-- NOT NULL exactly when the spec always gives it a value (required, or with a default).
-- Every table is keyed by (user_id, id): a user's rows never collide with another user's, and
-- every ingest statement is scoped by the user of the bearer token.
--
-- An app whose tables already exist runs `ferry-server migrate --baseline` instead, which
-- checks them and records this migration as applied without running it.

-- kind `tasks` (conflict policy `newest`).
CREATE TABLE tasks (
    user_id     uuid        NOT NULL,
    id          uuid        NOT NULL,
    legacy_id   text        NOT NULL,
    title       text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'in_progress', 'completed')),
    description text,
    priority    text        CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    tags        text[],
    due_date    timestamptz,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, id)
);

-- kind `environments` (conflict policy `merge`); `config.githubToken` is stored encrypted.
CREATE TABLE environments (
    user_id        uuid        NOT NULL,
    id             uuid        NOT NULL,
    legacy_id      text        NOT NULL,
    name           text        NOT NULL,
    description    text,
    config         jsonb       NOT NULL,
    is_active      boolean     NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    schema_version bigint      NOT NULL,
    PRIMARY KEY (user_id, id)
);

-- kind `preferences` (conflict policy `overwrite`): one row per user, its id is the kind's
-- singleton id, so the primary key already allows only one.
CREATE TABLE user_preferences (
    user_id     uuid        NOT NULL,
    id          uuid        NOT NULL,
    theme       text        NOT NULL CHECK (theme IN ('light', 'dark', 'system')),
    language    text        NOT NULL,
    preferences jsonb,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, id)
);

-- kind `form_drafts` (conflict policy `manual`).
CREATE TABLE form_drafts (
    user_id     uuid        NOT NULL,
    id          uuid        NOT NULL,
    legacy_id   text        NOT NULL,
    form_name   text,
    data        jsonb,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, id)
);

-- kind `custom` (conflict policy `skip`).
CREATE TABLE custom_data (
    user_id     uuid        NOT NULL,
    id          uuid        NOT NULL,
    key         text,
    value       jsonb,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, id)
);
