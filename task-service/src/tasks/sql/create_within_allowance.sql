INSERT INTO tasks.tasks (user_id, title, description)
SELECT $1, $2, $3
WHERE set_config('tasks.allowance_cap', $4::integer::text, true) IS NOT NULL
RETURNING id, user_id, title, description, completed, created_at, updated_at, version
