//! Building the application: state, routes, the pollers of auth-service's feeds (revoked
//! sessions, deleted users) and the two listeners.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::routing::get;
use common::auth::Authenticator;
use common::db::Db;
use common::extract::RequestShape;
use common::jwt::KeyRing;
use common::revocation::RevokedSessions;
use common::server::Server;
use common::service::{Foundation, ServiceSpec};

use crate::config::Config;
use crate::metrics::TaskMetrics;
use crate::purge::{PurgeMetrics, Purger};
use crate::tasks::creator::TaskCreator;
use crate::tasks::page_cache::PageCache;
use crate::tasks::reader::TaskReader;
use crate::{MIGRATOR, SCHEMA, openapi, revocation_feed, tasks};

common::shared_state!(AppState, Shared);

/// What every request reaches.
pub struct Shared {
    pub db: Db,
    pub reader: TaskReader,
    pub creator: TaskCreator,
    pub pages: PageCache,
    pub auth: Authenticator,
    pub metrics: TaskMetrics,
    pub limits: TaskLimits,
}

/// The per-user limits of the tasks API.
#[derive(Debug, Clone, Copy)]
pub struct TaskLimits {
    pub max_per_user: i32,
    pub idempotency_key_ttl_seconds: u64,
}

impl RequestShape for AppState {
    const SHAPE_ERROR: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// Every API route, without the shared middleware stack.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(tasks::router())
        .route("/healthz", get(common::health::healthz))
        .with_state(state)
        .merge(openapi::routes())
}

/// Builds task-service: migrates if configured, starts the revocation poller, binds the
/// listeners. `main`, the tests and the local runner all start it this way.
pub async fn build(config: Config) -> anyhow::Result<Server> {
    let keys = Arc::new(KeyRing::from_args(&config.jwt)?);
    let spec = ServiceSpec {
        name: "task-service",
        version: env!("CARGO_PKG_VERSION"),
        schema: SCHEMA,
        migrator: &MIGRATOR,
    };
    let migrate_with = config.migrate_on_start.then_some(&config.migrate);
    let base = Foundation::start(spec, &config.database, migrate_with).await?;
    let revoked = match config
        .auth_admin_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    {
        Some(url) => {
            let revoked = config.revocation.polled_cache(&base.registry)?;
            revocation_feed::spawn(
                url,
                revoked.clone(),
                config.revocation.poll_interval(),
                base.background.clone(),
            )?;
            Purger::new(
                url,
                base.db.clone(),
                config.revocation.max_staleness()
                    + std::time::Duration::from_millis(config.http.request_timeout_ms),
                PurgeMetrics::register(&base.registry)?,
            )?
            .spawn(config.revocation.poll_interval(), base.background.clone());
            revoked
        }
        None => {
            tracing::warn!(
                "AUTH_ADMIN_URL is not set: logged-out sessions keep working here until their access tokens expire, and deleted accounts' tasks are not purged"
            );
            RevokedSessions::off()
        }
    };
    let state = AppState::new(Shared {
        db: base.db.clone(),
        reader: TaskReader::start(
            base.db.clone(),
            config.read_coalescing_in_flight,
            &base.registry,
        )?,
        creator: TaskCreator::start(
            base.db.clone(),
            config.tasks_max_per_user,
            config.create_coalescing_in_flight,
            &base.registry,
        )?,
        pages: PageCache::new(config.list_cache_max_bytes, &base.registry)?,
        auth: Authenticator {
            keys,
            revoked: revoked.clone(),
        },
        metrics: TaskMetrics::register(&base.registry)?,
        limits: TaskLimits {
            max_per_user: config.tasks_max_per_user,
            idempotency_key_ttl_seconds: config.idempotency_key_ttl_seconds,
        },
    });
    tasks::idempotency::spawn_cleanup(base.db.clone(), base.background.clone());
    base.bind(&config.http, router(state), Router::new(), revoked)
        .await
}
