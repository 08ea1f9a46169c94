WITH wanted AS MATERIALIZED (
    SELECT nextval('tasks.tasks_id_seq') AS id, w.user_id, w.title, w.description, w.slot
    FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS w(user_id, title, description, slot)
    WHERE set_config('tasks.allowance_cap', $4::integer::text, true) IS NOT NULL
), created AS (
    INSERT INTO tasks.tasks (id, user_id, title, description) OVERRIDING SYSTEM VALUE
    SELECT id, user_id, title, description FROM wanted
    ORDER BY user_id, id % 64
    RETURNING id, user_id, title, description, completed, created_at, updated_at, version
)
SELECT wanted.slot AS "slot!", created.id AS "id!", created.user_id AS "user_id!",
       created.title AS "title!", created.description, created.completed AS "completed!",
       created.created_at AS "created_at!", created.updated_at AS "updated_at!",
       created.version AS "version!"
FROM created JOIN wanted USING (id)
