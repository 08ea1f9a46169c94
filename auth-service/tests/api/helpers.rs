//! Spawning auth-service for a test, and the requests tests make.

use common::postgres::TestDatabase;
use reqwest::Response;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const JWT_KEY: &str = "test-signing-key-that-is-long-enough-0123";
pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    /// `http://127.0.0.1:<port>` of the API listener.
    pub address: String,
    /// `http://127.0.0.1:<port>` of the admin listener.
    pub admin: String,
    pub database_url: String,
    pub client: reqwest::Client,
    pub stop: CancellationToken,
    pub stopped: tokio::task::JoinHandle<()>,
    /// The database this app was started on, when it owns it: dropped with the app.
    _database: Option<TestDatabase>,
}

/// A fresh database with auth-service's schema, dropped when the value is.
pub async fn fresh_database() -> TestDatabase {
    common::postgres::server()
        .await
        .expect("a PostgreSQL server for tests")
        .fresh_database(&[(auth_service::SCHEMA, &auth_service::MIGRATOR)])
        .await
        .expect("a fresh test database")
}

/// auth-service on a fresh database with test settings.
pub async fn spawn_app() -> TestApp {
    spawn_with(&[]).await
}

/// auth-service on a fresh database, with extra command-line settings.
pub async fn spawn_with(extra: &[&str]) -> TestApp {
    let database = fresh_database().await;
    let mut app = spawn_on(&database, extra).await;
    app._database = Some(database);
    app
}

/// auth-service on `database_url` (two calls with one URL make two replicas), once it is ready:
/// a fresh replica refuses bearer tokens until it has read its revoked sessions.
pub async fn spawn_on(database_url: &str, extra: &[&str]) -> TestApp {
    let app = start_on(database_url, extra).await;
    app.wait_for_readiness(200).await;
    app
}

/// auth-service on `database_url`, serving but not necessarily ready yet.
pub async fn start_on(database_url: &str, extra: &[&str]) -> TestApp {
    common::telemetry::init_test_logs();
    let mut args = vec!["--database-url", database_url];
    args.extend(common::test_args::with_defaults(
        &[
            ("--http-addr", "127.0.0.1:0"),
            ("--admin-addr", "127.0.0.1:0"),
            ("--bcrypt-cost", "10"),
            // Tests that saturate the hashing pool set their own; the rest must not get a 503
            // because a busy machine made a few hashes outlast the 2 s production default.
            ("--bcrypt-queue-timeout-ms", "30000"),
            // Likewise the pool's 3 s wait for a connection: at load average 15 a burst of new
            // connections outlasted it and tests of the limits saw 503s for their 401s and 429s.
            ("--database-acquire-timeout-ms", "30000"),
            ("--migrate-on-start", "false"),
            ("--shutdown-delay-seconds", "0"),
            ("--revocation-poll-seconds", "1"),
            ("--jwt-secret", JWT_KEY),
        ],
        extra,
    ));
    let config = auth_service::Config::from_serve_args(args).expect("valid test settings");
    let server = auth_service::build(config)
        .await
        .expect("auth-service builds");
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
        stop,
        stopped,
        _database: None,
    }
}

