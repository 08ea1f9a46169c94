//! A login storm saturates auth-service's hashing pool: excess logins are refused with 503 +
//! `Retry-After` after a bounded wait instead of queueing without bound, and the requests that
//! need no hash — auth-service's `GET /me`, every task-service call — keep answering quickly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::{Running, eventually, fresh_database, quantile, spawn_auth, spawn_tasks};

const QUEUE_TIMEOUT: Duration = Duration::from_millis(1000);
const LOGIN_WORKERS: usize = 16;
const PROBES: usize = 60;
/// How long the requests without a hash are measured during the storm.
const STORM: Duration = Duration::from_secs(3);

#[derive(Debug)]
struct Login {
    latency: Duration,
    status: u16,
    retry_after: Option<String>,
    problem_json: bool,
}

/// Sequential requests to each of `GET /me` and `GET /api/v1/tasks`, concurrently, at least
/// `PROBES` of each and for at least `lasting`; returns every latency, and asserts each
/// answered 200.
async fn probe(
    client: &reqwest::Client,
    auth: &Running,
    tasks: &Running,
    token: &str,
    lasting: Duration,
) -> Vec<Duration> {
    let one = |url: String| {
        let client = client.clone();
        let token = token.to_owned();
        async move {
            let mut latencies = Vec::with_capacity(PROBES);
            let begun = Instant::now();
            while latencies.len() < PROBES || begun.elapsed() < lasting {
                let started = Instant::now();
                let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                let status = response.status();
                let _ = response.bytes().await;
                latencies.push(started.elapsed());
                assert_eq!(status, 200, "{url} answers 200");
            }
            latencies
        }
    };
    let (me, list) = tokio::join!(
        one(auth.url("/api/v1/auth/me")),
        one(tasks.url("/api/v1/tasks"))
    );
    me.into_iter().chain(list).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_gets_503s_and_leaves_other_requests_fast() {
    let _serial = crate::helpers::one_at_a_time().await;
    let database = fresh_database().await;
    let auth = spawn_auth(
        &database,
        &[
            "--bcrypt-cost",
            "12",
            "--bcrypt-max-concurrency",
            "1",
            "--bcrypt-max-queue",
            "4",
            "--bcrypt-queue-timeout-ms",
            &QUEUE_TIMEOUT.as_millis().to_string(),
            "--rate-limit-enabled",
            "false",
        ],
    )
    .await;
    let tasks = spawn_tasks(&database, &[]).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let credentials = json!({"email": "storm@example.com", "password": "correct horse battery"});
    let registered = client
        .post(auth.url("/api/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    // An idle login costs one hash at cost 12: the unit the bounds below are made of.
    let mut hash_time = Duration::MAX;
    let mut token = String::new();
    for _ in 0..2 {
        let started = Instant::now();
        let response = client
            .post(auth.url("/api/v1/auth/login"))
            .json(&credentials)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        hash_time = hash_time.min(started.elapsed());
        token = response.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
    }

    let idle = probe(&client, &auth, &tasks, &token, Duration::ZERO).await;

    // The storm: logins back to back, pausing only briefly after a refusal.
    let storming = Arc::new(AtomicBool::new(true));
    let logins = Arc::new(Mutex::new(Vec::<Login>::new()));
    let workers: Vec<_> = (0..LOGIN_WORKERS)
        .map(|_| {
            let (client, url, credentials) = (
                client.clone(),
                auth.url("/api/v1/auth/login"),
                credentials.clone(),
            );
            let (storming, logins) = (storming.clone(), logins.clone());
            tokio::spawn(async move {
                while storming.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let response = client.post(&url).json(&credentials).send().await.unwrap();
                    let latency = started.elapsed();
                    let status = response.status().as_u16();
                    let header = |name: &str| {
                        response
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let login = Login {
                        latency,
                        status,
                        retry_after: header("retry-after"),
                        problem_json: header("content-type").as_deref()
                            == Some("application/problem+json"),
                    };
                    let _ = response.bytes().await;
                    logins.lock().await.push(login);
                    if status == 503 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || async {
            logins.lock().await.iter().any(|l| l.status == 503)
        })
        .await,
        "the storm saturates the hashing pool"
    );
    let loaded = probe(&client, &auth, &tasks, &token, STORM).await;
    storming.store(false, Ordering::SeqCst);
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(20), worker)
            .await
            .expect("every login answers")
            .unwrap();
    }

    let logins = logins.lock().await;
    let ok = logins.iter().filter(|l| l.status == 200).count();
    let busy = logins.iter().filter(|l| l.status == 503).count();
    let slowest = logins.iter().map(|l| l.latency).max().unwrap();
    let login_bound = QUEUE_TIMEOUT + 2 * hash_time + Duration::from_secs(1);
    let (idle_p50, idle_p99) = (quantile(&idle, 0.5), quantile(&idle, 0.99));
    let (loaded_p50, loaded_p99) = (quantile(&loaded, 0.5), quantile(&loaded, 0.99));
    let probe_bound = (10 * idle_p99).max(Duration::from_millis(250));
    println!(
        "bcrypt storm: {} logins, {ok} ok, {busy} refused 503, slowest {slowest:?} (bound {login_bound:?}, one hash {hash_time:?}); \
         /me + /tasks p50/p99 idle {idle_p50:?}/{idle_p99:?}, during storm {loaded_p50:?}/{loaded_p99:?} (bound {probe_bound:?})",
        logins.len()
    );
    for login in logins.iter() {
        assert!(
            login.status == 200 || login.status == 503,
            "a login is 200 or 503: {login:?}"
        );
        if login.status == 503 {
            assert!(login.problem_json, "{login:?}");
            assert_eq!(login.retry_after.as_deref(), Some("1"), "{login:?}");
        }
        assert!(
            login.latency <= login_bound,
            "no login waits past the queue timeout + its hash: {login:?}"
        );
    }
    assert!(busy > 0, "excess logins are refused");
    assert!(ok > 0, "the pool keeps hashing");
    assert!(
        loaded_p99 <= probe_bound,
        "requests without a hash stay fast: p99 {loaded_p99:?} during the storm, {idle_p99:?} idle"
    );
}
