-- A delete of tasks in several count rows (a purge of deleted accounts, an operator's SQL) now
-- locks those count rows in key order, `(user_id, shard)`, before it lowers them, as every other
-- statement that locks several count rows does (a batch of creates, a count under a lock, an
-- insert without allowances). Before, the update locked them in the order of its hash join, so
-- a purge and a batch of creates holding the same user's rows in the other order could wait for
-- each other in a cycle, until PostgreSQL rolled one of them back (the create answered 503).
--
-- A delete of one task, the API's own, touches one count row and has no order to keep: it
-- skips the extra pass. Release N−1's pods run the same deletes; the function only changes the
-- order its locks are taken in.
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
