//! Spawning task-service for a test, minting access tokens, and the requests tests make.

use std::time::Duration;

use common::jwt::KeyRing;
use common::postgres::TestDatabase;
pub use common::test_wait::eventually;
use reqwest::Response;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const JWT_KEY: &str = "test-signing-key-that-is-long-enough-0123";

pub struct TestApp {
    pub address: String,
    pub admin: String,
    pub database_url: String,
    pub client: reqwest::Client,
    keys: KeyRing,
    /// Cancelling it is what SIGTERM does to the binary.
    pub stop: CancellationToken,
    stopped: Option<JoinHandle<()>>,
    /// The database this app was started on, when it owns it: dropped with the app.
    _database: Option<TestDatabase>,
}

/// A user as task-service sees one: an id and an access token.
pub struct User {
    pub id: Uuid,
    pub token: String,
}

/// A fresh database with both services' schemas (revocation tests run auth-service too),
/// dropped when the value is.
pub async fn fresh_database() -> TestDatabase {
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

/// A running auth-service, and the means to stop it (what SIGTERM does to the binary).
pub struct AuthApp {
    pub api: String,
    pub admin: String,
    pub stop: CancellationToken,
    pub stopped: JoinHandle<()>,
}

/// The password of every account the tests register at auth-service.
pub const PASSWORD: &str = "correct horse battery";

/// A new account at auth-service (a fresh email, `PASSWORD`), registered and logged in: its
/// email, the registration's body (its `id`) and the login's (the token pair).
pub async fn register_and_log_in(
    client: &reqwest::Client,
    auth_api: &str,
) -> (String, Value, Value) {
    let email = format!("user-{}@example.com", Uuid::new_v4().simple());
    let credentials = json!({"email": email, "password": PASSWORD});
    let registered = client
        .post(format!("{auth_api}/api/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .expect("register sent");
    assert_eq!(registered.status(), 201);
    let login = client
        .post(format!("{auth_api}/api/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .expect("login sent");
    assert_eq!(login.status(), 200);
    let registered = registered.json().await.expect("registration body");
    (email, registered, login.json().await.expect("token pair"))
}

/// A new account at auth-service, registered and logged in: the login's body (the token pair).
pub async fn log_in(client: &reqwest::Client, auth_api: &str) -> Value {
    register_and_log_in(client, auth_api).await.2
}

/// auth-service on `database_url`, once it is ready (it takes no bearer token before it has
/// read its revoked sessions); returns its API and admin base URLs.
pub async fn spawn_auth(database_url: &str, extra: &[&str]) -> (String, String) {
    let auth = start_auth(database_url, extra).await;
    wait_for_readiness(&reqwest::Client::new(), &auth.admin, 200).await;
    (auth.api, auth.admin)
}

/// auth-service on `database_url`, with a handle to stop it; a flag in `extra` replaces its
/// test default (`--admin-addr` puts its feed on a chosen port).
pub async fn start_auth(database_url: &str, extra: &[&str]) -> AuthApp {
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
    let config = auth_service::Config::from_serve_args(args).expect("valid auth-service settings");
    let server = auth_service::build(config)
        .await
        .expect("auth-service builds");
    let api = format!("http://{}", server.api_addr());
    let admin = format!("http://{}", server.admin_addr());
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let stopped = tokio::spawn(server.run_until_stopped(async move { signal.cancelled().await }));
    AuthApp {
        api,
        admin,
        stop,
        stopped,
    }
}

/// Tests that race hundreds of requests through two instances fill both pools (up to 40
/// connections with the test's own): run them one at a time, since two of them side by side,
/// with the other tests' connections, reach a stock server's `max_connections` (100), and its
/// refusals would fail whichever test met them.
pub async fn with_many_connections() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE_AT_A_TIME.lock().await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// task-service on a database of its own, with extra command-line settings.
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    let database = fresh_database().await;
    let mut app = spawn_on(&database, extra).await;
    app._database = Some(database);
    app
}

/// task-service on `database_url` with extra command-line settings, once it is ready (with
/// `--auth-admin-url`, that is after its first read of the feed).
pub async fn spawn_on(database_url: &str, extra: &[&str]) -> TestApp {
    let app = start_on(database_url, extra).await;
    app.wait_for_readiness(200).await;
    app
}

/// task-service on `database_url`, polling auth-service's feeds at `auth_admin` every second,
/// once it is ready (after its first read of the revocation feed).
pub async fn spawn_polling(database_url: &str, auth_admin: &str) -> TestApp {
    spawn_on(
        database_url,
        &[
            "--auth-admin-url",
            auth_admin,
            "--revocation-poll-seconds",
            "1",
        ],
    )
    .await
}

/// task-service on `database_url`, serving but not necessarily ready yet.
pub async fn start_on(database_url: &str, extra: &[&str]) -> TestApp {
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
    let server = task_service::build(config)
        .await
        .expect("task-service builds");
    let address = format!("http://{}", server.api_addr());
    let admin = format!("http://{}", server.admin_addr());
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let stopped = tokio::spawn(server.run_until_stopped(async move { signal.cancelled().await }));
    TestApp {
        address,
        admin,
        database_url: database_url.to_owned(),
        client: reqwest::Client::new(),
        keys: KeyRing::new(
            vec![("default".into(), JWT_KEY.as_bytes().to_vec())],
            "todo-auth",
            "todo-api",
            30,
        )
        .expect("test key ring"),
        stop,
        stopped: Some(stopped),
        _database: None,
    }
}

impl TestApp {
    /// Stops the service as SIGTERM would, and waits until it has exited.
    pub async fn shut_down(mut self) {
        self.stop.cancel();
        if let Some(stopped) = self.stopped.take() {
            stopped.await.expect("task-service exits cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A new user with a valid access token, signed as auth-service would sign it.
    pub fn user(&self) -> User {
        let id = Uuid::new_v4();
        User {
            id,
            token: self.keys.sign_access(id, Uuid::new_v4(), 3600),
        }
    }

    pub async fn get(&self, user: &User, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&user.token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn send(
        &self,
        user: &User,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&user.token)
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    /// A request with extra headers, and a JSON body if given.
    pub async fn send_with(
        &self,
        user: &User,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&user.token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request sent")
    }

    pub async fn create(&self, user: &User, body: Value) -> Response {
        self.send(user, reqwest::Method::POST, "/api/v1/tasks", body)
            .await
    }

    /// Creates a task titled `title` and returns it.
    pub async fn task(&self, user: &User, title: &str) -> Value {
        let response = self.create(user, json!({"title": title})).await;
        assert_eq!(response.status(), 201);
        response.json().await.expect("task body")
    }

    /// The value of the sample named exactly `series` on the admin port's `/metrics`.
    pub async fn metric(&self, series: &str) -> f64 {
        common::test_metrics::sample(
            &common::test_metrics::scrape(&self.client, &self.admin).await,
            series,
        )
    }

    /// `GET /readyz`: the status and the reason it gives.
    pub async fn readiness(&self) -> (u16, String) {
        readiness(&self.client, &self.admin).await
    }

    /// Polls `/readyz` until it answers `status`; returns its reason.
    pub async fn wait_for_readiness(&self, status: u16) -> String {
        wait_for_readiness(&self.client, &self.admin, status).await
    }

    /// The service's OpenAPI document, as served.
    pub async fn openapi_doc(&self) -> Value {
        self.client
            .get(self.url("/api/v1/tasks/openapi.json"))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("an OpenAPI document")
    }

    pub async fn db(&self) -> sqlx::PgPool {
        common::postgres::pool(&self.database_url)
            .await
            .expect("test database")
    }

    /// Waits (up to 30 s) until `n` requests are inside the service at once.
    pub async fn wait_for_requests_in_flight(&self, n: u32) {
        let series = "http_server_requests_in_flight";
        self.wait_for_metric(series, |in_flight| in_flight >= f64::from(n))
            .await;
    }

    /// Waits until `n` requests wait in a coalescer's queue (`gauge`: `task_read_queue_depth`
    /// or `task_create_queue_depth`): every one of them is past its last step before the queue.
    pub async fn wait_for_queue_depth(&self, gauge: &str, n: u32) {
        self.wait_for_metric(gauge, |queued| queued == f64::from(n))
            .await;
    }

    /// Polls the sample `series` on `/metrics` (up to 30 s) until `holds` accepts its value.
    async fn wait_for_metric(&self, series: &str, holds: impl Fn(f64) -> bool) {
        let holds = &holds;
        let met = eventually(Duration::from_secs(30), || async move {
            holds(self.metric(series).await)
        });
        assert!(
            met.await,
            "{series} never reached what the test waits for (now {})",
            self.metric(series).await
        );
    }

    /// How many tasks `user` holds, counted in the table itself.
    pub async fn tasks_held(&self, user: &User) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM tasks.tasks WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(&self.db().await)
            .await
            .unwrap()
    }
}

/// `GET {admin}/readyz`: the status and the reason it gives.
pub async fn readiness(client: &reqwest::Client, admin: &str) -> (u16, String) {
    let response = client
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .expect("the admin port answers");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a readiness body");
    (
        status,
        body["status"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Polls `{admin}/readyz` until it answers `status`; returns its reason. The 30 s limit is a
/// hang guard only.
pub async fn wait_for_readiness(client: &reqwest::Client, admin: &str, status: u16) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (now, reason) = readiness(client, admin).await;
        if now == status {
            return reason;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{admin}/readyz is still {now} ({reason}), not {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts `response` is a problem+json with `status`, and returns its body.
pub async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], "about:blank");
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// Holds every statement on `tasks.tasks` until the transaction is rolled back.
pub async fn lock_the_table(db: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = db.begin().await.unwrap();
    sqlx::query("LOCK TABLE tasks.tasks IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

/// The titles of `user`'s tasks, oldest first.
pub async fn titles(db: &sqlx::PgPool, user: &User) -> Vec<String> {
    sqlx::query_scalar("SELECT title FROM tasks.tasks WHERE user_id = $1 ORDER BY id")
        .bind(user.id)
        .fetch_all(db)
        .await
        .expect("the user's titles")
}

/// Waits until `n` backends of the test's database wait for a lock.
pub async fn wait_for_lock_waits(db: &sqlx::PgPool, n: i64) {
    let waiting =
        common::test_wait::statements_waiting_for_locks(db, n, Duration::from_secs(30)).await;
    assert!(waiting, "{n} statements never waited for locks");
}

/// Statements waiting on `tasks.tasks`' lock: the service's statements stuck behind ours.
/// pg_locks lists every database of the server, and the other tests' databases are copies of
/// one template, where the table has the same oid: hence the database filter.
pub async fn statements_waiting_on_the_table(db: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks
         WHERE relation = 'tasks.tasks'::regclass AND NOT granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// Waits (up to 30 s) until `n` statements wait on `tasks.tasks`' lock.
pub async fn wait_for_statements_waiting_on_the_table(db: &sqlx::PgPool, n: i64) {
    let waiting = eventually(Duration::from_secs(30), || async move {
        statements_waiting_on_the_table(db).await >= n
    });
    assert!(waiting.await, "{n} statements never waited on the table");
}
