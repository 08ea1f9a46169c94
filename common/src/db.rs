//! The PostgreSQL pool: building it, timing acquisitions, migrating a service's own schema,
//! checking readiness, and turning database failures into the right problem.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGaugeVec, Opts, Registry};
use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, Postgres, Transaction};
use tracing::Instrument;

use crate::Problem;
use crate::lost_connections::{LossFence, is_connection_lost};
use crate::secret::parse_secret;

#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// PostgreSQL URL; `?sslmode=require` (Neon) and `verify-full&sslrootcert=…` work.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: SecretString,
    /// Pool size per replica. Fewer connections cost the database less CPU; see the README.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,
    /// How long a request waits for a pooled connection before it gets a 503.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 3000)]
    pub database_acquire_timeout_ms: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Direct (non-pooled) URL for migrations: the migration lock is a session advisory lock.
    /// Defaults to DATABASE_URL.
    #[arg(long, env = "MIGRATION_DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub migration_database_url: Option<SecretString>,
    /// How long a migration's statement may wait for a lock on a table that another session
    /// holds before the migration gives up, having changed nothing; 0 waits without a bound.
    #[arg(long, env = "MIGRATION_LOCK_TIMEOUT_MS", default_value_t = MIGRATION_LOCK_TIMEOUT_MS)]
    pub migration_lock_timeout_ms: u64,
}

/// `MIGRATION_LOCK_TIMEOUT_MS`'s default: long enough for the API's own transactions (a few
/// milliseconds each) to end and let a migration through, short enough that the API's
/// statements queued behind a waiting migration are held up for no longer than this.
pub const MIGRATION_LOCK_TIMEOUT_MS: u64 = 5_000;
pub const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_millis(MIGRATION_LOCK_TIMEOUT_MS);

impl DatabaseArgs {
    /// The options the pool connects with (`pooler_safe`).
    pub fn connect_options(&self) -> anyhow::Result<PgConnectOptions> {
        Ok(pooler_safe(
            PgConnectOptions::from_str(self.database_url.expose_secret())
                .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?,
        ))
    }
}

impl MigrateArgs {
    /// The URL migrations use: MIGRATION_DATABASE_URL, else DATABASE_URL.
    pub fn url<'a>(&'a self, database: &'a DatabaseArgs) -> &'a SecretString {
        self.migration_database_url
            .as_ref()
            .unwrap_or(&database.database_url)
    }

    /// Applies `migrator` to `schema` as these settings say (`migrate`).
    pub async fn apply(
        &self,
        database: &DatabaseArgs,
        schema: &str,
        migrator: &Migrator,
    ) -> anyhow::Result<()> {
        let lock_timeout = Duration::from_millis(self.migration_lock_timeout_ms);
        migrate(self.url(database), schema, migrator, lock_timeout).await
    }
}

/// How many times a read (or a `BEGIN`) is sent in all when its connections keep turning out
/// dead: each try consumes one dead pooled connection, and after a loss is seen the pool checks
/// the rest, so a few are enough. Bounded, so a database that keeps dropping connections gets a
/// 503 rather than a loop.
pub const ATTEMPTS_ON_LOST_CONNECTIONS: usize = 3;

/// The pool plus the metrics of its use. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    metrics: DbMetrics,
    fence: Arc<LossFence>,
    readiness: Arc<ReadinessConnection>,
}

/// The connection `/readyz` asks the database on, outside the pool. A pool whose connections
/// are all busy (a load spike, a lock held for a while) says nothing about whether the database
/// answers; queued behind them, the check would time out, and every replica, saturated by the
/// same spike, would turn unready at once and leave the Service with no endpoint. Made on first
/// use and made again after any failure.
struct ReadinessConnection {
    options: PgConnectOptions,
    connection: tokio::sync::Mutex<Option<PgConnection>>,
}

#[derive(Clone)]
struct DbMetrics {
    acquire_wait: Histogram,
    acquire_timeouts: IntCounter,
    connections: IntGaugeVec,
    lost: IntCounter,
    retries: IntCounter,
    stale_discarded: IntCounter,
}

