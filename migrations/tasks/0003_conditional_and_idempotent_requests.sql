-- What clients that retry and share tasks need: a version behind each task's ETag, the
-- idempotency keys of creates, and a per-user task count for TASKS_MAX_PER_USER. Expand only:
-- release N−1's pods keep working on this schema, and the triggers below keep the version and
-- the counts right whoever writes (those pods, the purge, an operator's SQL).

-- Behind the strong ETag: bumped whenever a task's content changes (a write that sends the
-- values the task already has changes nothing, and keeps it).
ALTER TABLE tasks.tasks ADD COLUMN version bigint NOT NULL DEFAULT 1;

CREATE FUNCTION tasks.bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END $$;

CREATE TRIGGER tasks_bump_version BEFORE UPDATE ON tasks.tasks
    FOR EACH ROW
    WHEN ((OLD.title, OLD.description, OLD.completed)
          IS DISTINCT FROM (NEW.title, NEW.description, NEW.completed))
    EXECUTE FUNCTION tasks.bump_version();

-- How many tasks each user holds, so that the cap is checked on a few rows instead of a count(*)
-- over the user's tasks. Kept by statement-level triggers (any writer keeps it right, and a purge
-- of 10 000 tasks is one statement), spread over 16 rows per user (by task id): one row would
-- make every create of a user wait for the previous one's commit, since each must update it.
CREATE TABLE tasks.task_counts (
    user_id uuid     NOT NULL,
    shard   smallint NOT NULL,
    tasks   integer  NOT NULL CHECK (tasks >= 0),
    PRIMARY KEY (user_id, shard)
);

INSERT INTO tasks.task_counts (user_id, shard, tasks)
SELECT user_id, id % 16, count(*) FROM tasks.tasks GROUP BY user_id, id % 16;

CREATE FUNCTION tasks.count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tasks.task_counts AS c (user_id, shard, tasks)
    SELECT user_id, id % 16, count(*) FROM inserted GROUP BY user_id, id % 16
    ON CONFLICT (user_id, shard) DO UPDATE SET tasks = c.tasks + EXCLUDED.tasks;
    RETURN NULL;
END $$;

CREATE FUNCTION tasks.count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks.task_counts c SET tasks = greatest(c.tasks - gone.n, 0)
    FROM (SELECT user_id, id % 16 AS shard, count(*) AS n FROM deleted GROUP BY 1, 2) gone
    WHERE c.user_id = gone.user_id AND c.shard = gone.shard;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_count_inserted AFTER INSERT ON tasks.tasks
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION tasks.count_inserted();

CREATE TRIGGER tasks_count_deleted AFTER DELETE ON tasks.tasks
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION tasks.count_deleted();

-- `Idempotency-Key` of `POST /api/v1/tasks`: a retry with the same key and body gets the first
-- answer back instead of a second task. Keys are the user's own, and live until `expires_at`
-- (IDEMPOTENCY_KEY_TTL_SECONDS); a background job deletes expired ones through the index below,
-- never the request path.
CREATE TABLE tasks.idempotency_keys (
    user_id     uuid        NOT NULL,
    key         text        NOT NULL,
    -- SHA-256 of the request's fields: the same key with another body is refused.
    fingerprint bytea       NOT NULL,
    -- The first answer, replayed to every retry.
    status      smallint    NOT NULL,
    etag        text        NOT NULL,
    body        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);

CREATE INDEX idempotency_keys_expires_at ON tasks.idempotency_keys (expires_at);
