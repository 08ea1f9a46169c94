-- Allowances: a create checks TASKS_MAX_PER_USER by updating the one count row its task lands
-- in, instead of reading all 64 of the user's count rows. Reading them cost a create as much as
-- the insert itself, and more the longer a user kept creating, as the rows' versions spread over
-- more pages (29 µs fresh, 67 µs after a long stream of creates; the capped insert cost 150–163 µs
-- of PostgreSQL CPU against 91–113 µs for the bare insert).
--
-- The service grants each of a user's count rows an allowance, `allowed`, such that the
-- allowances add up to at most the cap it was running with (`allowed_under`), and never less than
-- the row's own count. A create then inserts with `tasks.allowance_cap` set to the cap, and the
-- BEFORE trigger below adds the task to its row only while that row stays within its allowance;
-- otherwise the row is skipped, the insert returns nothing, and the service takes the locked path:
-- it locks all the user's count rows, counts them, inserts, and grants new allowances from what is
-- left under the cap. So the sum of a user's tasks never passes the sum of the allowances, which
-- never passes the cap.
--
-- An insert made without `tasks.allowance_cap` (an operator's SQL, a restore, release
-- N−1's pods during a rolling upgrade) is not checked against any allowance, so it withdraws the
-- user's allowances: the service's next create takes the locked path and counts again. A change
-- of TASKS_MAX_PER_USER does the same through `allowed_under`. Expand only: release N−1 ignores
-- the new columns and counts the rows as before.
ALTER TABLE tasks.task_counts
    ADD COLUMN allowed integer,
    ADD COLUMN allowed_under integer;

-- Lets an unchecked insert find the allowances to withdraw without reading the user's 64 rows
-- when there are none (the usual case for such inserts).
CREATE INDEX task_counts_with_allowance ON tasks.task_counts (user_id) WHERE allowed IS NOT NULL;

CREATE FUNCTION tasks.count_within_allowance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks.task_counts SET tasks = tasks + 1
    WHERE user_id = NEW.user_id AND shard = NEW.id % 64
      AND allowed_under = current_setting('tasks.allowance_cap')::integer
      AND tasks < allowed;
    IF FOUND THEN
        RETURN NEW;
    END IF;
    -- No allowance left in this row (or none granted, or granted under another cap): the row is
    -- not inserted, and the service counts under a lock instead.
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_count_within_allowance BEFORE INSERT ON tasks.tasks
    FOR EACH ROW WHEN (current_setting('tasks.allowance_cap', true) <> '')
    EXECUTE FUNCTION tasks.count_within_allowance();

-- The allowances are withdrawn before the count is raised, and rows are locked in shard order
-- whichever statement locks several of a user's rows (this one, and the service's count under
-- a lock): two such statements then never wait for each other in a cycle.
CREATE OR REPLACE FUNCTION tasks.count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tasks.allowance_cap', true) <> '' THEN
        RETURN NULL; -- counted row by row, within allowances, by tasks_count_within_allowance
    END IF;
    UPDATE tasks.task_counts c SET allowed = NULL, allowed_under = NULL
    FROM (SELECT user_id, shard FROM tasks.task_counts
          WHERE user_id IN (SELECT user_id FROM inserted) AND allowed IS NOT NULL
          ORDER BY user_id, shard FOR UPDATE) granted
    WHERE c.user_id = granted.user_id AND c.shard = granted.shard;
    INSERT INTO tasks.task_counts AS c (user_id, shard, tasks)
    SELECT user_id, id % 64, count(*) FROM inserted GROUP BY user_id, id % 64 ORDER BY 1, 2
    ON CONFLICT (user_id, shard) DO UPDATE SET tasks = c.tasks + EXCLUDED.tasks;
    RETURN NULL;
END $$;
