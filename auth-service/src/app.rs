//! Building the application: state, routes, background tasks and the two listeners. `main`,
//! the tests and the local runner all build it through `Application::build`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::routing::get;
use common::auth::Authenticator;
use common::db::Db;
use common::extract::RequestShape;
use common::jwt::KeyRing;
use common::server::Server;
use common::service::{Foundation, ServiceSpec};

use crate::client_ip::TrustedProxies;
use crate::config::Config;
use crate::hashing::PasswordHasher;
use crate::limits::Limits;
use crate::metrics::AuthMetrics;
use crate::sessions::store::Lifetimes;
use crate::{MIGRATOR, SCHEMA, account, feed, openapi, sessions, users};

common::shared_state!(AppState, Shared);

/// What every request reaches.
pub struct Shared {
    pub db: Db,
    pub auth: Authenticator,
    pub hasher: Arc<PasswordHasher>,
    pub lifetimes: Lifetimes,
    pub metrics: AuthMetrics,
    pub trusted_proxies: TrustedProxies,
    pub limits: Limits,
}

impl RequestShape for AppState {
    const SHAPE_ERROR: StatusCode = StatusCode::BAD_REQUEST;
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl FromRef<AppState> for TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        state.trusted_proxies.clone()
    }
}

/// Every API route, without the shared middleware stack.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(users::router())
        .merge(sessions::router())
        .merge(account::router())
        .route("/healthz", get(common::health::healthz))
        .with_state(state)
        .merge(openapi::routes())
}

/// Builds auth-service: migrates if configured, starts the background tasks, binds the
/// listeners. `main`, the tests and the local runner all start it this way.
pub async fn build(config: Config) -> anyhow::Result<Server> {
    let keys = Arc::new(KeyRing::from_args(&config.jwt)?);
    let spec = ServiceSpec {
        name: "auth-service",
        version: env!("CARGO_PKG_VERSION"),
        schema: SCHEMA,
        migrator: &MIGRATOR,
    };
    let migrate_with = config.migrate_on_start.then_some(&config.migrate);
    let base = Foundation::start(spec, &config.database, migrate_with).await?;
    // Its own table is right there, but the rule is task-service's: not ready, and no bearer
    // token accepted, before the first read.
    let revoked = config.revocation.polled_cache(&base.registry)?;
    feed::spawn_own_poller(
        base.db.clone(),
        revoked.clone(),
        config.revocation.poll_interval(),
        base.background.clone(),
    );
    feed::spawn_cleanup(
        base.db.clone(),
        Duration::from_secs(config.cleanup_interval_seconds),
        config.deleted_users_retention_seconds,
        base.background.clone(),
    );
    let metrics = AuthMetrics::register(&base.registry)?;
    let state = AppState::new(Shared {
        db: base.db.clone(),
        auth: Authenticator {
            keys,
            revoked: revoked.clone(),
        },
        hasher: Arc::new(PasswordHasher::start(&config.hashing, &base.registry)?),
        lifetimes: Lifetimes {
            session_max_seconds: config.tokens.session_max_lifetime_seconds,
            reuse_grace_seconds: config.tokens.refresh_token_reuse_grace_seconds,
            ..Lifetimes::new(
                config.tokens.access_token_ttl_seconds,
                config.jwt.jwt_leeway_seconds,
                config.tokens.refresh_token_ttl_seconds,
            )
        },
        limits: Limits::new(&config.limits, metrics.clone())?,
        metrics,
        trusted_proxies: TrustedProxies(Arc::new(config.limits.trusted_proxies.0.clone())),
    });
    let admin_routes = feed::admin_routes(base.db.clone());
    base.bind(&config.http, router(state), admin_routes, revoked)
        .await
}
