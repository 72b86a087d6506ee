-- Before-images, one row per statement instead of one per changed row (issue 15): a batch
-- whose records all update stored rows wrote 2,000 image rows with their index entries, most
-- of the conflicting pass's time. A per-kind statement now stores the images of the rows it
-- changed as two aligned arrays (ids, images), with one `ord` from the sequence shared with
-- `ferry_created_rows`, so a rollback still finds the first thing the migration did to each row.
-- The first image per migration and row still wins: a statement leaves out the rows the
-- migration already has an image of.
--
-- `ferry_before_images` stays, as a view with its old columns, one row per image: the rows
-- stored before this schema migration and those a conflict resolution writes (one at a time,
-- `ferry_before_image_rows`), and the statements' arrays.
ALTER TABLE ferry_before_images RENAME TO ferry_before_image_rows;

CREATE TABLE ferry_before_image_batches (
    user_id      uuid        NOT NULL,
    migration_id uuid        NOT NULL,
    table_name   text        NOT NULL,
    ord          bigint      NOT NULL DEFAULT nextval('ferry_bookkeeping_ord'),
    row_ids      uuid[]      NOT NULL,
    befores      jsonb[]     NOT NULL,
    captured_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, migration_id, table_name, ord),
    CHECK (cardinality(row_ids) > 0 AND cardinality(befores) = cardinality(row_ids))
);

CREATE VIEW ferry_before_images AS
SELECT user_id, migration_id, table_name, row_id, before, captured_at, ord
  FROM ferry_before_image_rows
UNION ALL
SELECT b.user_id, b.migration_id, b.table_name, i.row_id, i.before, b.captured_at, b.ord
  FROM ferry_before_image_batches b,
       unnest(b.row_ids, b.befores) AS i(row_id, before);
