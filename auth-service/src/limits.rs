//! Abuse limits, counted in PostgreSQL so they hold across replicas, answered with 429 and
//! `Retry-After`:
//! - attempts per client (login, registration, refresh/logout), where a client is its IPv4
//!   address or its IPv6 network (`/64` by default: one subscriber owns a whole /64 and can
//!   rotate addresses inside it at will);
//! - failed logins per (account, client), so an attacker on one address locks out only itself;
//! - failed logins per account from all clients together, a higher ceiling that bounds
//!   distributed guessing.
//!
//! Failed logins are counted *before* the password is checked, and given back when it turns out
//! right. Counting after the check would let a burst as large as the hashing pool pass one
//! check together; this way the counter's row lock admits exactly the limit, however many
//! attempts arrive at once.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use common::db::Db;
use ipnet::IpNet;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::config::LimitArgs;
use crate::error::{Error, Result};
use crate::metrics::AuthMetrics;

/// At most `max` hits per `window_seconds` in one bucket.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The metric label and bucket prefix.
    pub name: &'static str,
    pub max: i32,
    pub window_seconds: i64,
}

/// Whom a failed-login budget belongs to: the account once the email is known to have one
/// (so every spelling that reaches it shares one budget), else the normalised email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    User(Uuid),
    UnknownEmail(String),
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(id) => write!(f, "user:{id}"),
            Self::UnknownEmail(email) => write!(f, "email:{email}"),
        }
    }
}

/// A client's share of the per-client limits: its IPv4 address, or its IPv6 network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey(String);

impl ClientKey {
    /// IPv4 addresses count alone (IPv4-mapped IPv6 included), IPv6 addresses by their network
    /// of `ipv6_prefix` bits.
    pub fn of(ip: IpAddr, ipv6_prefix: u8) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self(v4.to_string()),
            IpAddr::V6(v6) => {
                let net = IpNet::new(IpAddr::V6(v6), ipv6_prefix.min(128))
                    .expect("a prefix of at most 128 bits is valid");
                Self(net.trunc().to_string())
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone)]
pub struct Limits {
    enabled: bool,
    ipv6_prefix: u8,
    pub login_per_ip: Rule,
    pub register_per_ip: Rule,
    pub refresh_per_ip: Rule,
    pub failed_logins_per_account_and_ip: Rule,
    pub failed_logins_per_account: Rule,
    metrics: AuthMetrics,
}

impl Limits {
    pub fn new(args: &LimitArgs, metrics: AuthMetrics) -> anyhow::Result<Self> {
        check_account_ceiling(args)?;
        let limits = Self {
            enabled: args.rate_limit_enabled,
            ipv6_prefix: args.ipv6_client_prefix,
            login_per_ip: Rule {
                name: "login_ip",
                max: args.login_limit_per_ip,
                window_seconds: args.ip_limit_window_seconds,
            },
            register_per_ip: Rule {
                name: "register_ip",
                max: args.register_limit_per_ip,
                window_seconds: args.ip_limit_window_seconds,
            },
            refresh_per_ip: Rule {
                name: "refresh_ip",
                max: args.refresh_limit_per_ip,
                window_seconds: args.ip_limit_window_seconds,
            },
            failed_logins_per_account_and_ip: Rule {
                name: "login_account_ip",
                max: args.failed_login_limit,
                window_seconds: args.failed_login_window_seconds,
            },
            failed_logins_per_account: Rule {
                name: "login_account",
                max: args.account_failed_login_limit,
                window_seconds: args.account_failed_login_window_seconds,
            },
            metrics,
        };
        // Every limit's series exists from the start, at 0: a series born at 1 hides its first
        // refusal from rate() and increase(), so the first lockout would raise no alert.
        for rule in limits.rules() {
            limits.metrics.rate_limited.with_label_values(&[rule.name]);
        }
        Ok(limits)
    }

    fn rules(&self) -> [Rule; 5] {
        [
            self.login_per_ip,
            self.register_per_ip,
            self.refresh_per_ip,
            self.failed_logins_per_account_and_ip,
            self.failed_logins_per_account,
        ]
    }

    /// The bucket `ip` counts in.
    pub fn client_key(&self, ip: IpAddr) -> ClientKey {
        ClientKey::of(ip, self.ipv6_prefix)
    }

