-- Deleted accounts' tasks are purged by task-service itself, from auth-service's deleted-users
-- feed. `tasks.user_id` gets no foreign key, on purpose: the users live in auth-service's schema,
-- which this service never reads (each service owns its schema and migrates it alone, and in a
-- split deployment the schemas need not share a database). A cascade cannot cross that line,
-- so the purge is this service's job, and this row is how far it has read.
CREATE TABLE tasks.deleted_users_cursor (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    -- The feed's `seq` up to which every deletion has been purged. Replicas race to move it;
    -- it only moves forward (GREATEST), and purging twice deletes nothing the second time.
    last_seq bigint  NOT NULL
);

INSERT INTO tasks.deleted_users_cursor (last_seq) VALUES (0);
