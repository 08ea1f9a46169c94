//! `todo-local`: the whole stack on one origin, as the ingress would route it.
//!
//! Uses `DATABASE_URL` when set, else starts a throwaway PostgreSQL cluster (deleted on exit).
//! Starts auth-service and task-service in this process (each with its own admin port), and
//! serves both APIs on `LOCAL_ADDR` (default 127.0.0.1:8080), `/api/v1/auth*` and
//! `/api/v1/tasks*` forwarded to the service that owns them.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use clap::Parser;
use common::Problem;
use rand::RngCore;

#[derive(Parser)]
#[command(
    name = "todo-local",
    about = "Run PostgreSQL, auth-service and task-service on one origin"
)]
struct Args {
    /// Where the combined API listens.
    #[arg(long, env = "LOCAL_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// PostgreSQL to use; unset: a throwaway cluster in a temp dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Shared signing key; unset: a random key for this run (tokens die with the process).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log_format = std::env::var("LOG_FORMAT").unwrap_or_else(|_| "text".into());
    let telemetry = common::telemetry::init(
        "todo-local",
        &common::telemetry::TelemetryArgs::local(&log_format),
    )?;
    let (database_url, _cluster) = match args.database_url {
        Some(url) => (url, None),
        None => {
            println!("DATABASE_URL is not set: starting a throwaway PostgreSQL cluster…");
            let (url, child) = common::postgres::start_throwaway_cluster()?;
            (url, Some(child))
        }
    };
    let key = args.jwt_secret.unwrap_or_else(random_key);

    let auth = auth_service::build(auth_service::Config::from_serve_args(local_args(
        &database_url,
        &key,
        &[],
    ))?)
    .await
    .context("starting auth-service")?;
    let auth_admin = format!("http://{}", auth.admin_addr());
    let tasks = task_service::build(task_service::Config::from_serve_args(local_args(
        &database_url,
        &key,
        &["--auth-admin-url", &auth_admin],
    ))?)
    .await
    .context("starting task-service")?;

    let upstreams = Upstreams {
        auth: format!("http://{}", auth.api_addr()),
        tasks: format!("http://{}", tasks.api_addr()),
        client: reqwest::Client::new(),
    };
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {} (set LOCAL_ADDR)", args.addr))?;
    let origin = format!("http://{}", listener.local_addr()?);
    println!();
    println!("todo stack ready on {origin}");
    println!("  auth API:  {origin}/api/v1/auth   (docs: {origin}/api/v1/auth/docs/)");
    println!("  tasks API: {origin}/api/v1/tasks  (docs: {origin}/api/v1/tasks/docs/)");
    println!(
        "  admin:     auth {auth_admin}, tasks http://{}  (/healthz /readyz /metrics)",
        tasks.admin_addr()
    );
    println!(
        "  try: curl -X POST {origin}/api/v1/auth/register -H 'content-type: application/json' -d '{{\"email\":\"me@example.com\",\"password\":\"correct horse\"}}'"
    );
    println!("Ctrl-C stops everything.");

    let auth_run = tokio::spawn(auth.run_until_stopped(common::server::shutdown_signal()));
    let tasks_run = tokio::spawn(tasks.run_until_stopped(common::server::shutdown_signal()));
    let front = Router::new().fallback(forward).with_state(upstreams);
    axum::serve(listener, front)
        .with_graceful_shutdown(common::server::shutdown_signal())
        .await?;
    let _ = tokio::join!(auth_run, tasks_run);
    telemetry.shutdown();
    Ok(())
}

/// The `serve` arguments of a service here: its environment applies, but the local addresses,
/// the database and the key are forced.
fn local_args<'a>(database_url: &'a str, key: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--database-url",
        database_url,
        "--http-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--migrate-on-start",
        "true",
        "--shutdown-delay-seconds",
        "0",
    ];
    // JWT_KEYS from the environment would clash with the forced key.
    if std::env::var_os("JWT_KEYS").is_none() {
        args.extend(["--jwt-secret", key]);
    }
    args.extend_from_slice(extra);
    args
}

fn random_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Clone)]
struct Upstreams {
    auth: String,
    tasks: String,
    client: reqwest::Client,
}

/// Forwards a request to the service that owns its path, like the ingress does.
async fn forward(State(upstreams): State<Upstreams>, request: Request) -> Response {
    let path = request.uri().path();
    let base = if path.starts_with("/api/v1/auth") {
        &upstreams.auth
    } else if path.starts_with("/api/v1/tasks") {
        &upstreams.tasks
    } else {
        return Problem::not_found(
            "no such resource: the API lives under /api/v1/auth and /api/v1/tasks",
        )
        .into_response();
    };
    let target = format!(
        "{base}{}",
        request
            .uri()
            .path_and_query()
            .map_or(path, |pq| pq.as_str())
    );
    let (parts, body) = request.into_parts();
    // One more than the services' limit, so they, not this forwarder, answer 413.
    let Ok(body) = axum::body::to_bytes(body, common::http::MAX_BODY_BYTES * 2).await else {
        return Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than the limit",
        )
        .into_response();
    };
    let mut outbound = upstreams.client.request(parts.method, target).body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST {
            outbound = outbound.header(name, value);
        }
    }
    match outbound.send().await {
        Ok(upstream) => {
            let mut response = Response::builder().status(upstream.status());
            for (name, value) in upstream.headers() {
                response = response.header(name, value);
            }
            let bytes = upstream.bytes().await.unwrap_or_default();
            response
                .body(Body::from(bytes))
                .unwrap_or_else(|_| Problem::internal().into_response())
        }
        Err(error) => {
            tracing::warn!(%error, "upstream unreachable");
            Problem::unavailable("the service is not answering", 1).into_response()
        }
    }
}
