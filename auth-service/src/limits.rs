//! Abuse limits: attempts per client IP and failed logins per account, counted in PostgreSQL
//! so they hold across replicas. Answered with 429 and `Retry-After`.

use chrono::{DateTime, Utc};
use common::db::Db;
use sqlx::PgConnection;

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

#[derive(Clone)]
pub struct Limits {
    enabled: bool,
    pub login_per_ip: Rule,
    pub register_per_ip: Rule,
    pub failed_logins_per_account: Rule,
    metrics: AuthMetrics,
}

impl Limits {
    pub fn new(args: &LimitArgs, metrics: AuthMetrics) -> Self {
        Self {
            enabled: args.rate_limit_enabled,
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
            failed_logins_per_account: Rule {
                name: "login_account",
                max: args.failed_login_limit,
                window_seconds: args.failed_login_window_seconds,
            },
            metrics,
        }
    }

    /// Counts one attempt in `rule`'s bucket for `key`; refuses it when over the limit.
    pub async fn hit(&self, db: &Db, rule: Rule, key: &str) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let mut conn = db.acquire().await?;
        let (hits, window_start) = count(&mut conn, rule, key, 1).await?;
        self.verdict(rule, key, hits, window_start)
    }

    /// Refuses when the bucket is already full, without counting (failed logins are counted
    /// only once they have failed).
    pub async fn check(&self, db: &Db, rule: Rule, key: &str) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let mut conn = db.acquire().await?;
        let (hits, window_start) = count(&mut conn, rule, key, 0).await?;
        // Full means the next attempt would be one too many.
        self.verdict(rule, key, hits + 1, window_start)
    }

    fn verdict(&self, rule: Rule, key: &str, hits: i32, window_start: DateTime<Utc>) -> Result<()> {
        if hits <= rule.max {
            return Ok(());
        }
        self.metrics
            .rate_limited
            .with_label_values(&[rule.name])
            .inc();
        if rule.name == self.failed_logins_per_account.name && hits == rule.max + 1 {
            tracing::warn!(
                limit = rule.name,
                "account locked out after repeated failed logins"
            );
        }
        let _ = key; // the bucket key holds an email or IP: never logged at this level
        let window_end = window_start + chrono::Duration::seconds(rule.window_seconds);
        let retry_after = (window_end - Utc::now()).num_seconds().max(1);
        Err(Error::RateLimited {
            retry_after_seconds: u64::try_from(retry_after).unwrap_or(1),
        })
    }
}

/// Adds `add` to the bucket's current window and returns its hits and the window's start.
/// One upsert: concurrent attempts on any replica serialise on the row.
async fn count(
    conn: &mut PgConnection,
    rule: Rule,
    key: &str,
    add: i32,
) -> sqlx::Result<(i32, DateTime<Utc>)> {
    let bucket = format!("{}:{key}", rule.name);
    let row = sqlx::query!(
        r#"INSERT INTO auth.rate_limits AS r (bucket, window_start, hits)
           VALUES ($1, to_timestamp(floor(extract(epoch FROM now()) / $2) * $2), $3)
           ON CONFLICT (bucket, window_start) DO UPDATE SET hits = r.hits + excluded.hits
           RETURNING hits, window_start"#,
        bucket,
        rule.window_seconds as f64,
        add
    )
    .fetch_one(conn)
    .await?;
    Ok((row.hits, row.window_start))
}

/// Deletes windows that ended more than a day ago (longer than any rule's window).
pub async fn delete_expired(conn: &mut PgConnection) -> sqlx::Result<u64> {
    Ok(
        sqlx::query!("DELETE FROM auth.rate_limits WHERE window_start < now() - interval '1 day'")
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
