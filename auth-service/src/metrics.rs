//! auth-service's business metrics, registered in the application's registry.

use prometheus::{IntCounter, IntCounterVec, Registry};

#[derive(Clone)]
pub struct AuthMetrics {
    pub logins: IntCounterVec,
    pub registrations: IntCounterVec,
    pub refreshes: IntCounterVec,
    pub refresh_reuse_detected: IntCounter,
    /// Spent refresh tokens presented again within REFRESH_TOKEN_REUSE_GRACE_SECONDS.
    pub refresh_reuse_graced: IntCounter,
    pub logouts: IntCounterVec,
    pub rate_limited: IntCounterVec,
    /// Password changes and account deletions through the API.
    pub account_changes: IntCounterVec,
}

impl AuthMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        use common::metrics::outcome_counter;
        let refresh_reuse_detected = IntCounter::new(
            "auth_refresh_reuse_detected_total",
            "Spent refresh tokens presented again; each revoked its whole session.",
        )?;
        registry.register(Box::new(refresh_reuse_detected.clone()))?;
        let rate_limited = IntCounterVec::new(
            prometheus::Opts::new(
                "auth_rate_limited_total",
                "Requests refused with 429, by limit.",
            ),
            &["limit"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        let refresh_reuse_graced = IntCounter::new(
            "auth_refresh_reuse_graced_total",
            "Spent refresh tokens presented again within the reuse grace; each got a pair of its session, which lives on.",
        )?;
        registry.register(Box::new(refresh_reuse_graced.clone()))?;
        let account_changes = IntCounterVec::new(
            prometheus::Opts::new(
                "auth_account_changes_total",
                "Password changes and account deletions, by change.",
            ),
            &["change"],
        )?;
        registry.register(Box::new(account_changes.clone()))?;
        Ok(Self {
            logins: outcome_counter(registry, "auth_logins_total", "Login attempts by outcome.")?,
            registrations: outcome_counter(
                registry,
                "auth_registrations_total",
                "Registration attempts by outcome.",
            )?,
            refreshes: outcome_counter(
                registry,
                "auth_refreshes_total",
                "Refresh attempts by outcome.",
            )?,
            refresh_reuse_detected,
            refresh_reuse_graced,
            logouts: outcome_counter(registry, "auth_logouts_total", "Logouts by outcome.")?,
            rate_limited,
            account_changes,
        })
    }
}
