-- Abuse-limit counters live in PostgreSQL, not in each replica's memory, so that every replica
-- counts the same attempts: N replicas together allow what one allows.
--
-- Fixed windows: one row per (bucket, window). A bucket is e.g. `login-ip:203.0.113.9` or
-- `login-failed:alice@example.com`. One upsert per attempt both counts and answers.
CREATE TABLE auth.rate_limits (
    bucket       text        NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer     NOT NULL,
    PRIMARY KEY (bucket, window_start)
);

-- Serves the periodic deletion of past windows.
CREATE INDEX rate_limits_window_start ON auth.rate_limits (window_start);
