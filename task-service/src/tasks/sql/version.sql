SELECT version FROM tasks.tasks WHERE id = $1 AND user_id = $2
