//! README, "Database roles": pods that connect as roles with fewer rights than the one that
//! migrates need `USAGE` on their schema, `SELECT, INSERT, UPDATE, DELETE` on its tables and,
//! for task-service, `USAGE` on `tasks.tasks_id_seq`. Both services, each connected as a role
//! with exactly those rights, serve the whole API, report ready and run their background jobs;
//! without the sequence grant, task-service's creates fail (so the paragraph names a grant the
//! code really needs, and this test says so if it stops needing it).

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{
    PASSWORD, eventually, fresh_database, log_in, spawn_auth, spawn_on, spawn_polling,
};

/// A login role with a password (the server may ask for one), dropped by `drop_role`.
struct Role {
    name: String,
    url: String,
}

/// Creates a role that may only do what `grants` give it (each `GRANT … TO {role}`), and the
/// database URL that connects as it.
async fn role_with(admin: &PgPool, direct_url: &str, name: String, grants: &[&str]) -> Role {
    let password = uuid::Uuid::new_v4().simple().to_string();
    sqlx::query(&format!(
        "CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{password}'"
    ))
    .execute(admin)
    .await
    .expect("create the role");
    for grant in grants {
        sqlx::query(&grant.replace("{role}", &name))
            .execute(admin)
            .await
            .expect("grant");
    }
    let mut url = reqwest::Url::parse(direct_url).expect("the database URL");
    url.set_username(&name).expect("a user name");
    url.set_password(Some(&password)).expect("a password");
    Role {
        name,
        url: url.to_string(),
    }
}

async fn drop_role(admin: &PgPool, role: &Role) {
    for statement in ["DROP OWNED BY {role}", "DROP ROLE {role}"] {
        sqlx::query(&statement.replace("{role}", &role.name))
            .execute(admin)
            .await
            .expect("drop the role");
    }
}

const AUTH_GRANTS: [&str; 2] = [
    "GRANT USAGE ON SCHEMA auth TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA auth TO {role}",
];
const TASKS_GRANTS: [&str; 2] = [
    "GRANT USAGE ON SCHEMA tasks TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tasks TO {role}",
];
const SEQUENCE_GRANT: &str = "GRANT USAGE ON SEQUENCE tasks.tasks_id_seq TO {role}";

#[tokio::test]
async fn both_services_serve_everything_as_roles_with_only_the_documented_grants() {
    let database = fresh_database().await;
    let admin = common::postgres::pool(&database.direct_url())
        .await
        .expect("the admin pool");
    let auth_role = role_with(
        &admin,
        &database.direct_url(),
        format!("{}_auth", database.name()),
        &AUTH_GRANTS,
    )
    .await;
    let tasks_grants = [TASKS_GRANTS[0], TASKS_GRANTS[1], SEQUENCE_GRANT];
    let tasks_role = role_with(
        &admin,
        &database.direct_url(),
        format!("{}_tasks", database.name()),
        &tasks_grants,
    )
    .await;

    // The roles really are limited: neither may create in its schema nor read the other's.
    let denied = [
        (&auth_role, "CREATE TABLE auth.extra (x int)"),
        (&auth_role, "SELECT 1 FROM tasks.tasks"),
        (&tasks_role, "CREATE TABLE tasks.extra (x int)"),
        (&tasks_role, "SELECT 1 FROM auth.users"),
    ];
    for (role, statement) in denied {
        let pool = common::postgres::pool(&role.url).await.unwrap();
        let error = sqlx::query(statement).execute(&pool).await.unwrap_err();
        assert!(
            error.to_string().contains("permission denied"),
            "{}: {statement}: {error}",
            role.name
        );
        pool.close().await;
    }

    // Both report ready (readiness reads each schema's migration table) and take requests.
    let (auth_api, auth_admin) = spawn_auth(&auth_role.url, &[]).await;
    let tasks = spawn_polling(&tasks_role.url, &auth_admin).await;
    let client = reqwest::Client::new();
    let auth = |path: &str| format!("{auth_api}/api/v1/auth{path}");
    let login = log_in(&client, &auth_api).await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refreshed = client
        .post(auth("/refresh"))
        .json(&json!({"refresh_token": login["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);

    // Every tasks operation, a create with an idempotency key among them.
    let request = |method: reqwest::Method, path: &str| {
        client.request(method, tasks.url(path)).bearer_auth(&access)
    };
    let created = request(reqwest::Method::POST, "/api/v1/tasks")
        .header("idempotency-key", "least-privilege-1")
        .json(&json!({"title": "least privilege"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let task: Value = created.json().await.unwrap();
    let item = format!("/api/v1/tasks/{}", task["id"]);
    let list = request(reqwest::Method::GET, "/api/v1/tasks")
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    let read = request(reqwest::Method::GET, &item).send().await.unwrap();
    assert_eq!(read.status(), 200);
    let updated = request(reqwest::Method::PUT, &item)
        .json(&json!({"title": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let completed = request(reqwest::Method::PATCH, &format!("{item}/complete"))
        .json(&json!({"completed": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(completed.status(), 200);
    let deleted = request(reqwest::Method::DELETE, &item)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);

    // The account lifecycle's background work: a deleted account's tasks are purged by
    // task-service from auth-service's feed, under the tasks role.
    let doomed = request(reqwest::Method::POST, "/api/v1/tasks")
        .json(&json!({"title": "purged with its owner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(doomed.status(), 201);
    let delete_me = client
        .delete(auth("/me"))
        .bearer_auth(&access)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(delete_me.status(), 204, "{:?}", delete_me.text().await);
    let purged = eventually(Duration::from_secs(10), || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks.tasks")
            .fetch_one(&admin)
            .await
            .unwrap();
        left == 0
    })
    .await;
    assert!(
        purged,
        "the deleted account's task is still there after 10 s"
    );
    tasks.shut_down().await;

    // Without the sequence grant a coalesced create cannot draw its id.
    sqlx::query(&format!(
        "REVOKE USAGE ON SEQUENCE tasks.tasks_id_seq FROM {}",
        tasks_role.name
    ))
    .execute(&admin)
    .await
    .unwrap();
    let without_sequence = spawn_on(&tasks_role.url, &[]).await;
    let user = without_sequence.user();
    let refused = without_sequence
        .create(&user, json!({"title": "no id to draw"}))
        .await;
    assert_eq!(refused.status(), 500);
    without_sequence.shut_down().await;

    for role in [&auth_role, &tasks_role] {
        drop_role(&admin, role).await;
    }
}
