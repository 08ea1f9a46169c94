//! auth-service's configuration: every setting from the environment (or a flag), with defaults.

use clap::{ArgAction, Parser, Subcommand};
use common::db::{DatabaseArgs, MigrateArgs};
use common::http::HttpArgs;
use common::jwt::JwtArgs;
use common::revocation::RevocationArgs;
use common::runtime::RuntimeArgs;

use crate::hashing::HashingPriority;
use common::telemetry::TelemetryArgs;

#[derive(Parser, Debug)]
#[command(
    name = "auth-service",
    version,
    about = "Users, logins and sessions for the todo API"
)]
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
    /// Apply the `auth` schema's migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        migrate: MigrateArgs,
    },
    /// Operator controls for one account (DATABASE_URL): exit 0 on success, 1 with a one-line
    /// reason on stderr otherwise; each writes an audit log line.
    Users {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum UserAction {
    /// No login or refresh; every session ends (on task-service within its poll).
    Disable { email: String },
    /// Allow logins again (ended sessions stay ended).
    Enable { email: String },
    /// End every session of the account; the password still works.
    RevokeSessions { email: String },
    /// Delete the account as `DELETE /me` does: sessions end, task-service purges its tasks,
    /// the email is free again.
    Delete { email: String },
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
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub hashing: HashingArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Apply migrations when `serve` starts (the chart sets false and runs `migrate` Jobs).
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = true, action = ArgAction::Set)]
    pub migrate_on_start: bool,
    // This replica's refresh of its revoked-sessions cache from the sessions table.
    #[command(flatten)]
    pub revocation: RevocationArgs,
    /// How often expired sessions, refresh tokens and limit counters are deleted.
    #[arg(long, env = "CLEANUP_INTERVAL_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub cleanup_interval_seconds: u64,
    /// How long the deleted-users feed keeps an entry: a task-service down longer than this
    /// misses deletions (it says so in its log and metrics; the README has the procedure).
    #[arg(long, env = "DELETED_USERS_RETENTION_SECONDS", default_value_t = 2_592_000, value_parser = clap::value_parser!(u64).range(60..))]
    pub deleted_users_retention_seconds: u64,
}

