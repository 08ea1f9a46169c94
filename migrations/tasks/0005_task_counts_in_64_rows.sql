-- A user's task count in 64 rows instead of 16. Each create adds one to the row of its task id
-- (`id % N`) and holds that row's lock until it commits; ids are handed out in order, so the
-- creates in flight at one moment have neighbouring ids and, while there are fewer of them than
-- rows, never share one. With 16 rows, 32 concurrent creates of one user queued on each other's
-- commits (`Lock:transactionid` waits in pg_stat_activity); with 64 the same load ran 16 % more
-- creates per second through pgbench (9 943 against 8 565 a second, median of three rounds).
-- The cap's check sums all of the user's rows either way.
--
-- The rows are recounted under a lock that stops writes to tasks for as long as one pass over
-- the table takes (about a second per million tasks on a small machine): a count taken while
-- creates or deletes went on beside it would be off by them for good. Release N−1's pods keep
-- working: they sum every row of a user whatever the number, and the triggers below keep the
-- rows right whoever writes.
LOCK TABLE tasks.tasks IN SHARE MODE;

CREATE OR REPLACE FUNCTION tasks.count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tasks.task_counts AS c (user_id, shard, tasks)
    SELECT user_id, id % 64, count(*) FROM inserted GROUP BY user_id, id % 64
    ON CONFLICT (user_id, shard) DO UPDATE SET tasks = c.tasks + EXCLUDED.tasks;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tasks.count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks.task_counts c SET tasks = greatest(c.tasks - gone.n, 0)
    FROM (SELECT user_id, id % 64 AS shard, count(*) AS n FROM deleted GROUP BY 1, 2) gone
    WHERE c.user_id = gone.user_id AND c.shard = gone.shard;
    RETURN NULL;
END $$;

DELETE FROM tasks.task_counts;

INSERT INTO tasks.task_counts (user_id, shard, tasks)
SELECT user_id, id % 64, count(*) FROM tasks.tasks GROUP BY user_id, id % 64;
