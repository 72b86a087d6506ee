-- The ingest hot path wrote a before-image row per record it *inserted* (`before` NULL: "did not
-- exist, delete it on rollback"), so an empty table cost two rows and two index entries per
-- record (issue 15). Rows a statement creates are now recorded once per statement, as one array
-- of ids; `ferry_before_images` keeps the rows that existed (and the NULL images of older
-- versions and of conflict resolutions).
--
-- Rollback puts each row back as the *first* thing this migration did to it says: deleted when
-- that was a creation, restored when it was an image. Both tables take their `ord` from one
-- sequence, so "first" holds across them; images stored before this schema migration have no
-- `ord` and count as first (nothing was recorded in `ferry_created_rows` before them).
CREATE SEQUENCE ferry_bookkeeping_ord AS bigint;

CREATE TABLE ferry_created_rows (
    user_id      uuid        NOT NULL,
    migration_id uuid        NOT NULL,
    table_name   text        NOT NULL,
    ord          bigint      NOT NULL DEFAULT nextval('ferry_bookkeeping_ord'),
    row_ids      uuid[]      NOT NULL CHECK (cardinality(row_ids) > 0),
    captured_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, migration_id, table_name, ord)
);

-- No rewrite of existing rows: the column is added empty, and only new rows get the default.
ALTER TABLE ferry_before_images ADD COLUMN ord bigint;
ALTER TABLE ferry_before_images ALTER COLUMN ord SET DEFAULT nextval('ferry_bookkeeping_ord');
