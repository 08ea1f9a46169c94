SELECT id, version
FROM tasks.tasks WHERE user_id = $1 AND completed = $2 AND id < $3
ORDER BY id DESC LIMIT $4
