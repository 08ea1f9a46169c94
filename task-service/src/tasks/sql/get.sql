SELECT id, user_id, title, description, completed, created_at, updated_at, version
FROM tasks.tasks WHERE id = $1 AND user_id = $2