    /// Counts one attempt in `rule`'s bucket for `client`; refuses it when over the limit.
    pub async fn hit(&self, db: &Db, rule: Rule, client: &ClientKey) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let mut conn = db.acquire().await?;
        let window = count(&mut conn, rule, client.as_str(), 1).await?;
        match window.wait_until_allowed(rule) {
            None => Ok(()),
            Some(wait) => Err(self.refuse(rule, wait)),
        }
    }

    /// Counts a login attempt against `account` as failed before its password is checked, in
    /// the (account, client) bucket and then the account's ceiling. Refused, it counts nowhere.
    /// The caller gives the count back with [`FailedLogin::forgive`] when the password was
    /// right (or was never checked).
    pub async fn count_failed_login(
        &self,
        db: &Db,
        account: &Account,
        client: &ClientKey,
        client_ip: IpAddr,
    ) -> Result<FailedLogin> {
        if !self.enabled {
            return Ok(FailedLogin::default());
        }
        let mut conn = db.acquire().await?;
        let mut counted = FailedLogin::default();
        let buckets = [
            (
                self.failed_logins_per_account_and_ip,
                format!("{account}|{}", client.as_str()),
            ),
            (self.failed_logins_per_account, account.to_string()),
        ];
        for (rule, key) in buckets {
            let window = count(&mut conn, rule, &key, 1).await?;
            counted
                .buckets
                .push((format!("{}:{key}", rule.name), window.start));
            if let Some(wait) = window.wait_until_allowed(rule) {
                counted.forgive_on(&mut conn).await?;
                tracing::warn!(
                    limit = rule.name,
                    %account,
                    %client_ip,
                    retry_after_seconds = wait,
                    "login refused: too many failed logins"
                );
                return Err(self.refuse(rule, wait));
            }
        }
        Ok(counted)
    }

    fn refuse(&self, rule: Rule, wait: u64) -> Error {
        self.metrics
            .rate_limited
            .with_label_values(&[rule.name])
            .inc();
        Error::RateLimited {
            retry_after_seconds: wait,
        }
    }
}

/// The account-wide ceiling is for guessing spread over many addresses: one address, stopped
/// by its own budget first, must not be able to lock the owner out everywhere. Refused when
/// one window of a single client reaches it; a warning when its windows over the account's
/// window can.
fn check_account_ceiling(args: &LimitArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.account_failed_login_limit > args.failed_login_limit,
        "ACCOUNT_FAILED_LOGIN_LIMIT ({}) must be above FAILED_LOGIN_LIMIT ({}): otherwise one client can lock an account out for everyone",
        args.account_failed_login_limit,
        args.failed_login_limit,
    );
    let windows =
        (args.account_failed_login_window_seconds / args.failed_login_window_seconds).max(1);
    let one_address = i64::from(args.failed_login_limit) * windows;
    if one_address >= i64::from(args.account_failed_login_limit) {
        tracing::warn!(
            one_address,
            account_limit = args.account_failed_login_limit,
            "one client's failed logins over ACCOUNT_FAILED_LOGIN_WINDOW_SECONDS can reach ACCOUNT_FAILED_LOGIN_LIMIT: a single address could lock an account out for everyone"
        );
    }
    Ok(())
}

/// A login attempt counted as failed in advance: the windows it was counted in.
#[derive(Debug, Default)]
#[must_use = "a login that did not fail must be forgiven"]
pub struct FailedLogin {
    buckets: Vec<(String, DateTime<Utc>)>,
}

impl FailedLogin {
    /// Takes the attempt back out of every bucket it was counted in: the password was right.
    pub async fn forgive(self, db: &Db) -> Result<()> {
        if self.buckets.is_empty() {
            return Ok(());
        }
        let mut conn = db.acquire().await?;
        self.forgive_on(&mut conn).await
    }