impl Db {
    /// Builds the pool without connecting: the service starts, and `/readyz` reports, even
    /// while the database is down.
    pub fn connect_lazy(args: &DatabaseArgs, registry: &Registry) -> anyhow::Result<Self> {
        let options = args.connect_options()?;
        let metrics = DbMetrics::register(registry, args.database_max_connections)?;
        let fence = Arc::new(LossFence::default());
        let (suspect, discarded) = (fence.clone(), metrics.stale_discarded.clone());
        let pool = PgPoolOptions::new()
            .max_connections(args.database_max_connections)
            .acquire_timeout(Duration::from_millis(args.database_acquire_timeout_ms))
            // A ping per acquire doubles the round trips: only connections that may have died
            // unseen (idle since before a loss was seen or just after it, or idle for long) are
            // pinged (`LossFence`). One whose ping fails is closed and sqlx takes another: the
            // request never sent anything on it. Nor is there a ping on release, unless the
            // connection is not at rest (vendor/README.md).
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                let check = suspect.suspects(meta.idle_for);
                let discarded = discarded.clone();
                Box::pin(async move {
                    if check && let Err(error) = conn.ping().await {
                        tracing::debug!(%error, "dropping a pooled connection the database closed");
                        discarded.inc();
                        return Ok(false);
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options.clone());
        Ok(Self {
            pool,
            metrics,
            fence,
            readiness: Arc::new(ReadinessConnection {
                options,
                connection: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Runs `work` — reads only — on a pooled connection, and again on another when its
    /// connection turned out to be lost (see [`is_connection_lost`]), up to
    /// [`ATTEMPTS_ON_LOST_CONNECTIONS`] times. Safe because a read has no effect: running it
    /// twice is running it once. Never pass a write here: a write whose connection died may
    /// have committed (see [`Db::observe`]).
    pub async fn read<T, F, Fut>(&self, mut work: F) -> Result<T, sqlx::Error>
    where
        F: FnMut(PoolConnection<Postgres>) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        // A failed acquire is returned at once (`?`): the database is down or saturated, and a
        // rerun would only wait again. Only a connection found dead is worth another try.
        let mut result = work(self.acquire().await?).await;
        for _ in 1..ATTEMPTS_ON_LOST_CONNECTIONS {
            match &result {
                Err(error) if is_connection_lost(error) => self.lost(error),
                _ => return result,
            }
            // The loss is recorded, so this acquire pings the connections that went idle before
            // it (or just after: the failed one among them) and replaces the dead ones. Another
            // try is still needed now and then: `pg_terminate_backend` only signals, so a
            // backend can answer its last statement and die just after.
            self.metrics.retries.inc();
            result = work(self.acquire().await?).await;
        }
        self.observe(result)
    }

    /// Passes a write's result through, recording a lost connection so that the pool checks
    /// the others before handing them out. The write is not run again: a statement whose
    /// connection died may have committed first — PostgreSQL ends a session it was told to
    /// terminate at the next interrupt check, which can fall after the commit and before the
    /// answer reached us, and on Neon a commit waiting for the safekeepers is durable locally
    /// when the compute stops — so a rerun could do the work twice (a second task, a refresh
    /// token spent twice and the session revoked as a reuse). The client gets a 503 and decides.
    pub fn observe<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if let Err(error) = &result
            && is_connection_lost(error)
        {
            self.lost(error);
        }
        result
    }

    fn lost(&self, error: &sqlx::Error) {
        tracing::info!(%error, "database connection lost");
        self.metrics.lost.inc();
        self.fence.record_loss();
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A pooled connection, timed; a pool exhausted past the acquire timeout is a 503.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let started = Instant::now();
        let result = self
            .pool
            .acquire()
            .instrument(child_span("db.pool.acquire"))
            .await;
        self.observe_acquire(started, &result);
        result
    }

    /// A transaction on a timed connection. A `BEGIN` that failed because its connection was
    /// lost is sent again on another: `BEGIN` changes nothing, so nothing was done. (Statements
    /// inside the transaction are the caller's; a failure at `COMMIT` may have committed.)
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut result = self.begin_once().await;
        for _ in 1..ATTEMPTS_ON_LOST_CONNECTIONS {
            match &result {
                Err(error) if is_connection_lost(error) => self.lost(error),
                _ => return result,
            }
            self.metrics.retries.inc();
            result = self.begin_once().await;
        }
        self.observe(result)
    }

    async fn begin_once(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let started = Instant::now();
        let result = self.pool.begin().instrument(child_span("db.begin")).await;
        self.observe_acquire(started, &result);
        result
    }

    fn observe_acquire<T>(&self, started: Instant, result: &Result<T, sqlx::Error>) {
        self.metrics
            .acquire_wait
            .observe(started.elapsed().as_secs_f64());
        if matches!(result, Err(sqlx::Error::PoolTimedOut)) {
            self.metrics.acquire_timeouts.inc();
        }
    }

    /// Updates the pool gauges; called just before each scrape.
    pub fn refresh_gauges(&self) {
        let size = i64::from(self.pool.size());
        let idle = i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX);
        let gauges = &self.metrics.connections;
        gauges.with_label_values(&["idle"]).set(idle);
        gauges.with_label_values(&["in_use"]).set(size - idle);
    }

    /// True when the database answers and `schema` is at least at the newest migration. Asked
    /// on a connection of its own (`ReadinessConnection`), never one of the pool's.
    pub async fn is_ready(&self, schema: &str, migrator: &Migrator, within: Duration) -> bool {
        let newest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let query = format!(
            "SELECT coalesce(max(version), 0) FROM {schema}._sqlx_migrations WHERE success"
        );
        let readiness = &self.readiness;
        let check = async {
            let mut slot = readiness.connection.lock().await;
            let connection = match slot.as_mut() {
                Some(connection) => connection,
                None => slot.insert(PgConnection::connect_with(&readiness.options).await?),
            };
            let applied = sqlx::query_scalar::<_, i64>(&query)
                .fetch_one(connection)
                .await;
            if applied.is_err() {
                *slot = None;
            }
            applied
        };
        match tokio::time::timeout(within, check).await {
            Ok(Ok(applied)) => applied >= newest,
            Ok(Err(error)) => {
                tracing::warn!(%error, "readiness: database check failed");
                false
            }
            Err(_) => {
                // Cut off mid-statement, the connection may still owe an answer: not reused.
                *readiness.connection.lock().await = None;
                tracing::warn!("readiness: database did not answer in time");
                false
            }
        }
    }
}

/// A client span for taking a connection (and, for `begin`, the BEGIN), so a pool wait shows in
/// the request's trace. Only inside a span: a background poll would otherwise start a trace of
/// its own every few seconds. Asked first whether database spans are made at all, which costs
/// less than looking up the current span.
pub(crate) fn child_span(name: &'static str) -> tracing::Span {
    if !tracing::enabled!(target: crate::telemetry::DB_SPANS, tracing::Level::INFO)
        || tracing::Span::current().is_none()
    {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: crate::telemetry::DB_SPANS,
        "db",
        otel.name = name,
        db.system = "postgresql",
        otel.kind = "client"
    )
}

impl DbMetrics {
    fn register(registry: &Registry, max_connections: u32) -> prometheus::Result<Self> {
        let acquire_wait = Histogram::with_opts(
            HistogramOpts::new(
                "db_pool_acquire_wait_seconds",
                "Time spent waiting for a pooled database connection.",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0,
            ]),
        )?;
        let acquire_timeouts = IntCounter::new(
            "db_pool_acquire_timeouts_total",
            "Requests that got no database connection within the acquire timeout.",
        )?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "db_pool_connections",
                "Open pooled connections by state (idle, in_use).",
            ),
            &["state"],
        )?;
        let max = prometheus::IntGauge::new(
            "db_pool_max_connections",
            "Configured pool size (DATABASE_MAX_CONNECTIONS).",
        )?;
        max.set(i64::from(max_connections));
        let lost = IntCounter::new(
            "db_connections_lost_total",
            "Statements that failed because the database had closed their connection.",
        )?;
        let retries = IntCounter::new(
            "db_retries_total",
            "Reads and BEGINs run again on another connection after theirs was lost.",
        )?;
        let stale_discarded = IntCounter::new(
            "db_stale_connections_discarded_total",
            "Pooled connections found closed by the database when taken, and replaced.",
        )?;
        let collectors: [Box<dyn prometheus::core::Collector>; 7] = [
            Box::new(acquire_wait.clone()),
            Box::new(acquire_timeouts.clone()),
            Box::new(connections.clone()),
            Box::new(max),
            Box::new(lost.clone()),
            Box::new(retries.clone()),
            Box::new(stale_discarded.clone()),
        ];
        for collector in collectors {
            registry.register(collector)?;
        }
        Ok(Self {
            acquire_wait,
            acquire_timeouts,
            connections,
            lost,
            retries,
            stale_discarded,
        })
    }
}

