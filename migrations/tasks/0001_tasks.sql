-- task-service owns the `tasks` schema; auth-service never reads it.

CREATE TABLE tasks.tasks (
    -- Sequential ids are fine to expose: another user's task answers 404, never 403, so an id
    -- confirms nothing about tasks that are not yours.
    id          bigint       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key: users live in auth-service's schema. The access token's `sub` is the only
    -- source of this value.
    user_id     uuid         NOT NULL,
    title       varchar(200) NOT NULL,
    description text,
    completed   boolean      NOT NULL DEFAULT false,
    created_at  timestamptz  NOT NULL DEFAULT now(),
    updated_at  timestamptz  NOT NULL DEFAULT now(),
    -- The API validates these first; the database holds the line if a caller ever does not.
    CONSTRAINT title_length CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT description_length CHECK (char_length(description) <= 1000)
);

-- Serves `WHERE user_id = $1 [AND id < $after] ORDER BY id DESC LIMIT $n`, and every
-- single-task lookup, which is always scoped to its owner.
CREATE INDEX tasks_user_id_id ON tasks.tasks (user_id, id DESC);
-- Serves the same listing filtered by `completed`, without reading the other half.
CREATE INDEX tasks_user_id_completed_id ON tasks.tasks (user_id, completed, id DESC);
