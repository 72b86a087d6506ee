-- A migration run tells the truth (issue 12 §5): the browser's verification marks it
-- `verified`, with when and what was verified. `completed` and `failed` were never written by
-- any server version; a `completed` row, if one exists, is taken as verified.
-- "Abandoned" is not stored: it is computed when the runs are read, from the time of a
-- running migration's last batch (`ferry-server status --abandoned-after`).
ALTER TABLE ferry_migration_runs DROP CONSTRAINT ferry_migration_runs_status_check;
ALTER TABLE ferry_migration_runs
    ADD COLUMN verified_at      timestamptz,
    ADD COLUMN verified_records bigint CHECK (verified_records >= 0),
    ADD COLUMN verified_batches bigint CHECK (verified_batches >= 0);
UPDATE ferry_migration_runs
   SET status = 'verified', verified_at = finished_at, verified_records = 0, verified_batches = 0
 WHERE status = 'completed';
ALTER TABLE ferry_migration_runs ADD CONSTRAINT ferry_migration_runs_status_check
    CHECK (status IN ('running', 'verified', 'rolled_back'));
-- A verified run keeps what was verified, also after a later rollback.
ALTER TABLE ferry_migration_runs ADD CONSTRAINT ferry_migration_runs_verified_check
    CHECK ((verified_at IS NULL) = (verified_records IS NULL)
       AND (verified_at IS NULL) = (verified_batches IS NULL)
       AND (status <> 'verified' OR verified_at IS NOT NULL));
