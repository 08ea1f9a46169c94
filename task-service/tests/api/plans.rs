//! The plans PostgreSQL picks for the service's hot statements (the exact text, from
//! `src/tasks/sql/`) stay on the caller's own index entries whatever the statistics say: none
//! yet, stale, or skewed so that another user holds most of the newest rows. A plan that walked
//! an index on `id` alone and filtered by user would read every newer row of everyone else
//! (before migration 0004 the generic plan of the list did: 38 000 rows filtered per page).
//! Checked with `EXPLAIN (ANALYZE, FORMAT JSON)`, with custom and generic plans (prepared
//! statements switch to the generic one after five runs).

use serde_json::Value;
use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;

use crate::helpers::fresh_database;

const LIST: &str = include_str!("../../src/tasks/sql/list.sql");
const LIST_COMPLETED: &str = include_str!("../../src/tasks/sql/list_completed.sql");
const LIST_VERSIONS: &str = include_str!("../../src/tasks/sql/list_versions.sql");
const LIST_COMPLETED_VERSIONS: &str =
    include_str!("../../src/tasks/sql/list_completed_versions.sql");
const GET: &str = include_str!("../../src/tasks/sql/get.sql");
const GET_MANY: &str = include_str!("../../src/tasks/sql/get_many.sql");
const VERSION: &str = include_str!("../../src/tasks/sql/version.sql");
const UPDATE: &str = include_str!("../../src/tasks/sql/update.sql");
const DELETE: &str = include_str!("../../src/tasks/sql/delete.sql");

/// The measured user's tasks (every other one completed), and the other user's, all newer.
const OWN_TASKS: i64 = 17_000;
const OTHER_TASKS: i64 = 38_000;

/// How a statement's scan of `tasks.tasks` may look.
enum Expect {
    /// With statistics: on the primary key (user_id, id), in its order, reading no entry it
    /// then throws away.
    OwnKeyOnly,
    /// On an index that starts with `user_id` (the key, or the completed index); it may skip
    /// the user's own rows of the other state, never another user's.
    OwnEntries,
}

struct Statement {
    name: &'static str,
    sql: &'static str,
    args: String,
    expect: Expect,
    rows: u64,
}

fn statements(own: Uuid, own_task: i64, other_task: i64) -> Vec<Statement> {
    let max = i64::MAX;
    let middle = own_task - OWN_TASKS / 2;
    let statement = |name, sql, args: String, expect, rows| Statement {
        name,
        sql,
        args,
        expect,
        rows,
    };
    use Expect::*;
    vec![
        statement(
            "list",
            LIST,
            format!("'{own}', {max}, 100"),
            OwnKeyOnly,
            100,
        ),
        statement(
            "list after",
            LIST,
            format!("'{own}', {middle}, 100"),
            OwnKeyOnly,
            100,
        ),
        statement(
            "list completed",
            LIST_COMPLETED,
            format!("'{own}', true, {max}, 100"),
            OwnEntries,
            100,
        ),
        statement(
            "list open",
            LIST_COMPLETED,
            format!("'{own}', false, {max}, 100"),
            OwnEntries,
            100,
        ),
        statement(
            "list open after",
            LIST_COMPLETED,
            format!("'{own}', false, {middle}, 100"),
            OwnEntries,
            100,
        ),
        statement(
            "list's versions",
            LIST_VERSIONS,
            format!("'{own}', {max}, 100"),
            OwnKeyOnly,
            100,
        ),
        statement(
            "list's versions after",
            LIST_VERSIONS,
            format!("'{own}', {middle}, 100"),
            OwnKeyOnly,
            100,
        ),
        statement(
            "list open's versions",
            LIST_COMPLETED_VERSIONS,
            format!("'{own}', false, {max}, 100"),
            OwnEntries,
            100,
        ),
        statement(
            "list completed's versions after",
            LIST_COMPLETED_VERSIONS,
            format!("'{own}', true, {middle}, 100"),
            OwnEntries,
            100,
        ),
        statement("get", GET, format!("{own_task}, '{own}'"), OwnKeyOnly, 1),
        statement(
            "get another user's",
            GET,
            format!("{other_task}, '{own}'"),
            OwnKeyOnly,
            0,
        ),
        statement(
            "version",
            VERSION,
            format!("{own_task}, '{own}'"),
            OwnKeyOnly,
            1,
        ),
        statement(
            "get many",
            GET_MANY,
            format!(
                "ARRAY[{own_task}, {middle}, {other_task}]::int8[], ARRAY['{own}', '{own}', '{own}']::uuid[]"
            ),
            OwnKeyOnly,
            2,
        ),
        statement(
            "update",
            UPDATE,
            format!("{own_task}, '{own}', 'renamed', false, NULL, NULL, NULL"),
            OwnKeyOnly,
            1,
        ),
        statement(
            "complete if match",
            UPDATE,
            format!("{own_task}, '{own}', NULL, false, NULL, true, ARRAY[1]::int8[]"),
            OwnKeyOnly,
            1,
        ),
        statement(
            "delete",
            DELETE,
            format!("{own_task}, '{own}', NULL"),
            OwnKeyOnly,
            1,
        ),
        statement(
            "delete if match",
            DELETE,
            format!("{own_task}, '{own}', ARRAY[1]::int8[]"),
            OwnKeyOnly,
            1,
        ),
    ]
}

