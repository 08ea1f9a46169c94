//! Connections the database dropped — Neon suspending an idle compute, a failover, an operator's
//! `pg_terminate_backend` — told apart from other errors, and the pooled connections that may be
//! dead since, found without a ping on every acquire.
//!
//! A connection goes back to the pool when its last statement has been answered (our sqlx
//! patch, `vendor/README.md`, drops upstream's ping on release), so one that went idle well
//! *after* a loss was seen has proven itself alive since. Only the ones that went idle before
//! the latest loss or within [`LOSS_SETTLE`] after it (the connection that failed is released
//! just after its error is seen), or sat idle long enough for a suspend to have happened unseen,
//! are worth a ping when they are taken: [`LossFence::suspects`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Idle this long, a connection may have been dropped without anyone noticing (Neon suspends a
/// compute after 5 idle minutes by default; NATs and load balancers drop idle flows too): it is
/// pinged before use. One round trip after a quiet spell, never on a busy pool.
pub const STALE_AFTER_IDLE: Duration = Duration::from_secs(30);

/// How long after a loss a connection that went idle is still suspect: the connection whose
/// statement failed goes back to the pool just after the failure is recorded (its release runs
/// as a task of its own, or when the caller's scope ends), and nothing pinged it on the way.
pub const LOSS_SETTLE: Duration = Duration::from_secs(1);

/// True when `error` says the connection itself is gone: the socket failed or closed (an I/O
/// error, EOF included), or the server said it is ending the session (SQLSTATE class 08, or
/// 57P01 `admin_shutdown` — what `pg_terminate_backend` and a fast shutdown send —, 57P02
/// `crash_shutdown`). Not a pool timeout, nor an error a statement earned on a live connection.
pub fn is_connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code == "57P01" || code == "57P02"),
        _ => false,
    }
}

/// When a lost connection was last seen, so that the pool can check the connections that may
/// have died with it.
#[derive(Debug)]
pub struct LossFence {
    epoch: Instant,
    /// Nanoseconds from `epoch` to the latest loss, plus one; 0 while none was seen.
    last_loss: AtomicU64,
}

impl Default for LossFence {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_loss: AtomicU64::new(0),
        }
    }
}

impl LossFence {
    /// A connection was found dead just now: the others may have died with it.
    pub fn record_loss(&self) {
        let since = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.last_loss.fetch_max(since + 1, Ordering::Relaxed);
    }

    /// Whether a pooled connection idle for `idle_for` should be pinged before use: it went
    /// idle before the latest loss or within [`LOSS_SETTLE`] after it, or it sat idle past
    /// [`STALE_AFTER_IDLE`].
    pub fn suspects(&self, idle_for: Duration) -> bool {
        self.suspects_at(Instant::now(), idle_for)
    }

    fn suspects_at(&self, now: Instant, idle_for: Duration) -> bool {
        if idle_for >= STALE_AFTER_IDLE {
            return true;
        }
        let last = self.last_loss.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let settled_at = self.epoch + Duration::from_nanos(last - 1) + LOSS_SETTLE;
        now.checked_sub(idle_for)
            .is_none_or(|idle_since| idle_since <= settled_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connections_idle_since_before_the_latest_loss_or_for_long_are_suspect() {
        let fence = LossFence::default();
        let ms = Duration::from_millis;
        assert!(!fence.suspects(ms(10)), "no loss seen: trusted");
        assert!(fence.suspects(STALE_AFTER_IDLE), "idle for long: checked");
        std::thread::sleep(ms(20));
        fence.record_loss();
        let now = Instant::now();
        assert!(fence.suspects_at(now, ms(30)), "idle since before the loss");
        assert!(
            fence.suspects_at(now + ms(500), ms(10)),
            "went idle just after the loss: may be the connection that failed"
        );
        assert!(
            !fence.suspects_at(now + LOSS_SETTLE + ms(50), ms(10)),
            "went idle well after the loss, after its last statement was answered"
        );
    }

    #[test]
    fn lost_means_the_connection_not_the_statement() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert!(is_connection_lost(&io));
        assert!(!is_connection_lost(&sqlx::Error::PoolTimedOut));
        assert!(!is_connection_lost(&sqlx::Error::RowNotFound));
    }
}
