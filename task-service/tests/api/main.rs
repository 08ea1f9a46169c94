//! task-service through real HTTP on port 0, against a fresh PostgreSQL database per test.

mod admin;
mod auth;
mod conditional;
mod connections;
mod count_row_lock_order;
mod create;
mod create_coalescing;
mod database_roles;
mod delete;
mod helpers;
mod idempotency;
mod key_rotation;
mod lifecycle;
mod list;
mod list_cache;
mod metric_labels;
mod migration_locks;
mod plans;
mod pool_release;
mod pooler_safe;
mod read;
mod revocation;
mod task_cap;
mod test_support;
mod update;