/// Every scan node of `tasks.tasks` in `plan`.
fn task_scans<'a>(plan: &'a Value, found: &mut Vec<&'a Value>) {
    if plan["Relation Name"] == "tasks" && plan["Node Type"] != "ModifyTable" {
        found.push(plan);
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        task_scans(child, found);
    }
}

/// EXPLAINs every statement with `plan_cache_mode` custom and generic, in a transaction that
/// is rolled back (the writes change nothing), and checks each scan of the tasks table: always
/// bounded to the user's own entries; with statistics (`strict`), on the primary key in its
/// order for the statements that can use it, reading no more entries than it answers.
/// Returns one line per statement and mode, with the execution time, for the test's output.
async fn check_plans(conn: &mut PgConnection, shape: &str, own: Uuid, strict: bool) -> Vec<String> {
    let own_task: i64 = sqlx::query_scalar("SELECT max(id) FROM tasks.tasks WHERE user_id = $1")
        .bind(own)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let other_task: i64 = sqlx::query_scalar("SELECT max(id) FROM tasks.tasks WHERE user_id <> $1")
        .bind(own)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let mut report = Vec::new();
    for mode in ["force_custom_plan", "force_generic_plan"] {
        for statement in statements(own, own_task, other_task) {
            let mut tx = conn.begin().await.unwrap();
            sqlx::raw_sql(&format!(
                "SET LOCAL plan_cache_mode = {mode}; PREPARE checked AS {}",
                statement.sql
            ))
            .execute(&mut *tx)
            .await
            .unwrap();
            let explained = sqlx::raw_sql(&format!(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE checked({})",
                statement.args
            ))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            // A prepared statement outlives a rolled-back transaction.
            sqlx::raw_sql("DEALLOCATE checked")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            let explained: Value = explained.get(0);
            let root = &explained[0];
            let what = format!("{shape}, {mode}, {}", statement.name);

            let mut scans = Vec::new();
            task_scans(&root["Plan"], &mut scans);
            assert!(
                !scans.is_empty(),
                "{what}: no scan of tasks.tasks: {root:#}"
            );
            for scan in scans {
                let node = scan["Node Type"].as_str().unwrap_or_default();
                // A bitmap scan's condition is its recheck; an index scan's, its index condition.
                let condition = match node {
                    "Index Scan" | "Index Only Scan" => scan["Index Cond"].as_str(),
                    "Bitmap Heap Scan" if !strict => scan["Recheck Cond"].as_str(),
                    _ => panic!("{what}: the tasks table is read by a {node}: {root:#}"),
                }
                .unwrap_or_default();
                assert!(
                    condition.trim_start_matches('(').starts_with("user_id = "),
                    "{what}: the scan is not bounded to the user's entries ({condition}): {root:#}"
                );
                if strict && matches!(statement.expect, Expect::OwnKeyOnly) {
                    assert_eq!(scan["Index Name"], "tasks_pkey", "{what}: {root:#}");
                    assert_eq!(
                        scan["Rows Removed by Filter"].as_u64().unwrap_or(0),
                        0,
                        "{what}: rows read and thrown away: {root:#}"
                    );
                    assert!(
                        scan["Actual Rows"].as_u64().unwrap() <= statement.rows,
                        "{what}: more entries read than answered: {root:#}"
                    );
                }
            }
            // A write's rows are those its scan hands to the ModifyTable node; an aggregated
            // page's (`list_versions.sql`), those the scan hands to the aggregate.
            let answering = match root["Plan"]["Node Type"].as_str() {
                Some("ModifyTable" | "Aggregate") => &root["Plan"]["Plans"][0],
                _ => &root["Plan"],
            };
            let rows = answering["Actual Rows"].as_u64().unwrap();
            assert_eq!(rows, statement.rows, "{what}: rows returned: {root:#}");
            report.push(format!(
                "{what}: {} ms",
                root["Execution Time"].as_f64().unwrap()
            ));
        }
    }
    report
}

