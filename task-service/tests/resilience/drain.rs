//! Shutdown (SIGTERM, or the stop future in-process): readiness fails at once, serving goes on
//! for the delay, then new connections are refused while in-flight requests finish, and the
//! process exits within delay + timeout. In-flight requests are made slow for real: they wait
//! on a row lock the test holds in PostgreSQL, and finish when it lets go.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::helpers::{eventually, fresh_database, readyz, spawn_tasks, token};

const IN_FLIGHT: usize = 8;

/// A transaction holding `FOR UPDATE` on one task: updates of that task wait for it.
struct RowLock(PgConnection);

impl RowLock {
    async fn take(database: &str, task_id: i64) -> Self {
        let mut conn = PgConnection::connect(database).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query("SELECT 1 FROM tasks.tasks WHERE id = $1 FOR UPDATE")
            .bind(task_id)
            .execute(&mut conn)
            .await
            .unwrap();
        Self(conn)
    }

    async fn release(mut self) {
        sqlx::query("ROLLBACK").execute(&mut self.0).await.unwrap();
        self.0.close().await.unwrap();
    }
}

/// Waits until `n` sessions of `database` are blocked on a lock.
async fn wait_for_blocked(database: &str, n: i64) {
    let pool = sqlx::PgPool::connect(database).await.unwrap();
    let blocked =
        common::test_wait::statements_waiting_for_locks(&pool, n, Duration::from_secs(10)).await;
    pool.close().await;
    assert!(blocked, "{n} requests are in flight, waiting on the lock");
}

