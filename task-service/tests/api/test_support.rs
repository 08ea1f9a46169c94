//! The test support itself: what a test leaves behind on the PostgreSQL server.

use sqlx::Connection;

use crate::helpers::spawn_app;

async fn database_exists(name: &str) -> bool {
    let server = common::postgres::server().await.unwrap();
    let mut conn = sqlx::PgConnection::connect(server.admin_url())
        .await
        .unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tests_database_is_dropped_when_the_test_lets_go_of_its_app() {
    let app = spawn_app().await;
    let user = app.user();
    // The service holds pooled connections to it: the drop must end them, not wait for them.
    app.task(&user, "in use").await;
    let name = app
        .database_url
        .rsplit('/')
        .next()
        .and_then(|last| last.split('?').next())
        .unwrap()
        .to_owned();
    assert!(name.starts_with("todo_test_"), "{name}");
    assert!(database_exists(&name).await);
    drop(app);
    // KEEP_TEST_DATABASES=1 keeps it; run this test with and without it to see both.
    let keep = std::env::var("KEEP_TEST_DATABASES").is_ok_and(|v| !v.is_empty() && v != "0");
    assert_eq!(database_exists(&name).await, keep, "{name} kept: {keep}");
}
