//! The password check behind the abuse limits. Login, password change and account deletion all
//! prove a password through it, so each attempt spends the same budgets: attempts per client,
//! then failed logins per (account, client) and per account.

use std::net::IpAddr;

use secrecy::SecretString;
use uuid::Uuid;

use crate::AppState;
use crate::error::{Error, Result};
use crate::hashing::Slot;
use crate::limits::Account;
use crate::users::{self, Email, Password, StoredAccount};

/// Whose password is being proven: an email at login, the token's user otherwise.
#[derive(Clone, Copy)]
pub enum Claimant<'a> {
    Email(&'a Email),
    User(Uuid),
}

/// The account whose password this is (disabled or not: the caller decides what that means).
/// `Error::InvalidCredentials` for a wrong password or an unknown account, after the same
/// bcrypt verification either way. The account is known only after the lookup, so the
/// failed-login budget is the user's whatever spelling of the email reached it; an unknown
/// email has a budget of its own, so a refusal does not reveal whether the account exists.
pub async fn check_password(
    state: &AppState,
    client_ip: IpAddr,
    claimant: Claimant<'_>,
    password: Password,
) -> Result<StoredAccount> {
    let limits = &state.limits;
    let client = limits.client_key(client_ip);
    limits.hit(&state.db, limits.login_per_ip, &client).await?;
    // Taking the hashing slot before any other work lets a saturated pool refuse a login
    // before it costs a database round trip.
    let slot = state.hasher.reserve().await.map_err(users::hash_error)?;
    let stored = state
        .db
        .read(|mut conn| async move {
            match claimant {
                Claimant::Email(email) => users::find_by_email(&mut conn, email).await,
                Claimant::User(id) => users::find_by_id(&mut conn, id).await,
            }
        })
        .await?;
    let budget = match (claimant, &stored) {
        (Claimant::Email(_), Some(account)) => Account::User(account.id),
        (Claimant::Email(email), None) => Account::UnknownEmail(email.normalised()),
        (Claimant::User(id), _) => Account::User(id),
    };
    let counted = limits
        .count_failed_login(&state.db, &budget, &client, client_ip)
        .await?;
    let outcome = verify(slot, stored, password).await;
    if matches!(outcome, Err(Error::InvalidCredentials)) {
        audit_failure(claimant, &budget, client_ip);
    } else {
        // Right password (or no verdict): it was not a failed login after all.
        if let Err(error) = counted.forgive(&state.db).await {
            tracing::warn!(%error, "could not take a successful login off the failed-login count");
        }
    }
    outcome
}

/// The audit line of a failed password check, with the account when there is one: a login's
/// (`login failed`, as for a disabled account), or a signed-in user's proving the password
/// again to change it or delete the account (`password check failed`; the request's route says
/// which). Every one spent the failed-login budgets.
fn audit_failure(claimant: Claimant<'_>, budget: &Account, client_ip: IpAddr) {
    let reason = "invalid_credentials";
    match (claimant, budget) {
        (Claimant::Email(_), Account::User(user)) => {
            tracing::info!(user_id = %user, %client_ip, reason, "login failed");
        }
        (Claimant::Email(_), Account::UnknownEmail(_)) => {
            tracing::info!(%client_ip, reason, "login failed");
        }
        (Claimant::User(user), _) => {
            tracing::info!(user_id = %user, %client_ip, reason, "password check failed");
        }
    }
}

/// Unknown accounts cost one bcrypt verification too, so the answer's timing does not tell
/// which emails have accounts.
async fn verify(
    slot: Slot<'_>,
    account: Option<StoredAccount>,
    password: Password,
) -> Result<StoredAccount> {
    let matches = slot
        .verify(
            password.into_secret(),
            account.as_ref().map(|a| a.password_hash.clone()),
        )
        .await
        .map_err(users::hash_error)?;
    match account {
        Some(account) if matches => Ok(account),
        _ => Err(Error::InvalidCredentials),
    }
}

/// After BCRYPT_COST was raised, each user's hash is upgraded at their next login, off the
/// request path. Called once the login's session has started: that start requires the hash
/// it checked to be the stored one.
pub fn rehash_if_weaker(state: &AppState, account: &StoredAccount, password: SecretString) {
    let hash = &account.password_hash;
    let stored_cost = hash.split('$').nth(2).and_then(|c| c.parse::<u32>().ok());
    if stored_cost.is_none_or(|cost| cost >= state.hasher.cost()) {
        return;
    }
    let (state, user, old_hash) = (state.clone(), account.id, hash.clone());
    tokio::spawn(async move {
        let Ok(new_hash) = state.hasher.hash(password).await else {
            return;
        };
        let result = match state.db.acquire().await {
            Ok(mut conn) => users::replace_hash(&mut conn, user, &old_hash, &new_hash).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => tracing::info!(user_id = %user, "password rehashed at the configured cost"),
            Err(error) => tracing::warn!(%error, user_id = %user, "rehash failed"),
        }
    });
}
