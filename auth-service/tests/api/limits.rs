//! Abuse limits: per client IP and per account, counted in PostgreSQL so replicas share them.

use futures::future::join_all;
use reqwest::Response;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, assert_problem, email, spawn_app, spawn_on, spawn_with};

async fn login_from(
    app: &TestApp,
    forwarded_for: Option<&str>,
    email: &str,
    password: &str,
) -> Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.unwrap()
}

fn retry_after(response: &Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn logins_past_the_per_ip_limit_get_429_with_retry_after() {
    let app = spawn_with(&["--login-limit-per-ip", "3"]).await;
    for _ in 0..3 {
        assert_eq!(app.login(&email(), PASSWORD).await.status(), 401);
    }
    let refused = app.login(&email(), PASSWORD).await;
    let wait = retry_after(&refused);
    // At most two windows: the rest of this one, then the weighted tail of it in the next.
    assert!((1..=120).contains(&wait), "Retry-After {wait}");
    let body = assert_problem(refused, 429).await;
    assert!(!body.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn two_replicas_together_allow_no_more_attempts_than_one() {
    let limit = ["--login-limit-per-ip", "4"];
    let one = spawn_with(&limit).await;
    let two = spawn_on(&one.database_url, &limit).await;
    // Concurrent attempts on both replicas at once: the shared counter still admits four.
    let emails: Vec<String> = (0..12).map(|_| email()).collect();
    let attempts = emails.iter().enumerate().map(|(i, e)| {
        let replica = if i % 2 == 0 { &one } else { &two };
        replica.login(e, PASSWORD)
    });
    let statuses: Vec<u16> = join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let admitted = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((admitted, refused), (4, 8), "{statuses:?}");
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_with(&["--login-limit-per-ip", "2"]).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let spoofed = format!("198.51.100.{i}");
        statuses.push(
            login_from(&app, Some(&spoofed), &email(), PASSWORD)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![401, 401, 429, 429]);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app = spawn_with(&[
        "--login-limit-per-ip",
        "2",
        "--trusted-proxies",
        "127.0.0.1/32",
    ])
    .await;
    for i in 0..4 {
        let client = format!("198.51.100.{i}");
        let response = login_from(&app, Some(&client), &email(), PASSWORD).await;
        assert_eq!(response.status(), 401, "client {client} has its own budget");
    }
    let mut statuses = Vec::new();
    for _ in 0..3 {
        // A forged left-most entry does not move the client off its bucket.
        let chain = "6.6.6.6, 203.0.113.50";
        statuses.push(
            login_from(&app, Some(chain), &email(), PASSWORD)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![401, 401, 429]);
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_account_only() {
    let app = spawn_with(&["--failed-login-limit", "3"]).await;
    let victim = email();
    app.register(&victim, PASSWORD).await;
    let bystander = email();
    app.register(&bystander, PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(app.login(&victim, "wrong password").await.status(), 401);
    }
    // Even the right password waits now: guessing has to stop, not just fail.
    let locked = app.login(&victim.to_uppercase(), PASSWORD).await;
    assert!(retry_after(&locked) > 60);
    assert_problem(locked, 429).await;
    assert_eq!(app.login(&bystander, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn registrations_past_the_per_ip_limit_get_429() {
    let app = spawn_with(&["--register-limit-per-ip", "2"]).await;
    assert_eq!(app.register(&email(), PASSWORD).await.status(), 201);
    assert_eq!(app.register(&email(), PASSWORD).await.status(), 201);
    assert_problem(app.register(&email(), PASSWORD).await, 429).await;
}

#[tokio::test]
async fn limits_can_be_turned_off() {
    let app = spawn_with(&["--login-limit-per-ip", "1", "--rate-limit-enabled", "false"]).await;
    for _ in 0..4 {
        assert_eq!(app.login(&email(), PASSWORD).await.status(), 401);
    }
}

/// A replica that believes `X-Forwarded-For` from the test client (it plays the proxy).
async fn behind_proxy(extra: &[&str]) -> TestApp {
    let mut args = vec!["--trusted-proxies", "127.0.0.1/32"];
    args.extend_from_slice(extra);
    spawn_with(&args).await
}

async fn statuses_from(
    app: &TestApp,
    client: &str,
    email: &str,
    password: &str,
    n: usize,
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        let response = login_from(app, Some(client), email, password).await;
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn an_attacker_on_one_address_cannot_lock_the_owner_out() {
    let app = behind_proxy(&["--failed-login-limit", "3"]).await;
    let owner = email();
    app.register(&owner, PASSWORD).await;
    let attacker = "198.51.100.66";
    assert_eq!(
        statuses_from(&app, attacker, &owner, "wrong password", 5).await,
        vec![401, 401, 401, 429, 429]
    );
    // The attacker's address is locked out of this account, even with the right password…
    let refused = login_from(&app, Some(attacker), &owner, PASSWORD).await;
    assert!(retry_after(&refused) > 60);
    assert_problem(refused, 429).await;
    // …the owner on their own address is not.
    let home = login_from(&app, Some("203.0.113.10"), &owner, PASSWORD).await;
    assert_eq!(home.status(), 200);
}

#[tokio::test]
async fn the_account_ceiling_stops_guessing_spread_over_many_addresses() {
    let app = behind_proxy(&[
        "--failed-login-limit",
        "3",
        "--account-failed-login-limit",
        "5",
    ])
    .await;
    let owner = email();
    app.register(&owner, PASSWORD).await;
    // Five addresses one wrong guess each, then a sixth: the ceiling (5) is reached.
    for i in 0..5 {
        let client = format!("198.51.100.{i}");
        assert_eq!(
            login_from(&app, Some(&client), &owner, "wrong password")
                .await
                .status(),
            401
        );
    }
    let sixth = login_from(&app, Some("198.51.100.99"), &owner, "wrong password").await;
    assert_problem(sixth, 429).await;
    // While it holds, it holds for everyone: that is what a ceiling is.
    let owner_refused = login_from(&app, Some("203.0.113.10"), &owner, PASSWORD).await;
    assert_eq!(owner_refused.status(), 429);
    // Operators see which limit tripped.
    let exposition = common::test_metrics::scrape(&app.client, &app.admin).await;
    let tripped = common::test_metrics::sample(
        &exposition,
        "auth_rate_limited_total{limit=\"login_account\"}",
    );
    assert_eq!(tripped, 2.0);
    // Another account is untouched.
    let bystander = email();
    app.register(&bystander, PASSWORD).await;
    let other = login_from(&app, Some("198.51.100.99"), &bystander, PASSWORD).await;
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn every_spelling_of_an_account_spends_one_budget() {
    let app = spawn_with(&["--failed-login-limit", "3"]).await;
    let local = uuid::Uuid::new_v4().simple().to_string();
    app.register(&format!("Case.{local}@Example.com"), PASSWORD)
        .await;
    let spellings = [
        format!("case.{local}@example.com"),
        format!("  CASE.{local}@EXAMPLE.COM "),
        format!("\tcAsE.{local}@eXample.Com\n"),
    ];
    for spelling in &spellings {
        assert_eq!(app.login(spelling, "wrong password").await.status(), 401);
    }
    let fourth = app
        .login(&format!("Case.{local}@Example.com"), PASSWORD)
        .await;
    assert_problem(fourth, 429).await;
}

#[tokio::test]
async fn every_spelling_of_an_unknown_email_spends_one_budget() {
    let app = spawn_with(&["--failed-login-limit", "2"]).await;
    let local = uuid::Uuid::new_v4().simple().to_string();
    assert_eq!(
        app.login(&format!("nobody.{local}@example.com"), PASSWORD)
            .await
            .status(),
        401
    );
    assert_eq!(
        app.login(&format!(" NOBODY.{local}@example.COM"), PASSWORD)
            .await
            .status(),
        401
    );
    let third = app
        .login(&format!("Nobody.{local}@Example.com"), PASSWORD)
        .await;
    assert_problem(third, 429).await;
}

#[tokio::test]
async fn non_ascii_emails_are_refused_at_registration_and_login() {
    let app = spawn_app().await;
    // U+0130 folds to one character in PostgreSQL's lower() and to two in Rust's.
    let dotted = "\u{130}nci@example.com";
    let body = assert_problem(app.register(dotted, PASSWORD).await, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("ASCII"), "{body}");
    assert_problem(app.login(dotted, PASSWORD).await, 400).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.users")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn a_burst_of_wrong_passwords_larger_than_the_limit_admits_exactly_the_limit() {
    // A hashing pool that lets the whole burst in at once: counting only after each hash
    // would let all of them past the check.
    let app = spawn_with(&[
        "--failed-login-limit",
        "3",
        "--bcrypt-max-concurrency",
        "8",
        "--bcrypt-max-queue",
        "64",
        "--bcrypt-queue-timeout-ms",
        "30000",
    ])
    .await;
    let owner = email();
    app.register(&owner, PASSWORD).await;
    let attempts = (0..16).map(|_| app.login(&owner, "wrong password"));
    let statuses: Vec<u16> = join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let failed = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((failed, refused), (3, 13), "{statuses:?}");
}

#[tokio::test]
async fn a_successful_login_is_not_counted_as_a_failure() {
    let app = spawn_with(&["--failed-login-limit", "2"]).await;
    let owner = email();
    app.register(&owner, PASSWORD).await;
    for _ in 0..5 {
        assert_eq!(app.login(&owner, PASSWORD).await.status(), 200);
    }
    assert_eq!(app.login(&owner, "wrong password").await.status(), 401);
    assert_eq!(app.login(&owner, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn ipv6_clients_are_counted_by_their_64() {
    let app = behind_proxy(&["--login-limit-per-ip", "2"]).await;
    // Rotating addresses inside one /64 buys nothing.
    let mut statuses = Vec::new();
    for i in 1..=3 {
        let client = format!("2001:db8:aa:bb::{i:x}");
        statuses.push(
            login_from(&app, Some(&client), &email(), PASSWORD)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![401, 401, 429]);
    // The next /64 is another client.
    let neighbour = login_from(&app, Some("2001:db8:aa:bc::1"), &email(), PASSWORD).await;
    assert_eq!(neighbour.status(), 401);
}

#[tokio::test]
async fn the_ipv6_prefix_is_configurable() {
    let app = behind_proxy(&["--login-limit-per-ip", "2", "--ipv6-client-prefix", "128"]).await;
    for i in 1..=4 {
        let client = format!("2001:db8:aa:bb::{i:x}");
        let response = login_from(&app, Some(&client), &email(), PASSWORD).await;
        assert_eq!(response.status(), 401, "{client} is its own client at /128");
    }
}

#[tokio::test]
async fn an_ipv4_mapped_address_is_the_ipv4_client() {
    let app = behind_proxy(&["--login-limit-per-ip", "2"]).await;
    let statuses = vec![
        login_from(&app, Some("198.51.100.20"), &email(), PASSWORD)
            .await
            .status()
            .as_u16(),
        login_from(&app, Some("::ffff:198.51.100.20"), &email(), PASSWORD)
            .await
            .status()
            .as_u16(),
        login_from(&app, Some("::ffff:c633:6414"), &email(), PASSWORD)
            .await
            .status()
            .as_u16(),
    ];
    assert_eq!(statuses, vec![401, 401, 429]);
}

#[tokio::test]
async fn a_dual_stack_listener_trusts_an_ipv4_proxy_by_its_ipv4_range() {
    // On `[::]` an IPv4 peer is reported as ::ffff:127.0.0.1; TRUSTED_PROXIES says 127.0.0.1/32.
    let app = behind_proxy(&["--login-limit-per-ip", "1", "--http-addr", "[::]:0"]).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let url = format!("http://127.0.0.1:{port}/api/v1/auth/login");
    for i in 0..3 {
        let response = app
            .client
            .post(&url)
            .header("x-forwarded-for", format!("198.51.100.{}", 30 + i))
            .json(&json!({"email": email(), "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            401,
            "each forwarded client has its own budget"
        );
    }
}

#[tokio::test]
async fn an_entry_that_is_not_an_address_ends_the_forwarded_walk() {
    let app = behind_proxy(&["--login-limit-per-ip", "2"]).await;
    // A client rotating a forged address in front of garbage stays the proxy's hop (the peer).
    let mut statuses = Vec::new();
    for i in 0..4 {
        let chain = format!("198.51.100.{i}, not-an-address");
        statuses.push(
            login_from(&app, Some(&chain), &email(), PASSWORD)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![401, 401, 429, 429]);
}

#[tokio::test]
async fn refresh_and_logout_share_a_per_client_limit() {
    let app = spawn_with(&["--refresh-limit-per-ip", "3"]).await;
    assert_eq!(app.refresh("not-a-token").await.status(), 401);
    assert_eq!(app.logout("not-a-token").await.status(), 401);
    assert_eq!(app.refresh("not-a-token").await.status(), 401);
    let refused = app.logout("not-a-token").await;
    assert!(retry_after(&refused) >= 1);
    assert_problem(refused, 429).await;
    assert_problem(app.refresh("not-a-token").await, 429).await;
}

#[tokio::test]
async fn a_stray_byte_in_the_clients_part_of_x_forwarded_for_does_not_hide_the_client() {
    let app = behind_proxy(&[]).await;
    let owner = email();
    app.register(&owner, PASSWORD).await;
    // The proxy appended the address it saw to the client's own line, which holds a byte
    // outside visible ASCII: the proxy's entry still names the client.
    let line = reqwest::header::HeaderValue::from_bytes(b"6.6.6.\xff6, 198.51.100.77").unwrap();
    let login = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("x-forwarded-for", line)
        .json(&json!({"email": owner, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let login: serde_json::Value = login.json().await.unwrap();
    let sessions = app.sessions(login["access_token"].as_str().unwrap()).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["ip"], "198.51.100.77", "{sessions:?}");
}

/// The cleanup keeps a window for as long as the sliding estimate reads it: through the window
/// after it, two days for the longest rule (a day's window): deleted after one day, a day's
/// failures would count for nothing from the next cleanup on, and a full second day's would
/// pass at once.
#[tokio::test]
async fn the_cleanup_keeps_a_days_window_while_the_next_day_reads_it() {
    let app = spawn_app().await;
    let db = app.db().await;
    for (bucket, age_hours) in [("yesterday", 36), ("the day before", 60)] {
        sqlx::query(
            "INSERT INTO auth.rate_limits (bucket, window_start, hits)
             VALUES ($1, now() - make_interval(hours => $2), 100)",
        )
        .bind(bucket)
        .bind(age_hours)
        .execute(&db)
        .await
        .unwrap();
    }
    let mut conn = db.acquire().await.unwrap();
    auth_service::limits::delete_expired(&mut conn)
        .await
        .unwrap();
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT bucket FROM auth.rate_limits WHERE bucket IN ('yesterday', 'the day before')",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(left, ["yesterday"]);
}
