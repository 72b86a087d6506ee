-- The hashes of the records a migration received, one row per batch instead of one row per
-- record (issue 15): the per-record insert into `ferry_received` was 40% of PostgreSQL's work on
-- the ingest hot path (a heap row and a primary-key entry per record). A batch now stores the
-- records that are new to its migration as three aligned arrays; a record sent again (in a
-- later batch, or twice in one) is left out at insert time, so every hash is still stored
-- once per migration and kind, with the outcome it had when it first arrived.
--
-- `ferry_received` stays, as a view with its old columns, one row per record: the report, the
-- purge's rollup and the operator's queries read it as before.
CREATE TABLE ferry_received_batches (
    user_id      uuid        NOT NULL,
    migration_id uuid        NOT NULL,
    -- The batch's sequence; NULL for the rows moved here from the per-record table.
    sequence     bigint,
    kinds        text[]      NOT NULL,
    hashes       bytea[]     NOT NULL,
    outcomes     text[]      NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (cardinality(hashes) > 0
           AND cardinality(kinds) = cardinality(hashes)
           AND cardinality(outcomes) = cardinality(hashes))
);
CREATE INDEX ferry_received_batches_by_run ON ferry_received_batches (user_id, migration_id);

-- Existing rows move over, one row per run and time of arrival (a batch's transaction time).
INSERT INTO ferry_received_batches (user_id, migration_id, kinds, hashes, outcomes, received_at)
SELECT user_id, migration_id,
       array_agg(kind ORDER BY kind, hash), array_agg(hash ORDER BY kind, hash),
       array_agg(outcome ORDER BY kind, hash), received_at
  FROM ferry_received
 GROUP BY user_id, migration_id, received_at;

DROP TABLE ferry_received;

CREATE VIEW ferry_received AS
SELECT b.user_id, b.migration_id, r.kind, r.hash, r.outcome, b.received_at
  FROM ferry_received_batches b,
       unnest(b.kinds, b.hashes, b.outcomes) AS r(kind, hash, outcome);
