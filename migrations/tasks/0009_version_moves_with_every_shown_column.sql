-- task-service keeps list pages by each task's id and version (task-service/src/tasks/page_cache.rs):
-- a task's JSON must be a function of the two. So the version moves whenever any column the
-- JSON shows changes, a write of `updated_at` or `created_at` alone included (an operator's SQL),
-- and a write of `version` itself cannot set it back to a value it had: the trigger makes it the
-- old version + 1. The service's own writes are unchanged: an update that changes nothing
-- leaves `updated_at` and the version as they were.
DROP TRIGGER tasks_bump_version ON tasks.tasks;
CREATE TRIGGER tasks_bump_version BEFORE UPDATE ON tasks.tasks
    FOR EACH ROW
    WHEN ((OLD.title, OLD.description, OLD.completed, OLD.created_at, OLD.updated_at, OLD.version)
          IS DISTINCT FROM (NEW.title, NEW.description, NEW.completed, NEW.created_at, NEW.updated_at, NEW.version))
    EXECUTE FUNCTION tasks.bump_version();
