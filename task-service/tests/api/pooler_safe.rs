//! The pool sends no startup parameter a transaction-mode pooler refuses: PgBouncer, as Neon and
//! most managed poolers run it, rejects `extra_float_digits` (which sqlx sends by default) with
//! `unsupported startup parameter`, and no connection is ever made.

use crate::helpers::fresh_database;

#[tokio::test]
async fn the_pool_leaves_extra_float_digits_at_the_servers_default() {
    let database = fresh_database().await;
    let args = common::db::DatabaseArgs {
        database_url: secrecy::SecretString::from(database.url().to_owned()),
        database_max_connections: 1,
        database_acquire_timeout_ms: 3000,
    };
    let db = common::db::Db::connect_lazy(&args, &prometheus::Registry::new()).unwrap();
    let mut conn = db.acquire().await.unwrap();
    let source: String =
        sqlx::query_scalar("SELECT source FROM pg_settings WHERE name = 'extra_float_digits'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(source, "default", "the client set it at startup");
}