impl Config {
    /// The `serve` configuration from arguments as they would follow `auth-service serve`; the
    /// environment fills in what they leave out. Tests and the local runner start it this way.
    pub fn from_serve_args<'a>(
        args: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, clap::Error> {
        let argv = ["auth-service", "serve"].into_iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(config) => Ok(*config),
            Command::Migrate { .. } | Command::Users { .. } => {
                unreachable!("the arguments start with `serve`")
            }
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// Lifetime of an access token.
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub access_token_ttl_seconds: u64,
    /// Lifetime of a refresh token, from its issue.
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECONDS", default_value_t = 2_592_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub refresh_token_ttl_seconds: u64,
    /// A session's absolute lifetime from its login, however often it is refreshed (OWASP
    /// ASVS 3.3): then the user logs in again.
    #[arg(long, env = "SESSION_MAX_LIFETIME_SECONDS", default_value_t = 7_776_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_max_lifetime_seconds: u64,
    /// A second use of a refresh token within this many seconds of its first use (two tabs
    /// racing) gets a working pair of the same session instead of revoking it. 0: any reuse
    /// revokes the session (strict).
    #[arg(long, env = "REFRESH_TOKEN_REUSE_GRACE_SECONDS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub refresh_token_reuse_grace_seconds: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct HashingArgs {
    /// bcrypt work factor (10..=31); each step doubles the time of a hash.
    #[arg(long, env = "BCRYPT_COST", default_value_t = 12, value_parser = clap::value_parser!(u32).range(10..=31))]
    pub bcrypt_cost: u32,
    /// Hashes run at once; default: the CPU count.
    #[arg(long, env = "BCRYPT_MAX_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..))]
    pub bcrypt_max_concurrency: Option<u32>,
    /// Hashes allowed to wait for a slot; default: 4 × concurrency. Beyond it: 503.
    #[arg(long, env = "BCRYPT_MAX_QUEUE")]
    pub bcrypt_max_queue: Option<u32>,
    /// Longest wait for a hashing slot before a 503.
    #[arg(long, env = "BCRYPT_QUEUE_TIMEOUT_MS", default_value_t = 2000)]
    pub bcrypt_queue_timeout_ms: u64,
    /// How long a login that finds the queue full is held before its 503 (the `Retry-After` it
    /// carries). A client that retries at once then cannot spin refusals into a busy loop that
    /// takes the CPU from the hashes; 0 answers at once.
    #[arg(long, env = "BCRYPT_REFUSAL_DELAY_MS", default_value_t = 1000)]
    pub bcrypt_refusal_delay_ms: u64,
    /// Scheduling of the hashing threads: a nice value 0..=19 under SCHED_BATCH, or `idle`
    /// (SCHED_IDLE: only CPU this process's request handling leaves unused).
    #[arg(long, env = "BCRYPT_PRIORITY", default_value = "19")]
    pub bcrypt_priority: HashingPriority,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Enforce the login/register limits (kept in PostgreSQL, shared by all replicas).
    #[arg(long, env = "RATE_LIMIT_ENABLED", default_value_t = true, action = ArgAction::Set)]
    pub rate_limit_enabled: bool,
    /// Login attempts allowed per client IP per IP window.
    #[arg(long, env = "LOGIN_LIMIT_PER_IP", default_value_t = 60, value_parser = clap::value_parser!(i32).range(1..))]
    pub login_limit_per_ip: i32,
    /// Registrations allowed per client IP per IP window.
    #[arg(long, env = "REGISTER_LIMIT_PER_IP", default_value_t = 60, value_parser = clap::value_parser!(i32).range(1..))]
    pub register_limit_per_ip: i32,
    /// The per-IP window.
    #[arg(long, env = "IP_LIMIT_WINDOW_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..=86_400))]
    pub ip_limit_window_seconds: i64,
    /// Refresh and logout requests allowed per client per IP window. A client refreshes once
    /// per access-token lifetime, so this only stops a flood of database writes.
    #[arg(long, env = "REFRESH_LIMIT_PER_IP", default_value_t = 600, value_parser = clap::value_parser!(i32).range(1..))]
    pub refresh_limit_per_ip: i32,
    /// Failed logins allowed per (account, client) per failed-login window; then that client
    /// gets 429 for that account. The owner on another client is not affected.
    #[arg(long, env = "FAILED_LOGIN_LIMIT", default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..))]
    pub failed_login_limit: i32,
    /// The per-(account, client) failed-login window.
    #[arg(long, env = "FAILED_LOGIN_WINDOW_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(i64).range(1..=86_400))]
    pub failed_login_window_seconds: i64,
    /// Failed logins allowed per account from all clients together per account window: the
    /// ceiling on distributed guessing. When it trips, every client gets 429 for that account.
    #[arg(long, env = "ACCOUNT_FAILED_LOGIN_LIMIT", default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..))]
    pub account_failed_login_limit: i32,
    /// The account-wide failed-login window.
    #[arg(long, env = "ACCOUNT_FAILED_LOGIN_WINDOW_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=86_400))]
    pub account_failed_login_window_seconds: i64,
    /// IPv6 clients are counted by their network of this prefix length: a subscriber is
    /// usually given a whole /64 and can pick any address in it.
    #[arg(long, env = "IPV6_CLIENT_PREFIX", default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..=128))]
    pub ipv6_client_prefix: u8,
    /// Comma-separated CIDRs of proxies whose X-Forwarded-For is believed (e.g. the ingress
    /// controller's pods). Empty: the TCP peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "", value_parser = parse_cidrs)]
    pub trusted_proxies: Cidrs,
}

/// A comma-separated list of CIDRs; blank entries are ignored, so an empty value is no list.
#[derive(Debug, Clone, Default)]
pub struct Cidrs(pub Vec<ipnet::IpNet>);

fn parse_cidrs(value: &str) -> Result<Cidrs, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("`{entry}` is not a CIDR such as 10.0.0.0/8 or an IP address"))
        })
        .collect::<Result<_, _>>()
        .map(Cidrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_accept_cidrs_addresses_and_an_empty_value() {
        assert!(parse_cidrs("").unwrap().0.is_empty());
        assert!(parse_cidrs(" , ").unwrap().0.is_empty());
        let parsed = parse_cidrs("10.0.0.0/8, 192.168.1.1,fd00::/8").unwrap().0;
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[1].to_string(), "192.168.1.1/32");
        assert!(
            parse_cidrs("10.0.0.0/8,nonsense")
                .unwrap_err()
                .contains("nonsense")
        );
    }
}
