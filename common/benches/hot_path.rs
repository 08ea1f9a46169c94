//! Micro-benchmarks of the per-request work that is not I/O: access-token signing and
//! verification (every task request verifies one), the bearer extractor around it,
//! request/response JSON of the task API, and a whole request through the shared HTTP stack,
//! logged at `info` and at `warn` (what the request span costs).
//!
//! `cargo bench -p common --bench hot_path` (add `-- --quick` for a fast pass).
//!
//! The task bodies below mirror task-service's `NewTask` and `Task` field for field: `common`
//! cannot depend on task-service, and serde's cost depends only on the shape.

use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Utc};
use common::auth::Authenticator;
use common::extract::{Json, RequestShape};
use common::jwt::KeyRing;
use common::revocation::{RevokedSession, RevokedSessions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const SECRET: &str = "bench-secret-bench-secret-bench-secret!!";

fn ring() -> KeyRing {
    KeyRing::new(
        vec![("default".into(), SECRET.as_bytes().to_vec())],
        "todo-auth",
        "todo-api",
        30,
    )
    .expect("valid key ring")
}

/// task-service's `NewTask`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct NewTask {
    title: String,
    description: Option<String>,
}

/// task-service's `Task`, as the list endpoint serialises it.
#[derive(Serialize)]
struct Task {
    id: i64,
    user_id: Uuid,
    title: String,
    description: Option<String>,
    completed: bool,
    #[serde(serialize_with = "common::timestamp::rfc3339")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "common::timestamp::rfc3339")]
    updated_at: DateTime<Utc>,
}

/// The same task with chrono's own timestamp serialisation, written by serde_json: the page as
/// it was written before `common::timestamp` and `task-service/src/tasks/body.rs`, kept to
/// measure them side by side.
#[derive(Serialize)]
struct TaskChronoTimestamps {
    id: i64,
    user_id: Uuid,
    title: String,
    description: Option<String>,
    completed: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Clone)]
struct TaskShape;

impl RequestShape for TaskShape {
    const SHAPE_ERROR: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
}

fn jwt(c: &mut Criterion) {
    let keys = ring();
    let user = Uuid::new_v4();
    let sid = Uuid::new_v4();
    let token = keys.sign_access(user, sid, 86_400);

    let mut group = c.benchmark_group("jwt");
    group.bench_function("sign_access", |b| {
        b.iter(|| keys.sign_access(black_box(user), black_box(sid), 86_400));
    });
    group.bench_function("verify_access", |b| {
        b.iter(|| keys.verify_access(black_box(&token)).expect("valid token"));
    });
    // The same token again, as a client sends it on every request: remembered after the first.
    group.bench_function("verify_access_remembered", |b| {
        b.iter(|| {
            keys.verify_access_remembered(black_box(&token))
                .expect("valid token")
        });
    });

    // What the `AuthUser` extractor does per request: header split, verify, revocation lookup
    // (in a cache holding 1 000 revoked sessions, a busy day's worth).
    let revoked = RevokedSessions::polled(std::time::Duration::from_secs(300));
    let now = Utc::now();
    revoked.apply((0..1_000).map(|_| RevokedSession {
        sid: Uuid::new_v4(),
        revoked_at: now,
        expires_at: now + chrono::Duration::hours(1),
    }));
    let auth = Authenticator {
        keys: Arc::new(ring()),
        revoked,
    };
    let header = format!("Bearer {token}");
    group.bench_function("authenticate_bearer", |b| {
        b.iter(|| auth.authenticate(black_box(Some(&header))).expect("valid"));
    });
    group.finish();
}

