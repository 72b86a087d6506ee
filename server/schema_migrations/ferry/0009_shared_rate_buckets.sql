-- Per-user rate limit buckets shared by every server process over this database
-- (`FERRY_RATE_LIMIT_SHARED`). Unlogged: a bucket is worth nothing after a crash (every user
-- starts with a full one again), and the table is written on every authenticated request.
CREATE UNLOGGED TABLE ferry_rate_buckets (
    user_id    uuid        PRIMARY KEY,
    tokens     float8      NOT NULL,
    taken      boolean     NOT NULL,
    updated_at timestamptz NOT NULL
);
