//! `auth-service users disable|enable|revoke-sessions|delete <email>`: what an operator does to
//! one account, straight on the database (`DATABASE_URL`), from `kubectl exec` or a Job.
//! Every action is one transaction, writes one audit log line, and reaches running replicas
//! through the tables they already poll: ended sessions through the revocation feed, a
//! deletion through the deleted-users feed.

use common::db::{DatabaseArgs, Db};
use uuid::Uuid;

use crate::account;
use crate::config::UserAction;
use crate::sessions::store::{self as sessions, Reason};
use crate::users::Email;

/// Runs `action`; `Err` is the one-line reason the command fails with.
pub async fn run(database: &DatabaseArgs, action: &UserAction) -> anyhow::Result<()> {
    let (verb, raw_email) = match action {
        UserAction::Disable { email } => ("disable", email),
        UserAction::Enable { email } => ("enable", email),
        UserAction::RevokeSessions { email } => ("revoke-sessions", email),
        UserAction::Delete { email } => ("delete", email),
    };
    let email = Email::parse_to_find(raw_email).map_err(|reason| anyhow::anyhow!("{reason}"))?;
    let db = Db::connect_lazy(database, &prometheus::Registry::new())?;
    let mut tx = db
        .begin()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the database: {e}"))?;
    let user = account::store::lock_by_email(&mut tx, email.as_str())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no account with email {email}"))?;
    let ended = match action {
        UserAction::Disable { .. } => account::store::set_disabled(&mut tx, user, true)
            .await?
            .len(),
        UserAction::Enable { .. } => account::store::set_disabled(&mut tx, user, false)
            .await?
            .len(),
        UserAction::RevokeSessions { .. } => {
            sessions::revoke_all(&mut tx, user, None, Reason::OperatorRevoked)
                .await?
                .len()
        }
        UserAction::Delete { .. } => account::store::delete(&mut tx, user)
            .await?
            .map(|revoked| revoked.len())
            .ok_or_else(|| anyhow::anyhow!("no account with email {email}"))?,
    };
    tx.commit().await?;
    audit(verb, user, &email, ended);
    Ok(())
}

fn audit(verb: &str, user: Uuid, email: &Email, sessions_ended: usize) {
    tracing::warn!(
        audit = true,
        action = verb,
        user_id = %user,
        email = %email,
        sessions_ended,
        "operator: account {verb}"
    );
}
