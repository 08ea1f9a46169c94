//! The revoked-sessions cache: which session ids must no longer be accepted, until their tokens
//! would have expired anyway. Filled by a poller (task-service polls auth-service's feed;
//! auth-service polls its own table), read on every authenticated request. It also says whether
//! it can be trusted: a replica is not ready, and refuses bearer tokens, until the first load,
//! and turns unready when the last load is older than the maximum staleness.

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

/// The feed's answer header naming when the oldest transaction open on the database as it was
/// read began (`FeedPage::oldest_open`), in RFC 3339.
pub const OLDEST_OPEN_HEADER: &str = "x-oldest-open-transaction";

/// One read of the feed: the revoked sessions, and when the oldest transaction still open on the
/// database at that moment began. A revocation is stamped with its transaction's start
/// (`now()`) but seen only once it commits; one still open may commit any time later with that
/// stamp, however long it waits (for a lock, say), so the next poll must reach back to it, not
/// only `FEED_OVERLAP` behind the newest revocation seen.
#[derive(Debug, Clone, Default)]
pub struct FeedPage {
    pub sessions: Vec<RevokedSession>,
    /// `None`: no other transaction was open, or the feed did not say (an older auth-service).
    pub oldest_open: Option<DateTime<Utc>>,
}

/// The revocation settings both services share.
#[derive(clap::Args, Debug, Clone)]
pub struct RevocationArgs {
    /// How often the revoked-sessions cache is refreshed: the bound on how long an ended
    /// session's access token still works on a replica that did not end it.
    #[arg(long, env = "REVOCATION_POLL_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub revocation_poll_seconds: u64,
    /// Past this long without a successful refresh, `/readyz` fails: the last list is kept, but
    /// a replica that cannot see new revocations for this long stops taking traffic.
    #[arg(long, env = "REVOCATION_MAX_STALENESS_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub revocation_max_staleness_seconds: u64,
}

impl RevocationArgs {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.revocation_poll_seconds)
    }

    pub fn max_staleness(&self) -> Duration {
        Duration::from_secs(self.revocation_max_staleness_seconds)
    }

    /// An empty cache for a poller with these settings, with `revocation_feed_age_seconds`
    /// registered on `registry`.
    pub fn polled_cache(&self, registry: &prometheus::Registry) -> anyhow::Result<RevokedSessions> {
        // One slow or failed poll must not flap readiness: allow at least two intervals.
        anyhow::ensure!(
            self.revocation_max_staleness_seconds >= 2 * self.revocation_poll_seconds,
            "REVOCATION_MAX_STALENESS_SECONDS ({}) must be at least twice REVOCATION_POLL_SECONDS ({})",
            self.revocation_max_staleness_seconds,
            self.revocation_poll_seconds,
        );
        let cache =
            RevokedSessions::polled(Duration::from_secs(self.revocation_max_staleness_seconds));
        register_feed_age(registry, cache.clone())?;
        Ok(cache)
    }
}

/// What the cache knows about one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Live,
    Revoked,
    /// The list has not been loaded yet: every session is in doubt.
    NotLoaded,
}

#[derive(Clone)]
pub struct RevokedSessions {
    inner: Arc<RwLock<State>>,
    /// `None`: revocation is off (no feed configured), so the cache is never waited for.
    max_staleness: Option<Duration>,
    created: Instant,
}

#[derive(Default)]
struct State {
    sessions: HashMap<Uuid, DateTime<Utc>>,
    newest_revoked_at: Option<DateTime<Utc>>,
    /// The last poll's `FeedPage::oldest_open`.
    oldest_open: Option<DateTime<Utc>>,
    last_sync: Option<Instant>,
}

impl RevokedSessions {
    fn new(max_staleness: Option<Duration>) -> Self {
        Self {
            inner: Arc::default(),
            max_staleness,
            created: Instant::now(),
        }
    }

    /// A cache no poller fills (no feed configured): nothing is revoked and it is always ready.
    pub fn off() -> Self {
        Self::new(None)
    }

    /// A cache a poller fills, unready past `max_staleness`; `RevocationArgs::polled_cache`
    /// builds it from the settings.
    pub fn polled(max_staleness: Duration) -> Self {
        Self::new(Some(max_staleness))
    }

    pub fn lookup(&self, sid: Uuid) -> Lookup {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if state.sessions.contains_key(&sid) {
            Lookup::Revoked
        } else if state.last_sync.is_none() && self.max_staleness.is_some() {
            Lookup::NotLoaded
        } else {
            Lookup::Live
        }
    }

    pub fn is_revoked(&self, sid: Uuid) -> bool {
        self.lookup(sid) == Lookup::Revoked
    }

