//! The account lifecycle as task-service sees it. A deleted account's tasks are purged by
//! task-service itself, from auth-service's deleted-users feed: within a poll, after an outage of
//! every replica, by several replicas at once, and the same way when an operator deletes the
//! account. Sessions a user ends (one of them, or all with a new password) and an operator's
//! disable are refused here within the revocation poll.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, TestApp, fresh_database, register_and_log_in, spawn_auth, spawn_on,
    wait_for_lock_waits,
};

/// A real user of a real auth-service: registered and logged in.
struct Account {
    email: String,
    id: String,
    access: String,
}

/// Polls a task-service request with `access` until it is refused (401); it must be accepted
/// (200) until then. The 30 s limit is a hang guard only.
async fn wait_until_refused(tasks: &TestApp, access: &str) {
    let started = Instant::now();
    loop {
        let status = tasks
            .client
            .get(tasks.url("/api/v1/tasks"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            return;
        }
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still accepted after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn account(client: &reqwest::Client, auth_api: &str) -> Account {
    let (email, registered, login) = register_and_log_in(client, auth_api).await;
    Account {
        email,
        id: registered["id"].as_str().unwrap().to_owned(),
        access: login["access_token"].as_str().unwrap().to_owned(),
    }
}

/// Another login of `email` at auth-service: another session's token pair.
async fn log_in_again(
    client: &reqwest::Client,
    auth_api: &str,
    email: &str,
    password: &str,
) -> Value {
    let login = client
        .post(format!("{auth_api}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    login.json().await.unwrap()
}

async fn create_tasks(tasks: &TestApp, owner: &Account, count: usize) {
    for n in 0..count {
        let response = tasks
            .client
            .post(tasks.url("/api/v1/tasks"))
            .bearer_auth(&owner.access)
            .json(&json!({"title": format!("task {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
}

async fn delete_me(client: &reqwest::Client, auth_api: &str, owner: &Account) {
    let response = client
        .delete(format!("{auth_api}/api/v1/auth/me"))
        .bearer_auth(&owner.access)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

async fn tasks_of(db: &sqlx::PgPool, owner: &Account) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tasks.tasks WHERE user_id = $1::uuid")
        .bind(&owner.id)
        .fetch_one(db)
        .await
        .unwrap()
}

/// `tasks_purged_total` of `tasks` once it is non-zero (the 30 s limit is a hang guard).
async fn purged_total(client: &reqwest::Client, tasks: &TestApp) -> f64 {
    let started = Instant::now();
    loop {
        let metrics = common::test_metrics::scrape(client, &tasks.admin).await;
        let purged = common::test_metrics::sample(&metrics, "tasks_purged_total");
        if purged > 0.0 || started.elapsed() > Duration::from_secs(30) {
            return purged;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `owner` has no task left; how long that took. The 30 s limit is a hang guard.
async fn wait_until_purged(db: &sqlx::PgPool, owner: &Account) -> Duration {
    let started = Instant::now();
    while tasks_of(db, owner).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not purged after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// task-service polling `auth_admin` every second, settling a deletion after 3 s.
async fn task_service(database: &str, auth_admin: &str) -> TestApp {
    spawn_on(
        database,
        &[
            "--auth-admin-url",
            auth_admin,
            "--revocation-poll-seconds",
            "1",
            "--revocation-max-staleness-seconds",
            "2",
            "--request-timeout-ms",
            "1000",
        ],
    )
    .await
}

#[tokio::test]
async fn a_deleted_accounts_tasks_are_purged_within_a_poll_and_no_one_elses() {
    let database = fresh_database().await;
    let (auth_api, auth_admin) = spawn_auth(&database, &[]).await;
    let tasks = task_service(&database, &auth_admin).await;
    let client = reqwest::Client::new();
    let (alice, bob) = (
        account(&client, &auth_api).await,
        account(&client, &auth_api).await,
    );
    create_tasks(&tasks, &alice, 3).await;
    create_tasks(&tasks, &bob, 1).await;
    let db = tasks.db().await;

    delete_me(&client, &auth_api, &alice).await;
    let delay = wait_until_purged(&db, &alice).await;
    eprintln!("DELETE /me to the last task gone: {} ms", delay.as_millis());
    assert_eq!(tasks_of(&db, &bob).await, 1, "bob's task stays");
    // Her token is refused here too (the revoked sessions travel by the other feed).
    let refused = tasks
        .client
        .get(tasks.url("/api/v1/tasks"))
        .bearer_auth(&alice.access)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // The rows are gone once the purge's statement commits; its count follows when it returns.
    assert_eq!(purged_total(&client, &tasks).await, 3.0);
    // Once settled, the cursor moves past the deletion, durably.
    let started = Instant::now();
    loop {
        let cursor: i64 = sqlx::query_scalar("SELECT last_seq FROM tasks.deleted_users_cursor")
            .fetch_one(&db)
            .await
            .unwrap();
        if cursor > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the cursor never moved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_deletion_while_every_replica_is_down_is_purged_when_they_return() {
    let database = fresh_database().await;
    let (auth_api, auth_admin) = spawn_auth(&database, &[]).await;
    let client = reqwest::Client::new();
    let alice = account(&client, &auth_api).await;
    let bob = account(&client, &auth_api).await;
    let before = task_service(&database, &auth_admin).await;
    create_tasks(&before, &alice, 5).await;
    create_tasks(&before, &bob, 2).await;
    let db = before.db().await;
    before.shut_down().await;

    delete_me(&client, &auth_api, &alice).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        tasks_of(&db, &alice).await,
        5,
        "no replica is running to purge"
    );

    // Two replicas come back together and both purge: idempotent, and nobody else's rows.
    let (one, two) = tokio::join!(
        task_service(&database, &auth_admin),
        task_service(&database, &auth_admin)
    );
    wait_until_purged(&db, &alice).await;
    assert_eq!(tasks_of(&db, &bob).await, 2);
    // The counts follow the commits; wait until they add up to the rows (or the hang guard).
    let started = Instant::now();
    let mut purged;
    loop {
        purged = 0.0;
        for replica in [&one, &two] {
            let metrics = common::test_metrics::scrape(&client, &replica.admin).await;
            purged += common::test_metrics::sample(&metrics, "tasks_purged_total");
            assert_eq!(
                common::test_metrics::sample(&metrics, "deleted_users_feed_missed"),
                0.0
            );
        }
        if purged >= 5.0 || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        purged, 5.0,
        "each row is purged once, by one replica or the other"
    );
}

/// The cursor's one row, gone (an operator's DELETE, a restore without it), is made again: the
/// purge goes on instead of failing every poll for good.
#[tokio::test]
async fn the_purge_goes_on_when_its_cursor_row_is_gone() {
    let database = fresh_database().await;
    let (auth_api, auth_admin) = spawn_auth(&database, &["--revocation-poll-seconds", "1"]).await;
    let admin = common::postgres::pool(&database.direct_url())
        .await
        .unwrap();
    sqlx::query("DELETE FROM tasks.deleted_users_cursor")
        .execute(&admin)
        .await
        .unwrap();
    let tasks = task_service(&database, &auth_admin).await;
    let client = reqwest::Client::new();
    let frank = account(&client, &auth_api).await;
    create_tasks(&tasks, &frank, 2).await;
    delete_me(&client, &auth_api, &frank).await;
    wait_until_purged(&tasks.db().await, &frank).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks.deleted_users_cursor")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn an_operators_delete_and_disable_reach_task_service_too() {
    let database = fresh_database().await;
    let (auth_api, auth_admin) = spawn_auth(&database, &["--revocation-poll-seconds", "1"]).await;
    let tasks = task_service(&database, &auth_admin).await;
    let client = reqwest::Client::new();
    let (carol, dave) = (
        account(&client, &auth_api).await,
        account(&client, &auth_api).await,
    );
    create_tasks(&tasks, &carol, 2).await;
    create_tasks(&tasks, &dave, 1).await;
    let db = tasks.db().await;
    let args = common::db::DatabaseArgs {
        database_url: secrecy::SecretString::from(database.url().to_owned()),
        database_max_connections: 2,
        database_acquire_timeout_ms: 3000,
    };

    use auth_service::config::UserAction;
    auth_service::operator::run(
        &args,
        &UserAction::Delete {
            email: carol.email.clone(),
        },
    )
    .await
    .expect("users delete");
    wait_until_purged(&db, &carol).await;

    auth_service::operator::run(
        &args,
        &UserAction::Disable {
            email: dave.email.clone(),
        },
    )
    .await
    .expect("users disable");
    wait_until_refused(&tasks, &dave.access).await;
    assert_eq!(tasks_of(&db, &dave).await, 1, "disabled is not deleted");
}

#[tokio::test]
async fn sessions_a_user_ends_are_refused_here_within_the_poll() {
    let database = fresh_database().await;
    let (auth_api, auth_admin) = spawn_auth(&database, &[]).await;
    let tasks = task_service(&database, &auth_admin).await;
    let client = reqwest::Client::new();
    let erin = account(&client, &auth_api).await;
    // A second session of hers, ended from the first with DELETE /sessions/{id}.
    let second = log_in_again(&client, &auth_api, &erin.email, PASSWORD).await;
    let second_access = second["access_token"].as_str().unwrap();
    let sessions: Vec<Value> = client
        .get(format!("{auth_api}/api/v1/auth/sessions"))
        .bearer_auth(&erin.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    let ended = client
        .delete(format!(
            "{auth_api}/api/v1/auth/sessions/{}",
            other["id"].as_str().unwrap()
        ))
        .bearer_auth(&erin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204);
    wait_until_refused(&tasks, second_access).await;

    // A new password ends the caller's own session too; the new pair works here.
    let changed: Value = client
        .post(format!("{auth_api}/api/v1/auth/password"))
        .bearer_auth(&erin.access)
        .json(&json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    wait_until_refused(&tasks, &erin.access).await;
    let fresh = changed["access_token"].as_str().unwrap();
    let listed = tasks
        .client
        .get(tasks.url("/api/v1/tasks"))
        .bearer_auth(fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    // Logout with scope=others ends a third session here, not the caller's; scope=global ends
    // the caller's too.
    let third = log_in_again(&client, &auth_api, &erin.email, "a brand new passphrase").await;
    let logout = |scope: &'static str| {
        client
            .post(format!("{auth_api}/api/v1/auth/logout?scope={scope}"))
            .bearer_auth(fresh)
            .send()
    };
    assert_eq!(logout("others").await.unwrap().status(), 204);
    wait_until_refused(&tasks, third["access_token"].as_str().unwrap()).await;
    let still = tasks
        .client
        .get(tasks.url("/api/v1/tasks"))
        .bearer_auth(fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(
        still.status(),
        200,
        "scope=others keeps the caller's session"
    );
    assert_eq!(logout("global").await.unwrap().status(), 204);
    wait_until_refused(&tasks, fresh).await;
}

/// The feed's readers never look behind their cursor, so deletions must commit in `seq` order.
/// Alice's deletion waits for a row lock after her user row goes (its `ON DELETE SET NULL`
/// reaches a session of hers that someone else holds), while Bob's is made, purged and
/// settled, and the cursor moves past it. Once hers commits, her tasks are purged all the same:
/// she had taken no `seq` while she waited, so hers comes after Bob's.
#[tokio::test]
async fn a_deletion_that_commits_after_a_later_one_settled_is_purged() {
    let database = fresh_database().await;
    let (auth_api, auth_admin) = spawn_auth(&database, &["--request-timeout-ms", "60000"]).await;
    let tasks = task_service(&database, &auth_admin).await;
    let client = reqwest::Client::new();
    let admin = common::postgres::pool(&database.direct_url())
        .await
        .unwrap();
    let alice = account(&client, &auth_api).await;
    create_tasks(&tasks, &alice, 2).await;
    // Her first session, ended from a second one: revoked, so only her user row's deletion
    // reaches it.
    let second = log_in_again(&client, &auth_api, &alice.email, PASSWORD).await;
    let second_access = second["access_token"].as_str().unwrap().to_owned();
    let logout = client
        .post(format!("{auth_api}/api/v1/auth/logout?scope=others"))
        .bearer_auth(&second_access)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let mut holder = admin.begin().await.unwrap();
    let held: i64 = sqlx::query_scalar(
        "WITH held AS (SELECT id FROM auth.sessions
                       WHERE user_id = $1::uuid AND revoked_at IS NOT NULL FOR UPDATE)
         SELECT count(*) FROM held",
    )
    .bind(&alice.id)
    .fetch_one(&mut *holder)
    .await
    .unwrap();
    assert_eq!(held, 1);
    let alice_leaves = {
        let alice = Account {
            access: second_access,
            ..alice
        };
        let (client, auth_api) = (client.clone(), auth_api.clone());
        tokio::spawn(async move {
            delete_me(&client, &auth_api, &alice).await;
            alice
        })
    };
    wait_for_lock_waits(&admin, 1).await;

    let bob = account(&client, &auth_api).await;
    create_tasks(&tasks, &bob, 1).await;
    delete_me(&client, &auth_api, &bob).await;
    let db = tasks.db().await;
    wait_until_purged(&db, &bob).await;
    let bobs_seq: i64 =
        sqlx::query_scalar("SELECT seq FROM auth.deleted_users WHERE user_id = $1::uuid")
            .bind(&bob.id)
            .fetch_one(&admin)
            .await
            .unwrap();
    let settled = common::test_wait::eventually(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("SELECT last_seq FROM tasks.deleted_users_cursor")
            .fetch_one(&db)
            .await
            .unwrap()
            >= bobs_seq
    })
    .await;
    assert!(settled, "the cursor never moved past Bob's deletion");

    holder.commit().await.unwrap();
    let alice = alice_leaves.await.unwrap();
    wait_until_purged(&db, &alice).await;
}
