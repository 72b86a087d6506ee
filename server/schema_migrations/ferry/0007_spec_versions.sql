-- Several spec versions served at once (issue 11 §4). Each run remembers the spec app and
-- version its batches were made with (NULL for runs recorded before this migration), so an
-- operator can see who still has a migration in flight on a version before retiring it.
ALTER TABLE ferry_migration_runs
    ADD COLUMN spec_app     text,
    ADD COLUMN spec_version text;
CREATE INDEX ferry_migration_runs_running_spec ON ferry_migration_runs (spec_app, spec_version)
    WHERE status = 'running';
-- Versions an operator retired (`ferry-server spec retire APP VERSION --yes`): no new
-- migration may start under them; a migration already in flight under one may finish.
CREATE TABLE ferry_retired_specs (
    app        text        NOT NULL,
    version    text        NOT NULL,
    retired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app, version)
);
