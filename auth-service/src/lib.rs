//! auth-service: registers users, logs them in with HS256 access tokens and rotating refresh
//! tokens, ends sessions, and publishes revoked sessions to task-service.

pub mod account;
pub mod app;
pub mod client_ip;
pub mod config;
pub mod credentials;
pub mod error;
pub mod feed;
pub mod hashing;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod operator;
pub mod sessions;
pub mod users;

pub use app::{AppState, build, router};
pub use config::Config;

/// The schema this service owns and migrates.
pub const SCHEMA: &str = "auth";

/// This service's migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/auth");
