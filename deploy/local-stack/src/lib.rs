//! The whole stack on one origin, as the ingress would route it: the public listener, a
//! PostgreSQL (`DATABASE_URL`, else a throwaway cluster deleted on exit), auth-service and
//! task-service in this process (each with its own admin port), and a forwarder that sends
//! `/api/v1/auth*` and `/api/v1/tasks*` to the service that owns them. The forwarder runs in
//! the services' own HTTP stack, so its own answers (404, 413, 503) look like theirs.

use std::future::Future;
use std::net::SocketAddr;
use std::process::Child;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use clap::Parser;
use common::Problem;
use common::server::Server;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "todo-local",
    about = "Run PostgreSQL, auth-service and task-service on one origin"
)]
pub struct Args {
    /// Where the combined API listens.
    #[arg(long, env = "LOCAL_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// PostgreSQL to use; unset: a throwaway cluster in a temp dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Shared signing key; unset: a random key for this run (tokens die with the process).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

/// The settings of the forwarder's HTTP stack: the services' own (`REQUEST_TIMEOUT_MS` and
/// the rest), read from the same environment.
#[derive(Parser)]
struct FrontSettings {
    #[command(flatten)]
    http: common::http::HttpArgs,
}

pub struct LocalStack {
    listener: TcpListener,
    front: Router,
    auth: Server,
    tasks: Server,
    /// The throwaway cluster's supervisor: it stops the cluster when this process lets go.
    _cluster: Option<Child>,
}

impl LocalStack {
    /// Binds the public address first, so a taken `LOCAL_ADDR` fails at once, before a
    /// PostgreSQL or a service is started; then starts those and wires the forwarder.
    pub async fn build(args: Args) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(args.addr).await.map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {} ({error}): set LOCAL_ADDR to a free address, e.g. LOCAL_ADDR=127.0.0.1:18080",
                args.addr
            )
        })?;
        let (database_url, cluster) = match args.database_url {
            Some(url) => (url, None),
            None => {
                println!("DATABASE_URL is not set: starting a throwaway PostgreSQL cluster…");
                let (url, child) = common::postgres::start_throwaway_cluster()?;
                (url, Some(child))
            }
        };
        let key = args.jwt_secret.unwrap_or_else(random_key);

        let auth = auth_service::build(auth_service::Config::from_serve_args(
            local_args(&database_url, &key, &[])
                .iter()
                .map(String::as_str),
        )?)
        .await
        .context("starting auth-service")?;
        let auth_admin = format!("http://{}", auth.admin_addr());
        let tasks = task_service::build(task_service::Config::from_serve_args(
            local_args(&database_url, &key, &[("--auth-admin-url", &auth_admin)])
                .iter()
                .map(String::as_str),
        )?)
        .await
        .context("starting task-service")?;

        let upstreams = Upstreams {
            auth: format!("http://{}", auth.api_addr()),
            tasks: format!("http://{}", tasks.api_addr()),
            // Redirects go back to the client unchanged: followed here, `…/docs` would serve
            // the page under the wrong URL and its relative assets would 404.
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        };
        Ok(Self {
            listener,
            front: front_router(upstreams)?,
            auth,
            tasks,
            _cluster: cluster,
        })
    }

    /// `http://<address>` of the combined API.
    pub fn origin(&self) -> String {
        let addr = self
            .listener
            .local_addr()
            .expect("a bound listener has an address");
        format!("http://{addr}")
    }

    /// Where it listens, and a first request to try.
    pub fn print_banner(&self) {
        let origin = self.origin();
        println!();
        println!("todo stack ready on {origin}");
        println!("  auth API:  {origin}/api/v1/auth   (docs: {origin}/api/v1/auth/docs/)");
        println!("  tasks API: {origin}/api/v1/tasks  (docs: {origin}/api/v1/tasks/docs/)");
        println!(
            "  admin:     auth http://{}, tasks http://{}  (/healthz /readyz /metrics)",
            self.auth.admin_addr(),
            self.tasks.admin_addr()
        );
        println!(
            "  try: curl -X POST {origin}/api/v1/auth/register -H 'content-type: application/json' -d '{{\"email\":\"me@example.com\",\"password\":\"correct horse\"}}'"
        );
        println!("Ctrl-C stops everything.");
    }

    /// Serves until `stop` resolves, then stops the forwarder and both services.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stopping = CancellationToken::new();
        tokio::spawn({
            let stopping = stopping.clone();
            async move {
                stop.await;
                stopping.cancel();
            }
        });
        let auth_run = tokio::spawn(
            self.auth
                .run_until_stopped(stopping.clone().cancelled_owned()),
        );
        let tasks_run = tokio::spawn(
            self.tasks
                .run_until_stopped(stopping.clone().cancelled_owned()),
        );
        let served = axum::serve(self.listener, self.front)
            .with_graceful_shutdown(stopping.clone().cancelled_owned())
            .await;
        let _ = tokio::join!(auth_run, tasks_run);
        Ok(served?)
    }
}

/// The `serve` arguments of a service here: its environment applies, but the local addresses,
/// the database and the key are forced. Each is one `--name=value` word: a random key may start
/// with `-`, which clap would read as a flag when given as a separate word.
fn local_args(database_url: &str, key: &str, extra: &[(&str, &str)]) -> Vec<String> {
    let mut pairs = vec![
        ("--database-url", database_url),
        ("--http-addr", "127.0.0.1:0"),
        ("--admin-addr", "127.0.0.1:0"),
        ("--migrate-on-start", "true"),
        ("--shutdown-delay-seconds", "0"),
    ];
    // JWT_KEYS from the environment would clash with the forced key.
    if std::env::var_os("JWT_KEYS").is_none() {
        pairs.push(("--jwt-secret", key));
    }
    pairs.extend_from_slice(extra);
    pairs
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

fn random_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The forwarder inside the services' HTTP stack: request ids (passed on to the service, so one
/// id names the request on both hops), the security headers, problem+json for every error.
fn front_router(upstreams: Upstreams) -> anyhow::Result<Router> {
    let mut http = FrontSettings::try_parse_from(["todo-local"])
        .context("reading the HTTP settings")?
        .http;
    // The services answer CORS themselves; a second set of headers would make browsers refuse.
    http.cors_allowed_origins.clear();
    let metrics = common::metrics::HttpMetrics::register(&prometheus::Registry::new())?;
    let router = Router::new().fallback(forward).with_state(upstreams);
    common::http::api_stack(router, &http, metrics)
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
    // Twice the services' limit, so that they, not this forwarder, answer most 413s.
    let Ok(body) = axum::body::to_bytes(body, common::http::MAX_BODY_BYTES * 2).await else {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_starts_with_a_dash_is_a_value_not_a_flag() {
        // URL-safe base64 of random bytes starts with `-` one time in 64.
        let key = format!("-s{}", "A".repeat(41));
        let args = local_args("postgres://localhost/todo", &key, &[]);
        auth_service::Config::from_serve_args(args.iter().map(String::as_str))
            .expect("the key parses as the value of --jwt-secret");
        let task_args = local_args(
            "postgres://localhost/todo",
            &key,
            &[("--auth-admin-url", "http://127.0.0.1:1")],
        );
        task_service::Config::from_serve_args(task_args.iter().map(String::as_str))
            .expect("the key parses as the value of --jwt-secret");
    }
}