/// Runs `work` to the end even if the request that started it is cancelled (its client hung
/// up, or a timeout fired). A transaction future dropped between sending BEGIN or COMMIT and
/// reading the answer can return its connection to the pool inside a transaction, where the
/// next request's writes would ride along and could be rolled back; a spawned task is never
/// dropped halfway. Use it around every multi-statement transaction on the request path, and
/// around statements that must follow one another (refresh reuse detection: a client that
/// hangs up after presenting a spent token must not escape the revocation).
pub async fn run_to_completion<T, F>(work: F) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    use tracing::Instrument;
    match tokio::spawn(work.instrument(tracing::Span::current())).await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("transaction task cancelled: {error}"),
    }
}

/// The problem a database failure becomes. Unavailability is a 503 the client may retry;
/// anything else is a 500 whose cause is logged here, inside the request's span.
pub fn problem_for(error: &sqlx::Error) -> Problem {
    match error {
        sqlx::Error::PoolTimedOut => {
            tracing::warn!("no database connection within the acquire timeout");
            Problem::unavailable("the database is busy; retry shortly", 1)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => {
            tracing::warn!(error = %error, "database unavailable");
            Problem::unavailable("the database is unavailable; retry shortly", 1)
        }
        sqlx::Error::Database(db) if is_rolled_back_code(db.code().as_deref()) => {
            tracing::warn!(error = %error, "statement rolled back by the database");
            Problem::unavailable(
                "the request met a concurrent one and was rolled back; retry",
                1,
            )
        }
        sqlx::Error::Database(db) if is_unavailable_code(db.code().as_deref()) => {
            tracing::warn!(error = %error, "database unavailable");
            Problem::unavailable("the database is unavailable; retry shortly", 1)
        }
        _ => {
            tracing::error!(error = %error, "database error");
            Problem::internal()
        }
    }
}

/// SQLSTATE 40P01 (deadlock detected) and 40001 (serialization failure): PostgreSQL rolled the
/// transaction back to break a conflict with a concurrent one, so nothing was written and the
/// request can simply be sent again. A coalesced create's batch holds several count rows at
/// once, so it can meet a lock cycle a single statement could not (a purge, say).
fn is_rolled_back_code(code: Option<&str>) -> bool {
    matches!(code, Some("40P01" | "40001"))
}

/// SQLSTATE classes 08 (connection exception) and 57P (operator intervention: shutdown,
/// cannot connect now), and 53300 (too many connections).
fn is_unavailable_code(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300")
}

/// True when `error` is a unique violation of `constraint`.
pub fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.is_unique_violation() && db.constraint() == Some(constraint))
}

