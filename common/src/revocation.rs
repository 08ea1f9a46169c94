//! The revoked-sessions cache: which session ids must no longer be accepted, until their tokens
//! would have expired anyway. Filled by a poller (task-service polls auth-service's feed;
//! auth-service polls its own table), read on every authenticated request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One entry of the feed: a session whose tokens are dead until `expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RevokedSession {
    pub sid: Uuid,
    pub revoked_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Revocations commit out of order, so each poll re-reads a window before the newest one seen.
pub const FEED_OVERLAP: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
pub struct RevokedSessions {
    inner: Arc<RwLock<State>>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<Uuid, DateTime<Utc>>,
    newest_revoked_at: Option<DateTime<Utc>>,
    last_sync: Option<Instant>,
}

impl RevokedSessions {
    pub fn is_revoked(&self, sid: Uuid) -> bool {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        state.sessions.contains_key(&sid)
    }

    /// Adds entries and forgets the ones whose tokens have all expired.
    pub fn apply(&self, entries: impl IntoIterator<Item = RevokedSession>) {
        let now = Utc::now();
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for entry in entries {
            state.newest_revoked_at = state.newest_revoked_at.max(Some(entry.revoked_at));
            if entry.expires_at > now {
                state.sessions.insert(entry.sid, entry.expires_at);
            }
        }
        state.sessions.retain(|_, expires_at| *expires_at > now);
        state.last_sync = Some(Instant::now());
    }

    /// The `since` to ask the feed for next: `None` on the first poll (everything still live).
    pub fn next_since(&self) -> Option<DateTime<Utc>> {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let overlap = chrono::Duration::from_std(FEED_OVERLAP).unwrap_or_default();
        state.newest_revoked_at.map(|newest| newest - overlap)
    }

    /// Seconds since the last successful poll; `None` before the first one.
    pub fn age(&self) -> Option<Duration> {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        state.last_sync.map(|at| at.elapsed())
    }

    pub fn len(&self) -> usize {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        state.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Registers `revocation_feed_age_seconds`, which the poller keeps current.
pub fn register_feed_age(registry: &prometheus::Registry) -> prometheus::Result<prometheus::Gauge> {
    let gauge = prometheus::Gauge::new(
        "revocation_feed_age_seconds",
        "Seconds since the revoked-sessions list was last refreshed.",
    )?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

/// Polls `fetch(since)` every `interval` until `stop`, applying what it returns. A failed poll
/// keeps the last list (the feed's age grows, and `age_gauge` shows it) and is retried.
pub fn spawn_poller<F, Fut, E>(
    cache: RevokedSessions,
    interval: Duration,
    stop: CancellationToken,
    age_gauge: prometheus::Gauge,
    fetch: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Option<DateTime<Utc>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<RevokedSession>, E>> + Send,
    E: std::fmt::Display,
{
    let started = Instant::now();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match fetch(cache.next_since()).await {
                Ok(entries) => cache.apply(entries),
                Err(error) => {
                    tracing::warn!(%error, "revoked-sessions poll failed; keeping the last list")
                }
            }
            let age = cache.age().unwrap_or_else(|| started.elapsed());
            age_gauge.set(age.as_secs_f64());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revoked_ago_s: i64, expires_in_s: i64) -> RevokedSession {
        let now = Utc::now();
        RevokedSession {
            sid: Uuid::new_v4(),
            revoked_at: now - chrono::Duration::seconds(revoked_ago_s),
            expires_at: now + chrono::Duration::seconds(expires_in_s),
        }
    }

    #[test]
    fn revoked_until_expiry_then_forgotten() {
        let cache = RevokedSessions::default();
        let live = entry(5, 3600);
        let dead = entry(5, -1);
        cache.apply([live.clone(), dead.clone()]);
        assert!(cache.is_revoked(live.sid));
        assert!(!cache.is_revoked(dead.sid));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn next_poll_overlaps_the_newest_entry() {
        let cache = RevokedSessions::default();
        assert_eq!(cache.next_since(), None);
        let newest = entry(1, 60);
        cache.apply([entry(100, 60), newest.clone()]);
        let since = cache.next_since().unwrap();
        assert_eq!(newest.revoked_at - since, chrono::Duration::seconds(30));
        assert!(cache.age().unwrap() < Duration::from_secs(1));
    }
}
