//! What both services share: configuration pieces, the HTTP stack, errors as problem+json,
//! the JWT key ring and the `AuthUser` extractor, the database pool, metrics, telemetry,
//! health endpoints, the listeners (a connection cap, header read and keep-alive timeouts),
//! graceful shutdown and the revoked-sessions cache.

pub mod auth;
pub mod connection;
pub mod db;
pub mod db_check;
pub mod deleted_users;
pub mod extract;
pub mod health;
pub mod http;
pub mod jwt;
pub mod jwt_hmac;
pub mod listener;
pub mod lost_connections;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod request_fields;
pub mod revocation;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod timestamp;
pub mod verified_tokens;

#[cfg(feature = "test-support")]
pub mod postgres;
#[cfg(feature = "test-support")]
pub mod test_args;
#[cfg(feature = "test-support")]
pub mod test_metrics;
#[cfg(feature = "test-support")]
pub mod test_wait;
#[cfg(feature = "test-support")]
pub mod token_attacks;

pub use problem::Problem;
