//! task-service: each user's todo tasks. Verifies access tokens itself with the shared key and
//! learns of ended sessions from auth-service's revocation feed, off the request path.

pub mod app;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod purge;
pub mod revocation_feed;
pub mod tasks;

pub use app::{AppState, build, router};
pub use config::Config;

/// The schema this service owns and migrates.
pub const SCHEMA: &str = "tasks";

/// This service's migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/tasks");
