DELETE FROM tasks.tasks
WHERE id = $1 AND user_id = $2 AND ($3::int8[] IS NULL OR version = ANY($3))
