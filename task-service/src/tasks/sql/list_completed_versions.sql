-- As `list_versions.sql`, for a list of completed (or open) tasks.
SELECT coalesce(array_agg(id), '{}') AS "ids!", coalesce(array_agg(version), '{}') AS "versions!"
FROM (SELECT id, version FROM tasks.tasks WHERE user_id = $1 AND completed = $2 AND id < $3
      ORDER BY id DESC LIMIT $4) page