async fn create_task(client: &reqwest::Client, base: &str, token: &str) -> i64 {
    let response = client
        .post(format!("{base}/api/v1/tasks"))
        .bearer_auth(token)
        .json(&json!({"title": "to be updated during shutdown"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// `n` updates of `task_id`, sent now; each resolves to its status (0: no answer).
fn send_updates(
    base: &str,
    token: &str,
    task_id: i64,
    n: usize,
) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..n)
        .map(|i| {
            let url = format!("{base}/api/v1/tasks/{task_id}");
            let token = token.to_owned();
            tokio::spawn(async move {
                // A client each: every request is its own in-flight connection.
                reqwest::Client::new()
                    .put(url)
                    .bearer_auth(token)
                    .json(&json!({"title": format!("update {i}")}))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            })
        })
        .collect()
}

/// Whether a new connection to `base` is refused (a request on a fresh client fails to connect).
async fn refuses_new_connections(base: &str) -> bool {
    match reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(_) => false,
        Err(error) => error.is_connect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_and_refuses_new_ones_after_the_delay() {
    let _serial = crate::helpers::one_at_a_time().await;
    // Long enough for the readiness poll and a fresh request to fit inside it on a busy machine.
    const DELAY: Duration = Duration::from_secs(5);
    const TIMEOUT: Duration = Duration::from_secs(10);
    let database = fresh_database().await;
    let app = spawn_tasks(
        &database,
        &[
            "--shutdown-delay-seconds",
            &DELAY.as_secs().to_string(),
            "--shutdown-timeout-seconds",
            &TIMEOUT.as_secs().to_string(),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let token = token();
    let task_id = create_task(&client, &app.address, &token).await;
    assert_eq!(readyz(&client, &app.admin).await, 200);

    let lock = RowLock::take(&database, task_id).await;
    let in_flight = send_updates(&app.address, &token, task_id, IN_FLIGHT);
    wait_for_blocked(&database, IN_FLIGHT as i64).await;

    let stop_at = Instant::now();
    app.stop.cancel();
    assert!(
        eventually(DELAY, || async { readyz(&client, &app.admin).await == 503 }).await,
        "readiness fails at once"
    );
    let unready_after = stop_at.elapsed();
    // During the delay the service still serves, on new connections too.
    let fresh = reqwest::Client::new()
        .get(app.url("/api/v1/tasks"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200, "still serving during the delay");
    // (Served at all proves it ran within the delay: after it, new connections are refused.)

    assert!(
        eventually(DELAY + Duration::from_secs(3), || refuses_new_connections(
            &app.address
        ))
        .await,
        "new connections are refused after the delay"
    );
    let refused_after = stop_at.elapsed();
    assert!(
        refused_after >= DELAY,
        "connections were refused only after the delay, not at {refused_after:?}"
    );
    assert_eq!(
        readyz(&client, &app.admin).await,
        503,
        "the admin port stays up, unready, while draining"
    );
    assert!(
        !app.stopped.is_finished(),
        "the server waits for its in-flight requests"
    );

    lock.release().await;
    let mut completed = 0;
    for request in in_flight {
        let status = tokio::time::timeout(TIMEOUT, request)
            .await
            .expect("in-flight request answered")
            .unwrap();
        assert_eq!(status, 200, "an in-flight request completes normally");
        completed += 1;
    }
    let deadline = stop_at + DELAY + TIMEOUT;
    tokio::time::timeout_at(deadline.into(), app.stopped)
        .await
        .expect("the server exits within delay + timeout")
        .unwrap();
    let exited_after = stop_at.elapsed();
    assert_eq!(
        readyz(&client, &app.admin).await,
        0,
        "the admin port is closed at the end"
    );
    println!(
        "drain: readyz 503 after {unready_after:?}; new connections refused after {refused_after:?} (delay {DELAY:?}); \
         in-flight completed {completed}/{IN_FLIGHT} (lost {}); server exited after {exited_after:?} (grace {:?})",
        IN_FLIGHT - completed,
        DELAY + TIMEOUT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_requests_that_outlast_the_drain_timeout() {
    let _serial = crate::helpers::one_at_a_time().await;
    const DELAY: Duration = Duration::from_secs(1);
    const TIMEOUT: Duration = Duration::from_secs(2);
    let database = fresh_database().await;
    let app = spawn_tasks(
        &database,
        &[
            "--shutdown-delay-seconds",
            &DELAY.as_secs().to_string(),
            "--shutdown-timeout-seconds",
            &TIMEOUT.as_secs().to_string(),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let token = token();
    let task_id = create_task(&client, &app.address, &token).await;
    let lock = RowLock::take(&database, task_id).await;
    let stuck = send_updates(&app.address, &token, task_id, 1);
    wait_for_blocked(&database, 1).await;

    let stop_at = Instant::now();
    app.stop.cancel();
    // The lock is held past the grace period: the server must not wait for it.
    let margin = Duration::from_secs(3);
    tokio::time::timeout_at((stop_at + DELAY + TIMEOUT + margin).into(), app.stopped)
        .await
        .expect("the server exits within delay + timeout even with a stuck request")
        .unwrap();
    let exited_after = stop_at.elapsed();
    assert!(
        exited_after >= DELAY + TIMEOUT,
        "it waited the whole timeout ({exited_after:?})"
    );
    lock.release().await;
    for request in stuck {
        let _ = request.await;
    }
    println!("drain timeout: server exited after {exited_after:?} (grace {DELAY:?} + {TIMEOUT:?})");
}

/// Kills the child on drop (by its own pid), so a failing test leaves no process behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_drains_and_exits_zero_on_sigterm() {
    let _serial = crate::helpers::one_at_a_time().await;
    // Long enough for `kill`, the signal's handling and a readiness poll on a busy machine.
    const DELAY: Duration = Duration::from_secs(4);
    const TIMEOUT: Duration = Duration::from_secs(5);
    let database = fresh_database().await;
    let (api_port, admin_port) = (free_port(), free_port());
    let api = format!("http://127.0.0.1:{api_port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let child = Command::new(env!("CARGO_BIN_EXE_task-service"))
        .arg("serve")
        .env("DATABASE_URL", database.url())
        .env("JWT_SECRET", crate::helpers::JWT_KEY)
        .env("HTTP_ADDR", format!("127.0.0.1:{api_port}"))
        .env("ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env("MIGRATE_ON_START", "false")
        .env("SHUTDOWN_DELAY_SECONDS", DELAY.as_secs().to_string())
        .env("SHUTDOWN_TIMEOUT_SECONDS", TIMEOUT.as_secs().to_string())
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("AUTH_ADMIN_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("task-service starts");
    let mut child = ChildGuard(child);
    let client = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(20), || async {
            readyz(&client, &admin).await == 200
        })
        .await,
        "the binary becomes ready"
    );
    let token = token();
    let task_id = create_task(&client, &api, &token).await;
    let lock = RowLock::take(&database, task_id).await;
    let in_flight = send_updates(&api, &token, task_id, 2);
    wait_for_blocked(&database, 2).await;

    let stop_at = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success(), "SIGTERM sent");
    assert!(
        eventually(DELAY, || async { readyz(&client, &admin).await == 503 }).await,
        "readiness fails on SIGTERM"
    );
    assert!(
        eventually(DELAY + Duration::from_secs(3), || refuses_new_connections(
            &api
        ))
        .await,
        "new connections are refused after the delay"
    );
    lock.release().await;
    for request in in_flight {
        assert_eq!(request.await.unwrap(), 200, "in-flight request completes");
    }
    let grace = DELAY + TIMEOUT;
    let exited = eventually(grace + Duration::from_secs(1), || {
        let status = child.0.try_wait().unwrap();
        async move { status.is_some() }
    })
    .await;
    assert!(exited, "the process exits within the grace period");
    let status = child.0.wait().unwrap();
    let exited_after = stop_at.elapsed();
    assert_eq!(status.code(), Some(0), "clean exit: {status:?}");
    assert!(exited_after <= grace + Duration::from_secs(1));
    println!("binary: SIGTERM → exit 0 after {exited_after:?} (grace {grace:?})");
}
