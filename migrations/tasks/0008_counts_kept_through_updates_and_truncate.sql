-- The task counts (`tasks.task_counts`, one row per user and shard) were kept by the insert and
-- delete triggers only, so two other writes made them drift for good:
--   * an UPDATE of a task's `user_id` or `id` moved the task to another count row without
--     moving its count (the old owner stayed counted, the new one was not: the cap then refused
--     the first and let the second past it);
--   * a TRUNCATE removed every task and no count.
-- A task's owner and id identify it (the primary key, its ETag, its idempotency record), so
-- instead of being counted, changing them is refused: give a task to another user by inserting
-- it for them and deleting it here, and both counts follow. A TRUNCATE empties the counts too.
--
-- The service never does either; release N−1's pods are unaffected.
CREATE FUNCTION tasks.refuse_owner_or_id_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a task''s user_id and id do not change (task %)', OLD.id
        USING ERRCODE = 'check_violation',
              HINT = 'insert the task for its new owner and delete this one: the task counts follow both';
END $$;

CREATE TRIGGER tasks_refuse_owner_or_id_change BEFORE UPDATE OF user_id, id ON tasks.tasks
    FOR EACH ROW
    WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id OR OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION tasks.refuse_owner_or_id_change();

CREATE FUNCTION tasks.count_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tasks.task_counts;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_count_truncated AFTER TRUNCATE ON tasks.tasks
    FOR EACH STATEMENT EXECUTE FUNCTION tasks.count_truncated();