    async fn forgive_on(&self, conn: &mut PgConnection) -> Result<()> {
        let (buckets, windows): (Vec<String>, Vec<DateTime<Utc>>) =
            self.buckets.iter().cloned().unzip();
        sqlx::query!(
            "UPDATE auth.rate_limits SET hits = hits - 1
             WHERE (bucket, window_start) IN (SELECT * FROM unnest($1::text[], $2::timestamptz[]))
               AND hits > 0",
            &buckets,
            &windows
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// A bucket's counts: this window's hits (the attempt in question included), the previous
/// window's, and how far into this window we are.
#[derive(Debug, Clone, Copy)]
struct Window {
    hits: i32,
    previous: i32,
    elapsed_seconds: f64,
    /// Which window the hits were counted in (to take one back out of the same row).
    start: DateTime<Utc>,
}

impl Window {
    /// Sliding-window estimate: the previous window's hits weighted by how much of it still
    /// lies within one window of now, plus this window's. Unlike plain fixed windows it allows
    /// no double burst across a boundary.
    fn estimate(&self, window_seconds: f64) -> f64 {
        let remaining = (1.0 - self.elapsed_seconds / window_seconds).clamp(0.0, 1.0);
        f64::from(self.previous) * remaining + f64::from(self.hits)
    }

    /// `None` when allowed; else whole seconds until the estimate is back within the limit,
    /// assuming no further attempts.
    fn wait_until_allowed(&self, rule: Rule) -> Option<u64> {
        let w = rule.window_seconds as f64;
        let max = f64::from(rule.max);
        if self.estimate(w) <= max {
            return None;
        }
        let wait = if self.hits <= rule.max {
            // The previous window's weight must fall to what is left of the budget.
            let allowed_previous = max - f64::from(self.hits);
            w * (1.0 - allowed_previous / f64::from(self.previous)) - self.elapsed_seconds
        } else {
            // Past this window's end, this window's hits become the weighted previous ones.
            (w - self.elapsed_seconds) + w * (1.0 - max / f64::from(self.hits))
        };
        Some(wait.ceil().max(1.0) as u64)
    }
}

/// Adds `add` to the bucket's current window and returns it with the previous window's hits.
/// One statement: concurrent attempts on any replica serialise on the row.
async fn count(conn: &mut PgConnection, rule: Rule, key: &str, add: i32) -> sqlx::Result<Window> {
    let bucket = format!("{}:{key}", rule.name);
    let row = sqlx::query!(
        r#"WITH current AS (
               INSERT INTO auth.rate_limits AS r (bucket, window_start, hits)
               VALUES ($1, to_timestamp(floor(extract(epoch FROM now()) / $2) * $2), $3)
               ON CONFLICT (bucket, window_start) DO UPDATE SET hits = r.hits + excluded.hits
               RETURNING hits, window_start
           )
           SELECT current.hits AS "hits!",
                  coalesce((SELECT p.hits FROM auth.rate_limits p
                            WHERE p.bucket = $1
                              AND p.window_start = current.window_start - make_interval(secs => $2)), 0) AS "previous!",
                  extract(epoch FROM now() - current.window_start)::float8 AS "elapsed!",
                  current.window_start AS "window_start!"
           FROM current"#,
        bucket,
        rule.window_seconds as f64,
        add
    )
    .fetch_one(conn)
    .await?;
    Ok(Window {
        hits: row.hits,
        previous: row.previous,
        elapsed_seconds: row.elapsed,
        start: row.window_start,
    })
}

/// Deletes windows that started more than two days ago. A window is read until the end of the
/// one after it (as `previous`, by the sliding estimate), so a rule's rows are needed for two of
/// its windows, and no rule's window is longer than a day (`…_WINDOW_SECONDS` ≤ 86 400).
pub async fn delete_expired(conn: &mut PgConnection) -> sqlx::Result<u64> {
    Ok(
        sqlx::query!("DELETE FROM auth.rate_limits WHERE window_start < now() - interval '2 days'")
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit_args(extra: &[&str]) -> LimitArgs {
        let mut args = vec!["--database-url", "postgres://localhost/unused"];
        args.extend(extra);
        crate::Config::from_serve_args(args)
            .expect("valid arguments")
            .limits
    }

    #[test]
    fn an_account_ceiling_one_client_can_reach_is_refused() {
        let same = limit_args(&[
            "--failed-login-limit",
            "10",
            "--account-failed-login-limit",
            "10",
        ]);
        let error = check_account_ceiling(&same).unwrap_err().to_string();
        assert!(
            error.contains("ACCOUNT_FAILED_LOGIN_LIMIT (10) must be above FAILED_LOGIN_LIMIT (10)"),
            "{error}"
        );
        assert!(
            check_account_ceiling(&limit_args(&[])).is_ok(),
            "the defaults"
        );
    }

    const RULE: Rule = Rule {
        name: "test",
        max: 10,
        window_seconds: 60,
    };

    fn window(hits: i32, previous: i32, elapsed_seconds: f64) -> Window {
        Window {
            hits,
            previous,
            elapsed_seconds,
            start: Utc::now(),
        }
    }

    fn key(ip: &str, prefix: u8) -> String {
        ClientKey::of(ip.parse().unwrap(), prefix)
            .as_str()
            .to_owned()
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_network() {
        assert_eq!(key("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2:ffff:1:2:3", 64),
            key("2001:db8:1:2::9", 64)
        );
        assert_ne!(key("2001:db8:1:2::1", 64), key("2001:db8:1:3::1", 64));
        assert_eq!(key("2001:db8:1:2::1", 48), key("2001:db8:1:3::1", 48));
        assert_eq!(key("2001:db8::1", 128), "2001:db8::1/128");
    }

    #[test]
    fn ipv4_clients_count_alone_mapped_or_not() {
        assert_eq!(key("203.0.113.7", 64), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7", 64), "203.0.113.7");
        assert_ne!(key("203.0.113.7", 64), key("203.0.113.8", 64));
    }

    #[test]
    fn within_the_limit_is_allowed() {
        assert_eq!(window(10, 0, 30.0).wait_until_allowed(RULE), None);
        // Half of the previous window's 10 still counts: 5 + 5.
        assert_eq!(window(5, 10, 30.0).wait_until_allowed(RULE), None);
    }

    #[test]
    fn the_previous_window_still_counts_just_after_a_boundary() {
        // A plain fixed window would allow these: 10 hits a second ago, one now.
        let wait = window(1, 10, 1.0).wait_until_allowed(RULE).unwrap();
        // The previous window's weight must drop to 9/10: 6 s into the window, 5 s from now.
        assert_eq!(wait, 5);
    }

    #[test]
    fn over_the_limit_in_this_window_waits_into_the_next() {
        // 20 hits, 30 s in: 30 s to the boundary, then 20 × (1 − t/60) ≤ 10 needs t = 30 s.
        assert_eq!(window(20, 0, 30.0).wait_until_allowed(RULE), Some(60));
        // Just over: at least one second.
        assert_eq!(window(11, 0, 59.9).wait_until_allowed(RULE), Some(6));
    }
}
