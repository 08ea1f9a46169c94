//! A real PostgreSQL for tests and the local runner, found in this order: `DATABASE_URL`, the
//! machine's server on 127.0.0.1:5432, else a throwaway cluster started from the PostgreSQL
//! binaries (`initdb`/`pg_ctl` on PATH or under /usr/lib/postgresql/*/bin) in a temp dir.
//!
//! The throwaway cluster is owned by a small shell supervisor whose stdin is a pipe held by
//! this process: when the process exits, however it exits, the pipe closes and the supervisor
//! stops the cluster and deletes its directory.
//!
//! Each test gets its own database, copied from a migrated template, and dropped when the test
//! ends (its [`TestDatabase`] is dropped); `KEEP_TEST_DATABASES=1` keeps them for a look
//! afterwards. Databases of runs that were killed are dropped by a later run once over an hour
//! old. Templates are named after their migrations and reused by later runs, so a run leaves
//! none behind and does not migrate again.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use secrecy::SecretString;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

/// Test databases older than this are left-overs of killed runs and are dropped.
const STALE_AFTER: Duration = Duration::from_secs(3600);
const PREFIX: &str = "todo_test_";
/// Migrated templates: `todo_template_<hash of the schemas and their migrations>`.
const TEMPLATE_PREFIX: &str = "todo_template_";
/// Set (to anything but `0` or empty) to keep each test's database after the test.
const KEEP_ENV: &str = "KEEP_TEST_DATABASES";
/// A pooler's URL (any database part): test databases are then used through it.
const POOLER_ENV: &str = "TEST_POOLER_URL";

pub struct PostgresServer {
    /// URL of the server's `postgres` database, for CREATE/DROP DATABASE.
    admin_url: String,
    /// Templates this process has made sure exist.
    templates: tokio::sync::Mutex<HashSet<String>>,
    _cluster: Option<Mutex<Child>>,
}

static SERVER: OnceCell<PostgresServer> = OnceCell::const_new();

/// The server every test in this process uses.
pub async fn server() -> anyhow::Result<&'static PostgresServer> {
    SERVER.get_or_try_init(PostgresServer::find_or_start).await
}

impl PostgresServer {
    async fn find_or_start() -> anyhow::Result<Self> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let admin_url = with_database(&url, "postgres")?;
            return Self::ready(admin_url, None).await;
        }
        let local = "postgres://postgres@127.0.0.1:5432/postgres".to_owned();
        if PgConnection::connect(&local).await.is_ok() {
            return Self::ready(local, None).await;
        }
        let (admin_url, child) = start_throwaway_cluster()?;
        Self::ready(admin_url, Some(Mutex::new(child))).await
    }

    async fn ready(admin_url: String, cluster: Option<Mutex<Child>>) -> anyhow::Result<Self> {
        let server = Self {
            admin_url,
            templates: tokio::sync::Mutex::default(),
            _cluster: cluster,
        };
        server.drop_stale_databases().await?;
        Ok(server)
    }

    /// The URL of the server's `postgres` database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// A new database holding `schemas`, migrated; dropped again when the returned value is.
    pub async fn fresh_database(
        &self,
        schemas: &[(&'static str, &'static Migrator)],
    ) -> anyhow::Result<TestDatabase> {
        let template = self.template(schemas).await?;
        let name = unique_name();
        let mut conn = PgConnection::connect(&self.admin_url).await?;
        conn.execute(format!(r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#).as_str())
            .await
            .with_context(|| format!("creating test database {name}"))?;
        conn.close().await?;
        // Through a pooler when the run asks for one (deploy/pooler/run.sh): the services and
        // the tests' own pools connect there, while templates, migrations and the drop go to
        // the server directly, as the chart's migrate Jobs do.
        let served_from = std::env::var(POOLER_ENV).unwrap_or_else(|_| self.admin_url.clone());
        Ok(TestDatabase {
            url: with_database(&served_from, &name)?,
            name,
            admin_url: self.admin_url.clone(),
        })
    }

    /// The migrated template for `schemas`: copying it is faster than migrating each time. Its
    /// name says which migrations it holds, so later runs (and other test binaries running at
    /// the same time) reuse it, and a changed migration gets a new one.
    async fn template(
        &self,
        schemas: &[(&'static str, &'static Migrator)],
    ) -> anyhow::Result<String> {
        let name = template_name(schemas);
        let mut templates = self.templates.lock().await;
        if templates.contains(&name) {
            return Ok(name);
        }
        let mut conn = PgConnection::connect(&self.admin_url).await?;
        // Test binaries run side by side: one builds, the others wait and then find it. The
        // lock is the session's, so it ends with the connection however this process ends.
        sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
            .bind(&name)
            .execute(&mut conn)
            .await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            // Built under a test database's name and renamed when complete: a build that is
            // killed half way leaves no template, only a database the stale sweep drops.
            let building = unique_name();
            conn.execute(format!(r#"CREATE DATABASE "{building}""#).as_str())
                .await?;
            let url = SecretString::from(with_database(&self.admin_url, &building)?);
            for (schema, migrator) in schemas {
                crate::db::migrate(&url, schema, migrator, crate::db::MIGRATION_LOCK_TIMEOUT)
                    .await?;
            }
            conn.execute(format!(r#"ALTER DATABASE "{building}" RENAME TO "{name}""#).as_str())
                .await?;
        }
        conn.close().await?;
        templates.insert(name.clone());
        Ok(name)
    }

    async fn drop_stale_databases(&self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.admin_url).await?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'todo\\_test\\_%'",
        )
        .fetch_all(&mut conn)
        .await?;
        let now = now_seconds();
        for name in names {
            let created = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split('_').next())
                .and_then(|ts| ts.parse::<u64>().ok());
            if created.is_some_and(|ts| now.saturating_sub(ts) > STALE_AFTER.as_secs()) {
                let _ = conn
                    .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                    .await;
            }
        }
        conn.close().await?;
        Ok(())
    }
}

/// A test's own database. Dropping it drops the database (`DROP DATABASE … WITH (FORCE)`, which
/// also ends the sessions of services still running on it), unless `KEEP_TEST_DATABASES` is set.
/// It reads as its URL: `&database` is a `&str`.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database on the server itself, never through a pooler: where migrations run, as the
    /// chart's migrate Jobs do.
    pub fn direct_url(&self) -> String {
        with_database(&self.admin_url, &self.name).expect("the server's URL was valid before")
    }
}