fn parsing(c: &mut Criterion) {
    let body = br#"{"title":"Buy milk and bread for the weekend","description":"Two litres of milk, one loaf of rye bread, and some butter if it is on offer."}"#;
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("create_task_serde_json", |b| {
        b.iter(|| {
            let task: NewTask = serde_json::from_slice(black_box(body)).expect("valid body");
            // The title check task-service runs: length in Unicode scalar values.
            black_box(task.title.chars().count());
            task
        });
    });

    // The full extractor: content-type check, body collection, serde, problem mapping.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    group.bench_function("create_task_json_extractor", |b| {
        b.iter(|| {
            let request = Request::builder()
                .method("POST")
                .uri("/api/v1/tasks")
                .header("content-type", "application/json")
                .body(Body::from(&body[..]))
                .expect("request");
            let parsed = runtime.block_on(Json::<NewTask>::from_request(request, &TaskShape));
            match parsed {
                Ok(Json(task)) => task,
                Err(_) => panic!("valid body refused"),
            }
        });
    });
    group.finish();

    // The list endpoint's response body: 100 tasks.
    let user_id = Uuid::new_v4();
    let now = Utc::now();
    let tasks: Vec<Task> = (0..100)
        .map(|i| Task {
            id: 1_000_000 + i,
            user_id,
            title: format!("task number {i} of the benchmark user"),
            description: (i % 2 == 0).then(|| "a short description of the task".to_owned()),
            completed: i % 3 == 0,
            created_at: now,
            updated_at: now,
        })
        .collect();
    let mut group = c.benchmark_group("serialize");
    // As task-service writes a page (`task-service/src/tasks/body.rs`): sonic-rs, which writes
    // the same bytes as serde_json (the next row) with fewer passes over each string.
    group.bench_function("task_list_100", |b| {
        b.iter(|| sonic_rs::to_vec(black_box(&tasks)).expect("serialisable"));
    });
    group.bench_function("task_list_100_serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&tasks)).expect("serialisable"));
    });
    let chrono_tasks: Vec<TaskChronoTimestamps> = tasks
        .iter()
        .map(|t| TaskChronoTimestamps {
            id: t.id,
            user_id: t.user_id,
            title: t.title.clone(),
            description: t.description.clone(),
            completed: t.completed,
            created_at: t.created_at,
            updated_at: t.updated_at,
        })
        .collect();
    group.bench_function("task_list_100_chrono_timestamps", |b| {
        b.iter(|| serde_json::to_vec(black_box(&chrono_tasks)).expect("serialisable"));
    });
    group.bench_function("task_1", |b| {
        b.iter(|| sonic_rs::to_vec(black_box(&tasks[0])).expect("serialisable"));
    });
    group.finish();
}

/// A whole authenticated request through the shared HTTP stack (`common::http::api_stack`) to a
/// handler that does nothing else, logged as the services log by default (`info`, JSON lines) and
/// at `warn` (no request span): what the request span costs per request, without the network.
fn request_stack(c: &mut Criterion) {
    use axum::Router;
    use axum::routing::get;
    use common::auth::AuthUser;
    use tower::ServiceExt;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;

    let keys = ring();
    let token = keys.sign_access(Uuid::new_v4(), Uuid::new_v4(), 86_400);
    let bearer = format!("Bearer {token}");
    let auth = Authenticator {
        keys: Arc::new(keys),
        revoked: RevokedSessions::polled(std::time::Duration::from_secs(300)),
    };
    auth.revoked.apply([]);
    // Two yields: a handler waiting on the database is polled more than once, and the span is
    // entered and left at every poll.
    let router = Router::new()
        .route(
            "/api/v1/tasks/{id}",
            get(|_caller: AuthUser| async {
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                StatusCode::OK
            }),
        )
        .with_state(auth);
    let args = common::http::HttpArgs {
        http_addr: "127.0.0.1:0".parse().expect("address"),
        admin_addr: "127.0.0.1:0".parse().expect("address"),
        request_timeout_ms: 10_000,
        cors_allowed_origins: vec![],
        shutdown_delay_seconds: 0,
        shutdown_timeout_seconds: 1,
        http_header_read_timeout_ms: 10_000,
        http_keepalive_timeout_seconds: 75,
        http_max_connections: 16,
    };
    let metrics =
        common::metrics::HttpMetrics::register(&prometheus::Registry::new()).expect("metrics");
    let app = common::http::api_stack(router, &args, metrics).expect("stack");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let request = || {
        Request::get("/api/v1/tasks/42")
            .header("authorization", &bearer)
            .body(Body::empty())
            .expect("request")
    };

    let mut group = c.benchmark_group("request_stack");
    for level in [tracing::Level::INFO, tracing::Level::WARN] {
        let subscriber = tracing_subscriber::registry()
            .with(Targets::new().with_default(level))
            .with(common::telemetry::json_lines(std::io::sink));
        tracing::subscriber::with_default(subscriber, || {
            group.bench_function(format!("get_logged_at_{}", level.as_str()), |b| {
                b.iter(|| {
                    let response = runtime
                        .block_on(app.clone().oneshot(request()))
                        .expect("infallible");
                    assert_eq!(response.status(), StatusCode::OK);
                    response
                });
            });
        });
    }
    group.finish();
}

criterion_group!(benches, jwt, parsing, request_stack);
criterion_main!(benches);
