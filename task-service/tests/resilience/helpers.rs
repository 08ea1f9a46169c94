//! Spawning the services with a handle to stop them, minting tokens, and latency statistics.

use std::time::Duration;

use common::jwt::KeyRing;
use sqlx::Connection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const JWT_KEY: &str = "test-signing-key-that-is-long-enough-0123";

/// A running service: its two addresses, and the means to stop it and see it exit.
pub struct Running {
    pub address: String,
    pub admin: String,
    /// Cancelling it is what SIGTERM does to the binary.
    pub stop: CancellationToken,
    pub stopped: JoinHandle<()>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }
}

/// A fresh database on the machine's test server with both services' schemas, dropped when
/// the value is.
pub async fn fresh_database() -> common::postgres::TestDatabase {
    common::postgres::server()
        .await
        .expect("a PostgreSQL server for tests")
        .fresh_database(&[
            (auth_service::SCHEMA, &auth_service::MIGRATOR),
            (task_service::SCHEMA, &task_service::MIGRATOR),
        ])
        .await
        .expect("a fresh test database")
}

async fn run(server: common::server::Server) -> Running {
    let address = format!("http://{}", server.api_addr());
    let admin = format!("http://{}", server.admin_addr());
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let stopped = tokio::spawn(server.run_until_stopped(async move { signal.cancelled().await }));
    Running {
        address,
        admin,
        stop,
        stopped,
    }
}

/// task-service on `database_url`; a flag in `extra` replaces its test default.
pub async fn spawn_tasks(database_url: &str, extra: &[&str]) -> Running {
    common::telemetry::init_test_logs();
    let mut args = vec!["--database-url", database_url];
    args.extend(common::test_args::with_defaults(
        &[
            ("--http-addr", "127.0.0.1:0"),
            ("--admin-addr", "127.0.0.1:0"),
            ("--migrate-on-start", "false"),
            ("--shutdown-delay-seconds", "0"),
            ("--jwt-secret", JWT_KEY),
        ],
        extra,
    ));
    let config = task_service::Config::from_serve_args(args).expect("valid test settings");
    run(task_service::build(config)
        .await
        .expect("task-service builds"))
    .await
}

/// auth-service on `database_url`, once ready; a flag in `extra` replaces its test default.
pub async fn spawn_auth(database_url: &str, extra: &[&str]) -> Running {
    common::telemetry::init_test_logs();
    let mut args = vec!["--database-url", database_url];
    args.extend(common::test_args::with_defaults(
        &[
            ("--http-addr", "127.0.0.1:0"),
            ("--admin-addr", "127.0.0.1:0"),
            ("--bcrypt-cost", "10"),
            ("--migrate-on-start", "false"),
            ("--shutdown-delay-seconds", "0"),
            ("--jwt-secret", JWT_KEY),
        ],
        extra,
    ));
    let config = auth_service::Config::from_serve_args(args).expect("valid test settings");
    let auth = run(auth_service::build(config)
        .await
        .expect("auth-service builds"))
    .await;
    // It takes no bearer token before it has read its revoked sessions.
    let client = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(30), || async {
            readyz(&client, &auth.admin).await == 200
        })
        .await,
        "auth-service never became ready"
    );
    auth
}

/// An access token for a new user, signed as auth-service signs them.
pub fn token() -> String {
    KeyRing::new(
        vec![("default".into(), JWT_KEY.as_bytes().to_vec())],
        "todo-auth",
        "todo-api",
        30,
    )
    .expect("test key ring")
    .sign_access(Uuid::new_v4(), Uuid::new_v4(), 3600)
}

/// The `q`-quantile (0..=1) of `samples`, by the nearest-rank method.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub use common::test_wait::eventually;

/// The status of `GET {admin}/readyz`, or 0 when it did not answer.
pub async fn readyz(client: &reqwest::Client, admin: &str) -> u16 {
    client
        .get(format!("{admin}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// These tests load the machine and measure latencies: run them one at a time, or one test's
/// load storm becomes another's timing failure on a 2-core machine.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// A response header as an owned string (`None` when missing or not visible ASCII), so it can
/// be kept after the body is read.
pub fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Tells load-generating tasks to stop (they check `running` between requests) and waits for
/// each one's last request to be answered, panicking if one takes longer than `within`.
pub async fn stop_all(
    running: &std::sync::atomic::AtomicBool,
    tasks: Vec<JoinHandle<()>>,
    within: Duration,
) {
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    for task in tasks {
        tokio::time::timeout(within, task)
            .await
            .expect("every load task's last request answers")
            .unwrap();
    }
}

/// Terminates every backend connected to `database`, as Neon's suspend does; returns how many.
pub async fn kill_all_connections(admin_url: &str, database: &str) -> i64 {
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    killed
}
