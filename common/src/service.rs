//! What every service does to start, whatever its routes: migrate its schema, create its
//! metrics registry and pool, and finally bind the API and admin listeners around its routers.

use axum::Router;
use prometheus::Registry;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::db::{DatabaseArgs, Db, MigrateArgs};
use crate::health::{AdminState, Draining};
use crate::http::HttpArgs;
use crate::listener::ConnectionMetrics;
use crate::metrics::HttpMetrics;
use crate::revocation::RevokedSessions;
use crate::server::Server;

/// A service's identity: its name, version and the schema it owns.
pub struct ServiceSpec {
    pub name: &'static str,
    pub version: &'static str,
    pub schema: &'static str,
    pub migrator: &'static Migrator,
}

pub struct Foundation {
    spec: ServiceSpec,
    pub registry: Registry,
    pub db: Db,
    /// Cancelled when the service stops: background tasks watch it.
    pub background: CancellationToken,
    http_metrics: HttpMetrics,
    connection_metrics: ConnectionMetrics,
}

impl Foundation {
    /// Migrates (when `migrate_with` is given), checks the database connection
    /// (`db_check::check_at_startup`), then builds the registry and the pool.
    pub async fn start(
        spec: ServiceSpec,
        database: &DatabaseArgs,
        migrate_with: Option<&MigrateArgs>,
    ) -> anyhow::Result<Self> {
        if let Some(migrate) = migrate_with {
            migrate.apply(database, spec.schema, spec.migrator).await?;
        }
        let registry = Registry::new();
        crate::metrics::register_build_info(&registry, spec.name, spec.version)?;
        crate::metrics::register_process(&registry)?;
        let http_metrics = HttpMetrics::register(&registry)?;
        let connection_metrics = ConnectionMetrics::register(&registry)?;
        // A misconfigured TLS or an incompatible pooler stops the start here, with one line
        // saying what to change; an unreachable database does not (readiness reports it).
        crate::db_check::check_at_startup(&database.connect_options()?).await?;
        let db = Db::connect_lazy(database, &registry)?;
        Ok(Self {
            spec,
            registry,
            db,
            background: CancellationToken::new(),
            http_metrics,
            connection_metrics,
        })
    }

    /// Wraps `api` in the shared HTTP stack, adds `admin_routes` to the admin router, and binds;
    /// readiness also waits for `revoked` (the cache the service's `AuthUser` reads).
    pub async fn bind(
        self,
        http: &HttpArgs,
        api: Router,
        admin_routes: Router,
        revoked: RevokedSessions,
    ) -> anyhow::Result<Server> {
        let draining = Draining::default();
        let api = crate::http::api_stack(api, http, self.http_metrics)?;
        let admin = crate::health::admin_router(AdminState {
            db: self.db,
            schema: self.spec.schema,
            migrator: self.spec.migrator,
            registry: self.registry,
            draining: draining.clone(),
            revoked,
        })
        .merge(admin_routes);
        Server::bind(
            http,
            api,
            admin,
            draining,
            self.background,
            &self.connection_metrics,
        )
        .await
    }
}