    /// A successful poll of a feed that names no open transaction (`apply_page`).
    pub fn apply(&self, entries: impl IntoIterator<Item = RevokedSession>) {
        self.apply_page(FeedPage {
            sessions: entries.into_iter().collect(),
            oldest_open: None,
        });
    }

    /// A successful poll: adds its entries, forgets the ones whose tokens have all expired, and
    /// moves the feed cursor and the age.
    pub fn apply_page(&self, page: FeedPage) {
        let now = Utc::now();
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        state.oldest_open = page.oldest_open;
        for entry in page.sessions {
            state.newest_revoked_at = state.newest_revoked_at.max(Some(entry.revoked_at));
            if entry.expires_at > now {
                state.sessions.insert(entry.sid, entry.expires_at);
            }
        }
        state.sessions.retain(|_, expires_at| *expires_at > now);
        state.last_sync = Some(Instant::now());
    }

    /// A revocation this replica made itself: effective here at once, but it says nothing about
    /// the others, so it neither counts as a load nor moves the feed cursor (which would skip
    /// older revocations the first poll has not read yet).
    pub fn revoke_locally(&self, entry: RevokedSession) {
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if entry.expires_at > Utc::now() {
            state.sessions.insert(entry.sid, entry.expires_at);
        }
    }

    /// The `since` to ask the feed for next: `None` on the first poll (everything still live);
    /// then `FEED_OVERLAP` before the newest revocation seen, or earlier, back to the start of
    /// the oldest transaction that was still open at the last poll (`FeedPage`).
    pub fn next_since(&self) -> Option<DateTime<Utc>> {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let overlap = chrono::Duration::from_std(FEED_OVERLAP).unwrap_or_default();
        let behind_newest = state.newest_revoked_at? - overlap;
        Some(
            state
                .oldest_open
                .map_or(behind_newest, |open| open.min(behind_newest)),
        )
    }

    /// Time since the last successful poll or, before the first one, since the cache was made
    /// (so a replica that never loads shows a growing age, not a fresh one); `None` when off.
    pub fn age(&self) -> Option<Duration> {
        self.max_staleness?;
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        Some(state.last_sync.unwrap_or(self.created).elapsed())
    }

