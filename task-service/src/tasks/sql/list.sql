SELECT id, user_id, title, description, completed, created_at, updated_at, version
FROM tasks.tasks WHERE user_id = $1 AND id < $2
ORDER BY id DESC LIMIT $3