async fn insert_tasks(
    conn: &mut PgConnection,
    user: Uuid,
    count: i64,
    every_other_completed: bool,
) {
    sqlx::query(
        "INSERT INTO tasks.tasks (user_id, title, completed)
         SELECT $1, 'task ' || i, $3 AND i % 2 = 0 FROM generate_series(1, $2) AS i",
    )
    .bind(user)
    .bind(count)
    .bind(every_other_completed)
    .execute(conn)
    .await
    .unwrap();
}

async fn connect_without_autovacuum() -> (common::postgres::TestDatabase, PgConnection) {
    let database = fresh_database().await;
    // Connect options the pooler suite's PgBouncer accepts (no `extra_float_digits`).
    let options = common::db::pooler_safe(database.url().parse().unwrap());
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    // The shapes below must stay as built: no autovacuum ANALYZE in between.
    sqlx::raw_sql("ALTER TABLE tasks.tasks SET (autovacuum_enabled = false)")
        .execute(&mut conn)
        .await
        .unwrap();
    (database, conn)
}

#[tokio::test]
async fn plans_read_only_the_users_own_entries_before_any_statistics() {
    let (_database, mut conn) = connect_without_autovacuum().await;
    let (own, other) = (Uuid::new_v4(), Uuid::new_v4());
    insert_tasks(&mut conn, own, OWN_TASKS, true).await;
    insert_tasks(&mut conn, other, OTHER_TASKS, false).await;
    let report = check_plans(&mut conn, "never analyzed", own, false).await;
    println!("{}", report.join("\n"));
}

#[tokio::test]
async fn plans_read_only_the_users_own_entries_when_another_user_owns_the_newest_rows() {
    let (_database, mut conn) = connect_without_autovacuum().await;
    let (own, other) = (Uuid::new_v4(), Uuid::new_v4());
    insert_tasks(&mut conn, own, OWN_TASKS, true).await;
    sqlx::raw_sql("ANALYZE tasks.tasks")
        .execute(&mut conn)
        .await
        .unwrap();
    insert_tasks(&mut conn, other, OTHER_TASKS, false).await;
    let mut report = check_plans(&mut conn, "stale statistics", own, true).await;

    sqlx::raw_sql("ANALYZE tasks.tasks")
        .execute(&mut conn)
        .await
        .unwrap();
    report.extend(check_plans(&mut conn, "skewed, analyzed", own, true).await);
    println!("{}", report.join("\n"));
}
