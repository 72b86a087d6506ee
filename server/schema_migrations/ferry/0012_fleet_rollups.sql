-- The fleet summary read every received record and every quarantine reason: 5.4 s at 20 M
-- records, linear in the records (issue 16 wants 1 s at 100 M). Ingest now keeps the counts the
-- summary reads, per user, as it writes the rows they count: in the same transaction, so they
-- are exactly the rows' counts, and per user, so concurrent batches of different users never
-- wait on one counter row. The summary then reads a few rows per user, not per record.

-- When the run's latest batch arrived (the same `now()` as its ledger row): what tells a
-- stalled migration from one in progress, without a lookup into the ledger per user.
ALTER TABLE ferry_migration_runs ADD COLUMN last_batch_at timestamptz;
UPDATE ferry_migration_runs r
   SET last_batch_at = g.last_batch_at
  FROM (SELECT user_id, migration_id, max(created_at) AS last_batch_at
          FROM ferry_ingest_ledger GROUP BY user_id, migration_id) g
 WHERE g.user_id = r.user_id AND g.migration_id = r.migration_id;

-- Records received, per run, kind, outcome and hour (UTC) of arrival: each record once however
-- often it was sent (the rows `ferry_received` takes). Never purged: a few rows per run.
CREATE TABLE ferry_received_counts (
    user_id      uuid      NOT NULL,
    migration_id uuid      NOT NULL,
    kind         text      NOT NULL,
    outcome      text      NOT NULL,
    hour_utc     timestamp NOT NULL CHECK (hour_utc = date_trunc('hour', hour_utc)),
    records      bigint    NOT NULL CHECK (records > 0),
    PRIMARY KEY (user_id, migration_id, kind, outcome, hour_utc)
);
CREATE INDEX ferry_received_counts_by_hour ON ferry_received_counts (hour_utc);
INSERT INTO ferry_received_counts (user_id, migration_id, kind, outcome, hour_utc, records)
SELECT user_id, migration_id, kind, outcome, hour_utc, sum(records) FROM (
    SELECT user_id, migration_id, kind, outcome,
           date_trunc('hour', received_at AT TIME ZONE 'UTC') AS hour_utc, count(*) AS records
      FROM ferry_received GROUP BY 1, 2, 3, 4, 5
    UNION ALL
    SELECT user_id, migration_id, kind, outcome, hour_utc, records FROM ferry_received_rollup
) received GROUP BY 1, 2, 3, 4, 5;

-- Quarantine reasons per user, kind and the field a reason names (`NULL`: the record as a
-- whole): how many reasons, how many records, and the smallest reason as the example.
-- Quarantined rows are never deleted, so these only grow with them.
CREATE TABLE ferry_rejection_counts (
    user_id  uuid   NOT NULL,
    kind     text   NOT NULL,
    field    text,
    reasons  bigint NOT NULL CHECK (reasons > 0),
    records  bigint NOT NULL CHECK (records > 0),
    example  text   NOT NULL,
    UNIQUE NULLS NOT DISTINCT (user_id, kind, field)
);
INSERT INTO ferry_rejection_counts (user_id, kind, field, reasons, records, example)
SELECT q.user_id, q.kind, substring(r.reason from 'field `([^`]*)`'),
       count(*), count(DISTINCT q.id), coalesce(min(r.reason), '')
  FROM ferry_quarantine q,
       LATERAL jsonb_array_elements_text(
         CASE WHEN jsonb_typeof(q.reasons) = 'array' THEN q.reasons
              ELSE jsonb_build_array(q.reasons #>> '{}') END) AS r(reason)
 GROUP BY 1, 2, 3;

-- Quarantined records per user and kind.
CREATE TABLE ferry_quarantine_counts (
    user_id uuid   NOT NULL,
    kind    text   NOT NULL,
    records bigint NOT NULL CHECK (records > 0),
    PRIMARY KEY (user_id, kind)
);
INSERT INTO ferry_quarantine_counts (user_id, kind, records)
SELECT user_id, kind, count(*) FROM ferry_quarantine GROUP BY 1, 2;

-- Open conflicts per kind without reading the resolved ones.
CREATE INDEX ferry_conflicts_open_by_kind ON ferry_conflicts (kind) WHERE status = 'open';
