//! task-service's configuration: every setting from the environment (or a flag), with defaults.

use clap::{ArgAction, Parser, Subcommand};
use common::db::{DatabaseArgs, MigrateArgs};
use common::http::HttpArgs;
use common::jwt::JwtArgs;
use common::revocation::RevocationArgs;
use common::runtime::RuntimeArgs;
use common::telemetry::TelemetryArgs;

#[derive(Parser, Debug)]
#[command(name = "task-service", version, about = "Each user's todo tasks")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API (HTTP_ADDR) and the admin endpoints (ADMIN_ADDR).
    Serve(Box<Config>),
    /// Apply the `tasks` schema's migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        migrate: MigrateArgs,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub migrate: MigrateArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Apply migrations when `serve` starts (the chart sets false and runs `migrate` Jobs).
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = true, action = ArgAction::Set)]
    pub migrate_on_start: bool,
    /// auth-service's admin address, e.g. `http://auth-service:9000`, for the revocation feed.
    /// Unset: ended sessions keep working here until their tokens expire (a warning at start),
    /// and readiness does not wait for a feed. Set: not ready until the first successful poll.
    #[arg(long, env = "AUTH_ADMIN_URL")]
    pub auth_admin_url: Option<String>,
    // Polling the revocation feed: how often, and how stale it may get before `/readyz` fails.
    #[command(flatten)]
    pub revocation: RevocationArgs,
    /// Single-task reads running at once before the next ones are coalesced into one
    /// statement (`tasks::reader`); 0 = one statement per read.
    #[arg(long, env = "READ_COALESCING_IN_FLIGHT", default_value_t = 2)]
    pub read_coalescing_in_flight: u32,
    /// Creates (without an `Idempotency-Key`) running at once before the next ones are
    /// coalesced into one statement and one commit (`tasks::creator`); 0 = one statement per
    /// create. 2, as for reads: side by side it did more creates than 4 in six rounds of seven,
    /// and as many as 8 within the rounds' noise (runs 35 and 36 in `deploy/bench/RESULTS.md`).
    #[arg(long, env = "CREATE_COALESCING_IN_FLIGHT", default_value_t = 2)]
    pub create_coalescing_in_flight: u32,
    /// Memory for the list's pages kept to answer an unchanged page again (`tasks::page_cache`):
    /// about 50 KB per page of 100 tasks (its body and each task's JSON), up to 4 pages per
    /// user. 0 keeps none.
    #[arg(long, env = "LIST_CACHE_MAX_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub list_cache_max_bytes: u64,
    /// The most tasks one user holds; one more create is a 409 until they delete some.
    #[arg(long, env = "TASKS_MAX_PER_USER", default_value_t = 10_000, value_parser = clap::value_parser!(i32).range(1..))]
    pub tasks_max_per_user: i32,
    /// How long an `Idempotency-Key` of a create is remembered (a retry after that creates a
    /// new task).
    #[arg(long, env = "IDEMPOTENCY_KEY_TTL_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub idempotency_key_ttl_seconds: u64,
}

impl Config {
    /// The `serve` configuration from arguments as they would follow `task-service serve`; the
    /// environment fills in what they leave out. Tests and the local runner start it this way.
    pub fn from_serve_args<'a>(
        args: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, clap::Error> {
        let argv = ["task-service", "serve"].into_iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(config) => Ok(*config),
            Command::Migrate { .. } => unreachable!("the arguments start with `serve`"),
        }
    }
}
