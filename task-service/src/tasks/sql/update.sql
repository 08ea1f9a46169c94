UPDATE tasks.tasks SET
    title = coalesce($3, title),
    description = CASE WHEN $4 THEN $5 ELSE description END,
    completed = coalesce($6, completed),
    updated_at = CASE
        WHEN (coalesce($3, title), CASE WHEN $4 THEN $5 ELSE description END,
              coalesce($6, completed))
             IS DISTINCT FROM (title, description, completed)
        THEN now() ELSE updated_at END
WHERE id = $1 AND user_id = $2 AND ($7::int8[] IS NULL OR version = ANY($7))
RETURNING id, user_id, title, description, completed, created_at, updated_at, version
