SELECT id, version
FROM tasks.tasks WHERE user_id = $1 AND id < $2
ORDER BY id DESC LIMIT $3
