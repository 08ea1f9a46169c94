//! The local runner as a new user meets it: the forwarder's own answers look like the
//! services', the docs URLs work without their trailing slash, and a taken `LOCAL_ADDR` fails
//! before anything is started.

use common::postgres::TestDatabase;
use local_stack::{Args, LocalStack};
use reqwest::redirect::Policy;
use reqwest::{Client, Response};

/// The stack on a free port against a fresh (unmigrated: the services migrate it) database;
/// returns its origin, and the database, which lives as long as the test holds it.
async fn spawn_stack() -> (String, TestDatabase) {
    common::telemetry::init_test_logs();
    let database = common::postgres::server()
        .await
        .expect("a PostgreSQL server for tests")
        .fresh_database(&[])
        .await
        .expect("a fresh test database");
    let stack = LocalStack::build(Args {
        addr: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(database.to_string()),
        jwt_secret: Some("local-stack-test-key-that-is-long-enough-0123".into()),
    })
    .await
    .expect("the local stack starts");
    let origin = stack.origin();
    tokio::spawn(stack.run_until_stopped(std::future::pending()));
    (origin, database)
}

fn client() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

/// The headers every answer carries, the services' and the forwarder's alike.
fn assert_common_headers(response: &Response, what: &str) {
    let headers = response.headers();
    assert_eq!(
        headers.get_all("x-request-id").iter().count(),
        1,
        "{what}: one X-Request-Id"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["cache-control"], "no-store", "{what}");
}

async fn assert_problem(response: Response, status: u16, what: &str) {
    assert_eq!(response.status(), status, "{what}");
    assert_common_headers(&response, what);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["status"], status, "{what}");
    assert!(body["detail"].is_string(), "{what}");
}

#[tokio::test]
async fn the_forwarders_own_answers_carry_the_services_headers_and_are_problem_json() {
    let (origin, _database) = spawn_stack().await;
    let client = client();
    // A service's own answer, for comparison.
    let service = client
        .get(format!("{origin}/api/v1/tasks"))
        .send()
        .await
        .unwrap();
    assert_problem(service, 401, "task-service without a token").await;

    for path in ["/", "/nope", "/api/v2/tasks"] {
        let response = client.get(format!("{origin}{path}")).send().await.unwrap();
        assert_problem(response, 404, path).await;
    }
    let response = client
        .post(format!("{origin}/api/v1/tasks"))
        .header("content-type", "application/json")
        .body(vec![b'x'; 200_000])
        .send()
        .await
        .unwrap();
    assert_problem(response, 413, "a 200 000-byte body").await;

    // A client's request id comes back, on the forwarder's answers and on the services'.
    for path in ["/nope", "/api/v1/auth/me"] {
        let response = client
            .get(format!("{origin}{path}"))
            .header("x-request-id", "my-request-17")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["x-request-id"],
            "my-request-17",
            "{path}"
        );
        assert_eq!(
            response.headers().get_all("x-request-id").iter().count(),
            1,
            "{path}"
        );
    }
}

#[tokio::test]
async fn docs_without_the_trailing_slash_redirect_to_the_ui() {
    let (origin, _database) = spawn_stack().await;
    let client = client();
    for service in ["auth", "tasks"] {
        let response = client
            .get(format!("{origin}/api/v1/{service}/docs"))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_redirection(),
            "{service}: {response:?}"
        );
        assert_eq!(
            response.headers()["location"],
            format!("/api/v1/{service}/docs/")
        );
        let page = client
            .get(format!("{origin}/api/v1/{service}/docs/"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("swagger-ui"));
    }
}

#[tokio::test]
async fn a_taken_local_addr_fails_at_once_before_postgresql_or_a_service_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    // No DATABASE_URL: started in the wrong order, the runner would start a throwaway cluster
    // and both services before it found out.
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_todo-local"))
            .env("LOCAL_ADDR", &addr)
            .env_remove("DATABASE_URL")
            .env("LOG_FORMAT", "text")
            .output(),
    )
    .await
    .expect("todo-local exits (hang guard)")
    .expect("todo-local runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("LOCAL_ADDR"),
        "stderr: {stderr}"
    );
    assert!(
        !stdout.contains("PostgreSQL") && !stdout.contains("ready"),
        "nothing was started: {stdout}"
    );
    assert!(
        !stderr.contains("revoked-sessions") && !stderr.contains("migrat"),
        "no service ran: {stderr}"
    );
    drop(taken);
}

#[tokio::test]
async fn text_logs_written_to_a_pipe_carry_no_colour_codes() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let database = common::postgres::server()
        .await
        .expect("a PostgreSQL server for tests")
        .fresh_database(&[])
        .await
        .expect("a fresh test database");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_todo-local"))
        .env("LOCAL_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", database.url())
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .env_remove("JWT_KEYS")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("todo-local starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Reads stdout (where both the banner and the log lines go) up to a line containing `marker`.
    let mut read_until = async |marker: &str| -> String {
        let found = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("stdout is readable") {
                seen.push(line.clone());
                if line.contains(marker) {
                    return line;
                }
            }
            panic!("todo-local exited before printing {marker:?}: {seen:?}");
        });
        found.await.expect("hang guard")
    };
    let ready = read_until("todo stack ready on").await;
    let origin = ready.rsplit(' ').next().unwrap().to_owned();
    let registered = reqwest::Client::new()
        .post(format!("{origin}/api/v1/auth/register"))
        .json(&serde_json::json!({"email": "me@example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let logged = read_until("user registered").await;
    assert!(logged.contains("INFO"), "a text log line: {logged}");
    assert!(
        seen.iter().all(|line| !line.contains('\u{1b}')),
        "no ANSI escape codes in a pipe: {seen:?}"
    );
    child.kill().await.unwrap();
}
