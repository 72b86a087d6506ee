-- Bookkeeping does not grow forever (issue 16 §3): `ferry-server purge` removes, for a run
-- verified longer ago than the retention, what only replays and rollback need (ledger
-- answers, received hashes, before-images). The run remembers when (`purged_at`) and how
-- many batches its ledger held (`purged_batches`, so its report still counts them); a purged
-- run cannot be rolled back and its batches are refused (409 `migration_purged`).
ALTER TABLE ferry_migration_runs
    ADD COLUMN purged_at      timestamptz,
    ADD COLUMN purged_batches bigint CHECK (purged_batches >= 0);
ALTER TABLE ferry_migration_runs ADD CONSTRAINT ferry_migration_runs_purged_check
    CHECK ((purged_at IS NULL) = (purged_batches IS NULL)
       AND (purged_at IS NULL OR status = 'verified'));
-- The runs a purge looks for, without reading every run.
CREATE INDEX ferry_migration_runs_purgeable ON ferry_migration_runs (user_id)
    WHERE status = 'verified' AND purged_at IS NULL;

-- What a purge keeps of `ferry_received`: per run, kind, outcome and hour (UTC) of arrival,
-- the number of records and the XOR of their content hashes (two 64-bit halves, as the report
-- computes it). The report of a purged run and the fleet summary read these rows together
-- with `ferry_received`, so their numbers are the same before and after a purge.
CREATE TABLE ferry_received_rollup (
    user_id      uuid      NOT NULL,
    migration_id uuid      NOT NULL,
    kind         text      NOT NULL,
    outcome      text      NOT NULL,
    hour_utc     timestamp NOT NULL CHECK (hour_utc = date_trunc('hour', hour_utc)),
    records      bigint    NOT NULL CHECK (records > 0),
    hash_xor_hi  bigint    NOT NULL,
    hash_xor_lo  bigint    NOT NULL,
    PRIMARY KEY (user_id, migration_id, kind, outcome, hour_utc)
);
CREATE INDEX ferry_received_rollup_by_hour ON ferry_received_rollup (hour_utc);