/// Leaves out the startup parameter sqlx sends by default that a transaction-mode pooler (PgBouncer
/// as Neon and most managed poolers run it) refuses unless told to ignore it:
/// `extra_float_digits` (`unsupported startup parameter`). It only changes how floats print, and
/// no column of these schemas is a float.
pub fn pooler_safe(options: PgConnectOptions) -> PgConnectOptions {
    options.extra_float_digits(None)
}

/// Creates `schema` if needed and applies `migrator` with its history table inside `schema`
/// (`<schema>._sqlx_migrations`): one shared history table would break the other service's
/// migrate. `schema` is a constant of the calling service, never input.
///
/// Each migration's statements wait at most `lock_timeout` (PostgreSQL's `lock_timeout`; zero
/// is no bound) for a lock that another session holds. A migration that waits for a table lock
/// queues every later statement on that table behind itself, the API's included, for as long
/// as the session in its way keeps its lock (a long report, a forgotten `BEGIN` in psql): the
/// API would stall for that long. Bounded, the migration gives up instead, rolled back whole (a
/// migration runs in one transaction), and the statements behind it go on; `migrate` runs again
/// later (the hook Job retries; see the README's Operate section). The migrator's own advisory
/// lock, which replicas starting together take in turn, is taken before the bound is set: it
/// locks no table, and the replica ahead may be applying a long migration.
pub async fn migrate(
    url: &SecretString,
    schema: &str,
    migrator: &Migrator,
    lock_timeout: Duration,
) -> anyhow::Result<()> {
    let options = pooler_safe(
        PgConnectOptions::from_str(url.expose_secret())
            .map_err(|e| anyhow::anyhow!("migration database URL is not valid: {e}"))?,
    )
    .options([("search_path", schema)]);
    let mut conn = crate::db_check::connect(&options).await?;
    // Two services migrating one fresh database at once would race on CREATE SCHEMA.
    let mut tx = conn.begin().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('todo-create-schema'))")
        .await?;
    tx.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
        .await?;
    tx.commit().await?;
    conn.lock().await?;
    conn.execute(format!("SET lock_timeout = {}", lock_timeout.as_millis()).as_str())
        .await?;
    // The same migrations, told not to take the advisory lock again (it is held above). The
    // fields are sqlx's own (public for `migrate!`, which builds them the same way).
    let without_locking = Migrator {
        migrations: migrator.migrations.clone(),
        ignore_missing: migrator.ignore_missing,
        no_tx: migrator.no_tx,
        locking: false,
    };
    // `run_direct`: `run` takes any `Acquire`, and its future is then not `Send` for every
    // lifetime, so a spawned migration (replicas' tests) would not compile.
    without_locking
        .run_direct(&mut conn)
        .await
        .map_err(|error| explain_lock_timeout(error, lock_timeout))?;
    conn.unlock().await?;
    conn.close().await?;
    Ok(())
}

