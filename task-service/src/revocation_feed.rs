//! Polls auth-service's revoked-sessions feed (on its admin port) into the local cache that
//! `AuthUser` consults. Off the request path: a request never waits on auth-service.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::revocation::{
    FeedPage, OLDEST_OPEN_HEADER, RevokedSession, RevokedSessions, spawn_poller,
};
use tokio_util::sync::CancellationToken;

/// A poll that takes longer than this is abandoned and retried at the next tick.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

pub fn spawn(
    auth_admin_url: &str,
    cache: RevokedSessions,
    interval: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(POLL_TIMEOUT).build()?;
    let feed_url = format!(
        "{}/internal/revoked-sessions",
        auth_admin_url.trim_end_matches('/')
    );
    spawn_poller(cache, interval, stop, move |since| {
        let client = client.clone();
        let url = feed_url_since(&feed_url, since);
        async move { fetch(&client, &url).await }
    });
    Ok(())
}

fn feed_url_since(feed_url: &str, since: Option<DateTime<Utc>>) -> String {
    match since {
        // `Z` rather than `+00:00`: no character that needs escaping in a query string.
        Some(since) => format!(
            "{feed_url}?since={}",
            since.to_rfc3339_opts(SecondsFormat::Micros, true)
        ),
        None => feed_url.to_owned(),
    }
}

/// One read of the feed: its sessions, and when the oldest transaction open on auth-service's
/// database began (`OLDEST_OPEN_HEADER`; absent from an older auth-service, or when none was).
async fn fetch(client: &reqwest::Client, url: &str) -> reqwest::Result<FeedPage> {
    let response = client.get(url).send().await?.error_for_status()?;
    let oldest_open = response
        .headers()
        .get(OLDEST_OPEN_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| DateTime::parse_from_rfc3339(value).ok())
        .map(|open| open.with_timezone(&Utc));
    let sessions: Vec<RevokedSession> = response.json().await?;
    Ok(FeedPage {
        sessions,
        oldest_open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_sent_in_utc_without_characters_to_escape() {
        let since = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456+00:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            feed_url_since("http://a:9000/internal/revoked-sessions", Some(since)),
            "http://a:9000/internal/revoked-sessions?since=2026-01-02T03:04:05.123456Z"
        );
        assert_eq!(feed_url_since("u", None), "u");
    }
}
