//! Abuse limits: attempts per client IP and failed logins per account, counted in PostgreSQL
//! so they hold across replicas. Answered with 429 and `Retry-After`.

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
        let window = count(&mut conn, rule, key, 1).await?;
        self.verdict(rule, window)
    }

    /// Refuses when the bucket is already full, without counting (failed logins are counted
    /// only once they have failed).
    pub async fn check(&self, db: &Db, rule: Rule, key: &str) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let mut conn = db.acquire().await?;
        let window = count(&mut conn, rule, key, 0).await?;
        // Full means the next attempt would be one too many.
        self.verdict(
            rule,
            Window {
                hits: window.hits + 1,
                ..window
            },
        )
    }

    fn verdict(&self, rule: Rule, window: Window) -> Result<()> {
        let Some(wait) = window.wait_until_allowed(rule) else {
            return Ok(());
        };
        self.metrics
            .rate_limited
            .with_label_values(&[rule.name])
            .inc();
        if rule.name == self.failed_logins_per_account.name {
            tracing::warn!(
                limit = rule.name,
                "account locked out after repeated failed logins"
            );
        }
        Err(Error::RateLimited {
            retry_after_seconds: wait,
        })
    }
}

/// A bucket's counts: this window's hits (the attempt in question included), the previous
/// window's, and how far into this window we are.
#[derive(Debug, Clone, Copy)]
struct Window {
    hits: i32,
    previous: i32,
    elapsed_seconds: f64,
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
                  extract(epoch FROM now() - current.window_start)::float8 AS "elapsed!"
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
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
        }
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