/// A migration that gave up waiting for a lock, said so in terms of what to do.
fn explain_lock_timeout(error: MigrateError, lock_timeout: Duration) -> anyhow::Error {
    let gave_up = match &error {
        MigrateError::ExecuteMigration(sqlx::Error::Database(db), version)
            if db.code().as_deref() == Some("55P03") =>
        {
            Some(*version)
        }
        _ => None,
    };
    match gave_up {
        Some(version) => anyhow::Error::new(error).context(format!(
            "migration {version} waited {} ms (MIGRATION_LOCK_TIMEOUT_MS) for a lock another \
             session holds on its tables and gave up, so that the statements queued behind it \
             could run; nothing of it was applied. Run migrate again once that session has \
             ended: pg_stat_activity shows it (the oldest xact_start on this database)",
            lock_timeout.as_millis()
        )),
        None => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sslrootcert` is the whole trust store, as libpq reads it (the vendored sqlx-core's
    /// patch): a private CA's file trusts that CA alone, not the public web CAs besides.
    #[test]
    fn a_root_certificate_file_is_the_whole_trust_store() {
        let private_ca = include_bytes!("../tests/fixtures/private-ca.pem");
        let store = sqlx_core::net::tls::trust_anchors_from_pem(private_ca).unwrap();
        assert_eq!(store.len(), 1);
        assert!(
            sqlx_core::net::tls::trust_anchors_from_pem(b"not a certificate")
                .unwrap()
                .is_empty(),
            "no certificate, no trust"
        );
    }

    #[test]
    fn connection_class_errors_mean_unavailable() {
        assert!(is_unavailable_code(Some("08006")));
        assert!(is_unavailable_code(Some("57P01")));
        assert!(is_unavailable_code(Some("53300")));
        assert!(!is_unavailable_code(Some("23505")));
        assert!(!is_unavailable_code(None));
    }

    #[test]
    fn deadlocks_and_serialization_failures_mean_rolled_back() {
        assert!(is_rolled_back_code(Some("40P01")));
        assert!(is_rolled_back_code(Some("40001")));
        assert!(!is_rolled_back_code(Some("23505")));
        assert!(!is_rolled_back_code(Some("08006")));
        assert!(!is_rolled_back_code(None));
    }

    #[test]
    fn pool_timeout_is_a_503_with_retry_after() {
        let problem = problem_for(&sqlx::Error::PoolTimedOut);
        assert_eq!(
            problem.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(problem_for(&sqlx::Error::RowNotFound).status(), 500);
    }
}
