-- A delete of many tasks now takes their count rows in key order, `(user_id, shard)`, as a batch
-- of creates and a count under the lock already did, so that it never waits for one of them in a
-- cycle (PostgreSQL would roll one back; a batch of creates would answer 503 to every create in
-- it).
--
-- A delete of tasks in several count rows (a purge of deleted accounts, an operator's SQL)
-- updated the rows through a hash join over a scan of `task_counts`, which locks them in the
-- table's physical order: not key order once any count row has changed. It now locks them in
-- key order first. A delete of one task, the API's own, touches one count row and has no order
-- to keep: it skips the extra pass.
--
-- Left as it was: an insert made without an allowance (`count_inserted`) locks the users' rows
-- with allowances and then the rows it counts in, each pass in key order. Locking all of a
-- user's rows in one pass first was tried: it deadlocked with a count under the lock, whose
-- first statement creates the user's missing count rows (locks this pass cannot see) before
-- it locks the rest in order.
--
-- Release N−1's pods run the same statements; only the order of their locks changes.
CREATE OR REPLACE FUNCTION tasks.count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM deleted OFFSET 1) THEN
        PERFORM FROM tasks.task_counts c
        WHERE (c.user_id, c.shard) IN (SELECT user_id, id % 64 FROM deleted)
        ORDER BY c.user_id, c.shard
        FOR UPDATE;
    END IF;
    UPDATE tasks.task_counts c SET tasks = greatest(c.tasks - gone.n, 0)
    FROM (SELECT user_id, id % 64 AS shard, count(*) AS n FROM deleted GROUP BY 1, 2) gone
    WHERE c.user_id = gone.user_id AND c.shard = gone.shard;
    RETURN NULL;
END $$;