impl std::ops::Deref for TestDatabase {
    type Target = str;

    fn deref(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Display for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if keep_test_databases() {
            eprintln!("{KEEP_ENV} is set: keeping test database {}", self.name);
            return;
        }
        // Drop cannot await, and it usually runs inside the test's own runtime (often a
        // current-thread one, busy running this very drop). So a new thread with a runtime of
        // its own drops the database on a new connection, and the test waits for it.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                // A hang guard only: the statement takes milliseconds.
                tokio::time::timeout(Duration::from_secs(30), drop_database(&admin_url, &name))
                    .await
                    .map_err(|_| anyhow::anyhow!("timed out"))?
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            // A later run drops it once it is stale.
            Ok(Err(error)) => eprintln!("could not drop test database {}: {error:#}", self.name),
            Err(_) => eprintln!("could not drop test database {}", self.name),
        }
    }
}

fn keep_test_databases() -> bool {
    std::env::var(KEEP_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(admin_url).await?;
    conn.execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
        .await?;
    conn.close().await?;
    Ok(())
}

/// `todo_template_<16 hex digits>`: a hash of the schema names and of every migration's
/// version and checksum (FNV-1a: stable across Rust releases, unlike `DefaultHasher`).
fn template_name(schemas: &[(&'static str, &'static Migrator)]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes.iter().chain(b"\0") {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (schema, migrator) in schemas {
        feed(schema.as_bytes());
        for migration in migrator.iter() {
            feed(&migration.version.to_le_bytes());
            feed(&migration.checksum);
        }
    }
    format!("{TEMPLATE_PREFIX}{hash:016x}")
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A pool on a test database that connects as the services do, so it works through a pooler
/// too (`db::pooler_safe`).
pub async fn pool(url: &str) -> anyhow::Result<sqlx::PgPool> {
    let options = crate::db::pooler_safe(PgConnectOptions::from_str(url)?);
    Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .connect_with(options)
        .await?)
}

/// `todo_test_<unix seconds>_<random>`: the timestamp lets a later run drop left-overs.
fn unique_name() -> String {
    format!(
        "{PREFIX}{}_{}",
        now_seconds(),
        uuid::Uuid::new_v4().simple()
    )
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let options = PgConnectOptions::from_str(url)?.database(database);
    Ok(options.to_url_lossy().to_string())
}

/// The directory holding `initdb` and `pg_ctl`: PATH first, else the newest Debian install.
fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    installed.sort();
    installed
        .pop()
        .map(|(_, bin)| bin)
        .context("no PostgreSQL found: set DATABASE_URL, run a server on 127.0.0.1:5432, or install the PostgreSQL server binaries (initdb, pg_ctl)")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a cluster under a supervisor shell; returns the admin URL and the supervisor.
pub fn start_throwaway_cluster() -> anyhow::Result<(String, Child)> {
    let cluster = launch(FAST_BUT_UNSAFE)?;
    Ok((admin_url_for(cluster.port), cluster.supervisor))
}

/// Settings for a throwaway cluster nobody needs to survive a crash: fastest.
const FAST_BUT_UNSAFE: &str = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off";
/// Settings for a cluster a test stops and starts: a commit acknowledged to a client survives
/// an immediate (crash-like) stop; `fsync=off` only risks data on an OS crash.
const SURVIVES_PROCESS_CRASH: &str = "-c fsync=off -c synchronous_commit=on";

fn admin_url_for(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// A started cluster: where it lives, and its supervisor.
struct Launched {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    options: String,
    supervisor: Child,
}

/// `pg_ctl`'s `-o` value for a cluster in `dir` on `port`.
fn server_options(dir: &Path, port: u16, settings: &str) -> String {
    format!(
        "-p {port} -k {dir} -c listen_addresses=127.0.0.1 {settings} -c max_connections=300",
        dir = shell_quote(dir)
    )
}

/// The command prefix that runs PostgreSQL's tools as a non-root user.
fn as_user() -> &'static str {
    // initdb refuses to run as root: run the cluster as the `postgres` user then.
    if is_root() {
        "runuser -u postgres --"
    } else {
        ""
    }
}

fn launch(settings: &str) -> anyhow::Result<Launched> {
    let bin = postgres_bin_dir()?;
    let dir = tempfile::Builder::new()
        .prefix("todo-pg-")
        .tempdir()?
        .keep();
    let port = free_port()?;
    let as_user = as_user();
    let options = server_options(&dir, port, settings);
    let script = format!(
        r#"set -e
# Ctrl-C or a SIGTERM to the whole process group must not kill the supervisor before it cleans
# up: it stops the cluster when this process's end closes its stdin.
trap '' INT TERM HUP
dir={dir}
{chown}
{as_user} {bin}/initdb -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1
{as_user} {bin}/pg_ctl -D "$dir/data" -l "$dir/server.log" -w -o {options} start >/dev/null
echo ready
cat >/dev/null || true
{as_user} {bin}/pg_ctl -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
rm -rf "$dir"
"#,
        dir = shell_quote(&dir),
        chown = if is_root() {
            format!("chown postgres {}", shell_quote(&dir))
        } else {
            String::new()
        },
        bin = shell_quote(&bin),
        options = shell_quote(Path::new(&options)),
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the throwaway PostgreSQL supervisor")?;
    let stdout = child.stdout.take().context("supervisor stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        anyhow::bail!(
            "the throwaway PostgreSQL cluster did not start; see {}/server.log",
            dir.display()
        );
    }
    Ok(Launched {
        bin,
        dir,
        port,
        options,
        supervisor: child,
    })
}

/// A PostgreSQL cluster a test owns and may stop and start again (same data directory, same
/// port), to show what the services do while their database is gone. Dropping it stops the
/// cluster and deletes its directory.
pub struct ThrowawayCluster(Launched);

impl ThrowawayCluster {
    /// Creates and starts a new cluster on a free port (blocking: takes a second or two).
    pub fn create() -> anyhow::Result<Self> {
        launch(SURVIVES_PROCESS_CRASH).map(Self)
    }

    /// The URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        admin_url_for(self.0.port)
    }

    /// The URL of `database` on this cluster.
    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.0.port)
    }

    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Creates database `name` and applies `schemas`' migrations to it; returns its URL.
    pub async fn create_database(
        &self,
        name: &str,
        schemas: &[(&'static str, &'static Migrator)],
    ) -> anyhow::Result<String> {
        let mut conn = PgConnection::connect(&self.url()).await?;
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await?;
        conn.close().await?;
        let url = self.database_url(name);
        let secret = SecretString::from(url.clone());
        for (schema, migrator) in schemas {
            crate::db::migrate(&secret, schema, migrator, crate::db::MIGRATION_LOCK_TIMEOUT)
                .await?;
        }
        Ok(url)
    }

    /// Stops the server the way a clean shutdown or failover does (`pg_ctl -m fast`): sessions
    /// are terminated, the port closes. Blocks until it has stopped.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["-m", "fast", "-w", "stop"])
    }

    /// Stops the server the way a crash does (`pg_ctl -m immediate`): no checkpoint, sessions
    /// cut; the next start runs crash recovery.
    pub fn crash(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"])
    }

    /// Starts the stopped server again on the same data directory and port; blocks until it
    /// accepts connections.
    pub fn start(&self) -> anyhow::Result<()> {
        let log = self.0.dir.join("server.log");
        let log = log.to_str().context("temp dir path is UTF-8")?;
        self.pg_ctl(&["-l", log, "-w", "-o", &self.0.options, "start"])
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let data = self.0.dir.join("data");
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.0.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.0.bin.join("pg_ctl"))
        };
        let output = command
            .arg("-D")
            .arg(&data)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl")?;
        if !output.status.success() {
            anyhow::bail!(
                "pg_ctl {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        // Closing the supervisor's stdin makes it stop the cluster and delete the directory.
        drop(self.0.supervisor.stdin.take());
        let _ = self.0.supervisor.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
