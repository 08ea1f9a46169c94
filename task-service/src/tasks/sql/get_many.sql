SELECT t.id, t.user_id, t.title, t.description, t.completed, t.created_at, t.updated_at, t.version
FROM unnest($1::int8[], $2::uuid[]) AS wanted(id, user_id)
JOIN tasks.tasks t ON t.id = wanted.id AND t.user_id = wanted.user_id
