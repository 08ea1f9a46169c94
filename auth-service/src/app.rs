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
use common::health::{AdminState, Draining};
use common::jwt::KeyRing;
use common::revocation::RevokedSessions;
use common::server::Server;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::client_ip::TrustedProxies;
use crate::config::Config;
use crate::hashing::PasswordHasher;
use crate::metrics::AuthMetrics;
use crate::sessions::store::Lifetimes;
use crate::{MIGRATOR, SCHEMA, feed, openapi, sessions, users};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub auth: Authenticator,
    pub hasher: Arc<PasswordHasher>,
    pub lifetimes: Lifetimes,
    pub metrics: AuthMetrics,
    pub trusted_proxies: TrustedProxies,
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
        .route("/healthz", get(common::health::healthz))
        .with_state(state)
        .merge(openapi::routes())
}

pub struct Application {
    server: Server,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let keys = Arc::new(KeyRing::from_args(&config.jwt)?);
        if config.migrate_on_start {
            let url = config
                .migrate
                .migration_database_url
                .as_ref()
                .unwrap_or(&config.database.database_url);
            common::db::migrate(url, SCHEMA, &MIGRATOR).await?;
        }
        let registry = Registry::new();
        common::metrics::register_build_info(&registry, "auth-service", env!("CARGO_PKG_VERSION"))?;
        let http_metrics = common::metrics::HttpMetrics::register(&registry)?;
        let db = Db::connect_lazy(&config.database, &registry)?;
        let background = CancellationToken::new();
        let revoked = RevokedSessions::default();
        feed::spawn_own_poller(
            db.clone(),
            revoked.clone(),
            Duration::from_secs(config.revocation_poll_seconds),
            background.clone(),
        );
        feed::spawn_cleanup(
            db.clone(),
            Duration::from_secs(config.cleanup_interval_seconds),
            background.clone(),
        );
        let state = AppState {
            db: db.clone(),
            auth: Authenticator { keys, revoked },
            hasher: Arc::new(PasswordHasher::start(&config.hashing, &registry)?),
            lifetimes: Lifetimes {
                access_seconds: config.tokens.access_token_ttl_seconds,
                refresh_seconds: config.tokens.refresh_token_ttl_seconds,
            },
            metrics: AuthMetrics::register(&registry)?,
            trusted_proxies: TrustedProxies(Arc::new(config.limits.trusted_proxies.clone())),
        };
        let draining = Draining::default();
        let api = common::http::api_stack(router(state), &config.http, http_metrics)?;
        let admin = common::health::admin_router(AdminState {
            db: db.clone(),
            schema: SCHEMA,
            migrator: &MIGRATOR,
            registry,
            draining: draining.clone(),
        })
        .merge(feed::admin_routes(db));
        let server = Server::bind(&config.http, api, admin, draining, background).await?;
        Ok(Self { server })
    }

    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.server.api_addr()
    }

    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.server.admin_addr()
    }

    pub async fn run_until_stopped(self, stop: impl Future<Output = ()> + Send + 'static) {
        self.server.run_until_stopped(stop).await;
    }
}
