//! Metric label sets stay bounded whatever clients send: made-up methods share one label.

use common::test_metrics::{sample, scrape};
use reqwest::Method;

use crate::helpers::spawn_app;

/// Lines of the two per-request families in an exposition: one per series.
fn request_series(exposition: &str) -> usize {
    exposition
        .lines()
        .filter(|line| {
            line.starts_with("http_server_requests_total{")
                || line.starts_with("http_server_request_duration_seconds")
        })
        .count()
}

#[tokio::test]
async fn made_up_methods_add_one_label_set_and_standard_methods_keep_their_own() {
    let app = spawn_app().await;
    let before = request_series(&scrape(&app.client, &app.admin).await);

    for i in 0..100 {
        let method = Method::from_bytes(format!("XFOO{i}").as_bytes()).unwrap();
        let response = app
            .client
            .request(method, app.url("/api/v1/tasks"))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let after = scrape(&app.client, &app.admin).await;
    let added = request_series(&after) - before;
    // One label set is a counter plus a histogram: 13 buckets, +Inf, _sum and _count.
    assert!(
        added <= 17,
        "100 made-up methods added {added} series (one label set is 17)"
    );
    assert!(!after.contains("XFOO"), "no made-up method is a label");
    let other = after
        .lines()
        .filter(|line| line.starts_with("http_server_requests_total{method=\"other\""))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum::<f64>();
    assert_eq!(other, 100.0, "all 100 are counted, under `other`");

    let get = app
        .client
        .get(app.url("/api/v1/tasks"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 401);
    let after_get = scrape(&app.client, &app.admin).await;
    assert_eq!(
        sample(
            &after_get,
            r#"http_server_requests_total{method="GET",route="/api/v1/tasks",status="401"}"#
        ),
        1.0,
        "a standard method keeps its own label"
    );
}
