SELECT id, user_id, title, description, completed, created_at, updated_at, version
FROM tasks.tasks WHERE user_id = $1 AND completed = $2 AND id < $3
ORDER BY id DESC LIMIT $4