    /// `Err(reason)` while this replica must not be ready: the list was never loaded, or its
    /// last load is older than the maximum staleness.
    pub fn readiness(&self) -> Result<(), String> {
        let Some(max_staleness) = self.max_staleness else {
            return Ok(());
        };
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        match state.last_sync.map(|at| at.elapsed()) {
            None => Err("revocation list not loaded yet".to_owned()),
            Some(age) if age > max_staleness => Err(format!(
                "revocation list stale: last loaded {} s ago, more than the {} s allowed",
                age.as_secs(),
                max_staleness.as_secs()
            )),
            Some(_) => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        state.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Registers `revocation_feed_age_seconds`, computed from the cache when scraped: exact even
/// while a poll hangs, and growing from the start while the first load has not happened.
fn register_feed_age(
    registry: &prometheus::Registry,
    cache: RevokedSessions,
) -> prometheus::Result<()> {
    let gauge = prometheus::PullingGauge::new(
        "revocation_feed_age_seconds",
        "Seconds since the revoked-sessions list was last refreshed (before the first refresh: since start).",
        Box::new(move || cache.age().map_or(0.0, |age| age.as_secs_f64())),
    )?;
    registry.register(Box::new(gauge))
}

/// Polls `fetch(since)` every `interval` until `stop`, applying what it returns; the first poll
/// runs at once, so a new replica is ready as soon as the feed answers. A failed poll keeps the
/// last list (the feed's age grows, and readiness fails past the maximum staleness) and is
/// retried at the next tick.
pub fn spawn_poller<F, Fut, E>(
    cache: RevokedSessions,
    interval: Duration,
    stop: CancellationToken,
    fetch: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Option<DateTime<Utc>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<FeedPage, E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        // An interval's first tick completes immediately.
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut loaded = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match fetch(cache.next_since()).await {
                Ok(page) => {
                    cache.apply_page(page);
                    if !loaded {
                        loaded = true;
                        tracing::info!(revoked = cache.len(), "revoked-sessions list loaded");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "revoked-sessions poll failed; keeping the last list")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn entry(revoked_ago_s: i64, expires_in_s: i64) -> RevokedSession {
        let now = Utc::now();
        RevokedSession {
            sid: Uuid::new_v4(),
            revoked_at: now - chrono::Duration::seconds(revoked_ago_s),
            expires_at: now + chrono::Duration::seconds(expires_in_s),
        }
    }

    fn args(poll: u64, max_staleness: u64) -> RevocationArgs {
        RevocationArgs {
            revocation_poll_seconds: poll,
            revocation_max_staleness_seconds: max_staleness,
        }
    }

    #[test]
    fn revoked_until_expiry_then_forgotten() {
        let cache = RevokedSessions::polled(HOUR);
        let live = entry(5, 3600);
        let dead = entry(5, -1);
        cache.apply([live.clone(), dead.clone()]);
        assert!(cache.is_revoked(live.sid));
        assert!(!cache.is_revoked(dead.sid));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn next_poll_overlaps_the_newest_entry() {
        let cache = RevokedSessions::polled(HOUR);
        assert_eq!(cache.next_since(), None);
        let newest = entry(1, 60);
        cache.apply([entry(100, 60), newest.clone()]);
        let since = cache.next_since().unwrap();
        assert_eq!(newest.revoked_at - since, chrono::Duration::seconds(30));
    }

    #[test]
    fn next_poll_reaches_back_to_the_oldest_open_transaction() {
        let cache = RevokedSessions::polled(HOUR);
        let newest = entry(1, 60);
        let open_since = Utc::now() - chrono::Duration::seconds(300);
        cache.apply_page(FeedPage {
            sessions: vec![newest.clone()],
            oldest_open: Some(open_since),
        });
        assert_eq!(cache.next_since(), Some(open_since));
        // A transaction open for less than the overlap changes nothing.
        cache.apply_page(FeedPage {
            sessions: vec![],
            oldest_open: Some(Utc::now()),
        });
        let since = cache.next_since().unwrap();
        assert_eq!(newest.revoked_at - since, chrono::Duration::seconds(30));
    }

    #[test]
    fn every_session_is_in_doubt_and_the_replica_unready_until_the_first_load() {
        let cache = RevokedSessions::polled(HOUR);
        let sid = Uuid::new_v4();
        assert_eq!(cache.lookup(sid), Lookup::NotLoaded);
        assert_eq!(
            cache.readiness(),
            Err("revocation list not loaded yet".to_owned())
        );
        // An empty first load is a load: nothing was revoked.
        cache.apply([]);
        assert_eq!(cache.lookup(sid), Lookup::Live);
        assert_eq!(cache.readiness(), Ok(()));
    }

    #[test]
    fn past_the_maximum_staleness_the_replica_is_unready_and_keeps_the_list() {
        let cache = RevokedSessions::polled(Duration::from_millis(1));
        let revoked = entry(1, 60);
        cache.apply([revoked.clone()]);
        std::thread::sleep(Duration::from_millis(20));
        let reason = cache.readiness().unwrap_err();
        assert!(reason.starts_with("revocation list stale"), "{reason}");
        assert_eq!(cache.lookup(revoked.sid), Lookup::Revoked);
        assert_eq!(cache.lookup(Uuid::new_v4()), Lookup::Live);
    }

    #[test]
    fn a_local_revocation_is_effective_but_neither_loads_the_list_nor_moves_the_cursor() {
        let cache = RevokedSessions::polled(HOUR);
        let mine = entry(0, 60);
        cache.revoke_locally(mine.clone());
        assert_eq!(cache.lookup(mine.sid), Lookup::Revoked);
        assert_eq!(cache.lookup(Uuid::new_v4()), Lookup::NotLoaded);
        assert!(cache.readiness().is_err());
        // The first poll must still read everything, not only what follows the local entry.
        assert_eq!(cache.next_since(), None);
    }

    #[test]
    fn without_a_feed_nothing_is_waited_for() {
        let cache = RevokedSessions::off();
        assert_eq!(cache.lookup(Uuid::new_v4()), Lookup::Live);
        assert_eq!(cache.readiness(), Ok(()));
        assert_eq!(cache.age(), None);
    }

    #[test]
    fn the_feed_age_counts_from_the_start_until_the_first_load() {
        let registry = prometheus::Registry::new();
        let cache = args(1, 300).polled_cache(&registry).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let age = |registry: &prometheus::Registry| {
            let families = registry.gather();
            let family = families
                .iter()
                .find(|f| f.name() == "revocation_feed_age_seconds")
                .expect("the gauge is registered");
            family.get_metric()[0].get_gauge().get_value()
        };
        let before_load = age(&registry);
        assert!(before_load >= 0.02, "{before_load}");
        let applied = Instant::now();
        cache.apply([]);
        assert!(age(&registry) <= applied.elapsed().as_secs_f64());
    }

    #[test]
    fn a_staleness_bound_under_two_polls_is_refused() {
        let registry = prometheus::Registry::new();
        let Err(error) = args(2, 3).polled_cache(&registry) else {
            panic!("a bound of 3 s with a 2 s poll was accepted");
        };
        let error = error.to_string();
        assert!(
            error.contains("REVOCATION_MAX_STALENESS_SECONDS (3) must be at least twice REVOCATION_POLL_SECONDS (2)"),
            "{error}"
        );
        assert!(args(2, 4).polled_cache(&registry).is_ok());
    }
}