/// A unique, valid email.
pub fn email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.post(
            "/api/v1/auth/register",
            json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post(
            "/api/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": refresh_token}),
        )
        .await
    }

    pub async fn logout(&self, refresh_token: &str) -> Response {
        self.post(
            "/api/v1/auth/logout",
            json!({"refresh_token": refresh_token}),
        )
        .await
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.client
            .get(self.url("/api/v1/auth/me"))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("request sent")
    }

    /// A request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        access_token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = access_token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request sent")
    }

    pub async fn change_password(&self, access_token: &str, current: &str, new: &str) -> Response {
        self.call(
            reqwest::Method::POST,
            "/api/v1/auth/password",
            Some(access_token),
            Some(json!({"current_password": current, "new_password": new})),
        )
        .await
    }

    pub async fn delete_me(&self, access_token: &str, password: &str) -> Response {
        self.call(
            reqwest::Method::DELETE,
            "/api/v1/auth/me",
            Some(access_token),
            Some(json!({"password": password})),
        )
        .await
    }

    /// `GET /sessions` as the owner of `access_token`; asserts 200 and returns the list.
    pub async fn sessions(&self, access_token: &str) -> Vec<Value> {
        let response = self
            .call(
                reqwest::Method::GET,
                "/api/v1/auth/sessions",
                Some(access_token),
                None,
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("a list of sessions")
    }

    pub async fn end_session(&self, access_token: &str, session_id: &str) -> Response {
        self.call(
            reqwest::Method::DELETE,
            &format!("/api/v1/auth/sessions/{session_id}"),
            Some(access_token),
            None,
        )
        .await
    }

    /// `POST /logout?scope=…` with a bearer token and no body.
    pub async fn logout_scope(&self, scope: &str, access_token: Option<&str>) -> Response {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/auth/logout?scope={scope}"),
            access_token,
            None,
        )
        .await
    }

    /// Logs `email` in again: another session of the same user.
    pub async fn another_session(&self, email: &str) -> Value {
        let response = self.login(email, PASSWORD).await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("login body")
    }

    /// Registers a new user and logs in; returns (email, login body).
    pub async fn logged_in_user(&self) -> (String, Value) {
        let email = email();
        assert_eq!(self.register(&email, PASSWORD).await.status(), 201);
        let response = self.login(&email, PASSWORD).await;
        assert_eq!(response.status(), 200);
        (email, response.json().await.expect("login body"))
    }

    /// `GET /readyz`: the status and the reason it gives.
    pub async fn readiness(&self) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}/readyz", self.admin))
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

    /// Polls `/readyz` until it answers `status`; returns its reason. The 30 s limit is a hang
    /// guard only.
    pub async fn wait_for_readiness(&self, status: u16) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (now, reason) = self.readiness().await;
            if now == status {
                return reason;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz is still {now} ({reason}), not {status}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `GET /internal/deleted-users?<query>` on the admin port; asserts 200, returns the page.
    pub async fn deleted_users(&self, query: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/internal/deleted-users?{query}", self.admin))
            .send()
            .await
            .expect("the admin port answers");
        assert_eq!(response.status(), 200);
        response.json().await.expect("a feed page")
    }

    /// The service's OpenAPI document, as served.
    pub async fn openapi_doc(&self) -> Value {
        self.client
            .get(self.url("/api/v1/auth/openapi.json"))
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

    /// Sends `request` while another transaction has set `email`'s stored hash to `new_hash`
    /// and not committed (a concurrent rehash or password change), and commits it once the
    /// request waits for the user row's lock: the request checked the old hash, and finds the
    /// new one when it writes. Its answer.
    pub async fn while_the_hash_changes(
        &self,
        email: &str,
        new_hash: &str,
        request: impl std::future::Future<Output = Response>,
    ) -> Response {
        let pool = self.db().await;
        let mut change = pool.begin().await.unwrap();
        sqlx::query("UPDATE auth.users SET password_hash = $1 WHERE email = $2")
            .bind(new_hash)
            .bind(email)
            .execute(&mut *change)
            .await
            .unwrap();
        let (answer, ()) = tokio::join!(request, async {
            let waiting = common::test_wait::statements_waiting_for_locks(
                &pool,
                1,
                std::time::Duration::from_secs(30),
            )
            .await;
            assert!(waiting, "the request never waited for the hash's change");
            change.commit().await.unwrap();
        });
        answer
    }
}

/// The `sid` claim (session id) of an access token: read, not verified.
pub fn session_id(access_token: &str) -> String {
    claims(access_token)["sid"]
        .as_str()
        .expect("a sid claim")
        .to_owned()
}

/// The claims of an access token: read, not verified.
pub fn claims(access_token: &str) -> Value {
    use base64::Engine;
    let payload = access_token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url claims"),
    )
    .expect("JSON claims")
}

/// Polls `probe` until it answers `status`: for effects that reach a service within its
/// revocation poll. The 30 s limit is a hang guard only.
pub async fn eventually_status<F, Fut>(status: u16, probe: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = probe().await.status();
        if now == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {now}, not {status}, after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Asserts `response` is a problem+json with `status`, and returns its body.
pub async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], "about:blank");
    assert!(body["title"].is_string());
    assert!(body["detail"].is_string());
    body
}
