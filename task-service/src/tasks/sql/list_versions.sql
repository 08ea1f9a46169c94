-- The page's ids and versions as two arrays in one row, cheaper to send and to read than a row
-- per task; the caller puts them in the list's order itself (id descending), since an
-- aggregate's input order is not promised.
SELECT coalesce(array_agg(id), '{}') AS "ids!", coalesce(array_agg(version), '{}') AS "versions!"
FROM (SELECT id, version FROM tasks.tasks WHERE user_id = $1 AND id < $2
      ORDER BY id DESC LIMIT $3) page
