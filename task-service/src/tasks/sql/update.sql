-- `was` is the task as this statement's snapshot has it: whether this update is what completes it.
UPDATE tasks.tasks t SET
    title = coalesce($3, t.title),
    description = CASE WHEN $4 THEN $5 ELSE t.description END,
    completed = coalesce($6, t.completed),
    updated_at = CASE
        WHEN (coalesce($3, t.title), CASE WHEN $4 THEN $5 ELSE t.description END,
              coalesce($6, t.completed))
             IS DISTINCT FROM (t.title, t.description, t.completed)
        THEN now() ELSE t.updated_at END
FROM tasks.tasks was
WHERE t.id = $1 AND t.user_id = $2 AND ($7::int8[] IS NULL OR t.version = ANY($7))
  AND was.id = t.id AND was.user_id = t.user_id
RETURNING t.id, t.user_id, t.title, t.description, t.completed, t.created_at, t.updated_at,
          t.version, t.completed AND NOT was.completed AS "newly_completed!"
