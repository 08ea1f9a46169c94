//! Connections are bounded on both listeners: a client trickling its headers is cut off at the
//! header read timeout, an idle kept-alive connection closes at the keep-alive timeout (and not
//! at the header timeout), past the connection cap a new connection waits until one closes, and
//! an oversized request head is refused.
//! Raw TCP, so the test controls every byte and sees the close.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::helpers::{fresh_database, spawn_on};

/// Only a hang guard: every test waits for a mechanism (a close, a response), never a duration.
const HANG_GUARD: Duration = Duration::from_secs(30);

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("the listener accepts TCP")
}

/// Reads one response from `stream` (its head and a `Content-Length` body); returns the status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("a response");
        assert!(n > 0, "the connection closed before a whole response");
        received.extend_from_slice(&chunk[..n]);
        let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&received[..end]).expect("an ASCII head");
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().expect("a length"))
            })
            .unwrap_or(0);
        if received.len() >= end + 4 + length {
            return head[9..12].parse().expect("a status code");
        }
    }
}

async fn get(stream: &mut TcpStream, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .expect("request sent");
    read_response(stream).await
}

/// Whether the server closed `stream`: a read sees end of file or a reset.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

/// A fresh client (so no pooled connection is reused across a server-side close) asks `base`.
async fn healthz(base: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .timeout(HANG_GUARD)
        .send()
        .await
        .expect("served")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off_at_the_header_timeout_while_others_are_served() {
    let database = fresh_database().await;
    let app = spawn_on(&database, &["--http-header-read-timeout-ms", "1000"]).await;
    for (listener, base) in [("api", app.address.clone()), ("admin", app.admin.clone())] {
        let mut trickler = connect(&base).await;
        trickler
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
            .await
            .unwrap();
        assert_eq!(
            healthz(&base).await,
            200,
            "{listener}: others are served meanwhile"
        );

        // A header line every 250 ms: each arrives well inside the timeout, so only a deadline
        // counted from the request's first byte (not from the last byte read) cuts this off.
        let started = Instant::now();
        let mut lines = 0;
        let cut_off = timeout(HANG_GUARD, async {
            let mut chunk = [0u8; 1024];
            loop {
                tokio::select! {
                    read = trickler.read(&mut chunk) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    () = tokio::time::sleep(Duration::from_millis(250)) => {
                        let line = format!("X-Trickle-{lines}: still coming\r\n");
                        if trickler.write_all(line.as_bytes()).await.is_err() {
                            return;
                        }
                        lines += 1;
                    }
                }
            }
        })
        .await;
        assert!(
            cut_off.is_ok(),
            "{listener}: the trickling client is still connected after {lines} header lines"
        );
        let timeouts = app
            .metric(&format!(
                r#"http_server_connection_timeouts_total{{listener="{listener}",timeout="header"}}"#
            ))
            .await;
        assert_eq!(timeouts, 1.0, "{listener}: closed by the header timeout");
        assert_eq!(
            healthz(&base).await,
            200,
            "{listener}: still serving afterwards"
        );
        println!(
            "{listener}: trickler cut off after {:?} and {lines} header lines (timeout 1 s)",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn an_idle_kept_alive_connection_closes_at_the_keepalive_timeout_not_the_header_timeout() {
    let database = fresh_database().await;
    let app = spawn_on(
        &database,
        &[
            "--http-header-read-timeout-ms",
            "1000",
            "--http-keepalive-timeout-seconds",
            "5",
        ],
    )
    .await;
    let mut kept = connect(&app.address).await;
    assert_eq!(get(&mut kept, "/healthz").await, 200);
    // Idle for twice the header timeout: hyper's own header timeout would close it here.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        get(&mut kept, "/healthz").await,
        200,
        "an idle gap longer than the header timeout keeps the connection"
    );
    let idle_from = Instant::now();
    assert!(
        timeout(HANG_GUARD, closed_by_server(&mut kept))
            .await
            .is_ok(),
        "the idle connection is closed"
    );
    let idle_for = idle_from.elapsed();
    let series = |timeout| {
        format!(r#"http_server_connection_timeouts_total{{listener="api",timeout="{timeout}"}}"#)
    };
    assert_eq!(
        app.metric(&series("idle")).await,
        1.0,
        "by the idle timeout"
    );
    assert_eq!(app.metric(&series("header")).await, 0.0);
    println!("idle connection closed after {idle_for:?} (keep-alive timeout 5 s)");
}

#[tokio::test]
async fn at_the_connection_cap_a_new_connection_waits_until_one_closes() {
    let database = fresh_database().await;
    let app = spawn_on(&database, &["--http-max-connections", "2"]).await;
    let open = r#"http_server_connections{listener="api"}"#;
    let mut first = connect(&app.address).await;
    let mut second = connect(&app.address).await;
    assert_eq!(get(&mut first, "/healthz").await, 200);
    assert_eq!(get(&mut second, "/healthz").await, 200);
    assert_eq!(app.metric(open).await, 2.0);
    assert_eq!(
        app.metric(r#"http_server_max_connections{listener="api"}"#)
            .await,
        2.0
    );

    // The kernel completes the handshake (the accept queue), but the service does not accept.
    let mut third = connect(&app.address).await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        timeout(Duration::from_secs(1), third.read(&mut byte))
            .await
            .is_err(),
        "no answer while both slots are held"
    );
    assert_eq!(app.metric(open).await, 2.0, "the third is not accepted");
    // The admin listener has its own slots: probes and scrapes are never locked out by the API.
    assert_eq!(healthz(&app.admin).await, 200);

    drop(first);
    let answered = timeout(HANG_GUARD, read_response(&mut third)).await;
    assert_eq!(
        answered.expect("served once a slot frees"),
        200,
        "the waiting connection is served after one closes"
    );
    assert_eq!(get(&mut second, "/healthz").await, 200);
    assert_eq!(app.metric(open).await, 2.0);
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_and_the_connection_closed() {
    let app = spawn_on(&fresh_database().await, &[]).await;
    let limit = common::listener::MAX_HEADER_BYTES;
    let request = |padding: usize| {
        let padding = "a".repeat(padding);
        format!("GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: {padding}\r\n\r\n")
    };

    let mut under = connect(&app.address).await;
    under
        .write_all(request(limit - 1024).as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut under).await,
        200,
        "a head under the limit is served"
    );

    let mut over = connect(&app.address).await;
    // 16 KiB past the limit. hyper's read buffer (up to ~400 KiB) takes the whole head before
    // its parser refuses it at the limit, so nothing is left unread when the socket closes.
    // The server may close before the write ends, so the write may fail.
    let _ = over.write_all(request(limit + 16 * 1024).as_bytes()).await;
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    let ended = timeout(HANG_GUARD, async {
        loop {
            match over.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .expect("the connection is closed");
    assert!(
        received.starts_with(b"HTTP/1.1 431"),
        "refused with a 431: {:?}",
        String::from_utf8_lossy(&received)
    );
    // Closed, not reset: a socket closed with unread bytes is reset, and over a network a
    // reset can discard the 431 while it is still on its way.
    assert!(
        ended.is_ok(),
        "the connection ends with the server's FIN, not a reset: {ended:?}"
    );
}
