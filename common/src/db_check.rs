//! The database checks `serve` and `migrate` make before they rely on a connection: a refusal
//! no retry can fix (TLS verification, pg_hba.conf, a wrong password) becomes one line naming
//! the cause and what to check, and a transaction-mode pooler that loses prepared statements is
//! caught at start-up instead of by requests failing at random later.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// Bounds the start-up check: a database that does not answer must not hold the start-up (the
/// service then starts unready, as during any outage).
const CHECK_BUDGET: Duration = Duration::from_secs(10);

/// Rounds of the prepared-statement probe; see [`prepared_statements_survive`].
const PROBE_ROUNDS: usize = 3;

/// SQLSTATEs a pooler that passes statement names through produces: `42P05` (prepared statement
/// already exists: another client's statement of the same name on the shared server connection)
/// and `26000` (prepared statement does not exist: this client's statement was prepared on
/// another server connection).
const LOST_STATEMENT_CODES: [&str; 2] = ["42P05", "26000"];

/// Checks the pool's connection before the service starts serving. Err only for a problem that
/// retrying cannot fix: the service must then exit with that one-line message. A database that
/// cannot be reached is logged and the start goes on, unready until it can be.
pub async fn check_at_startup(options: &PgConnectOptions) -> anyhow::Result<()> {
    match tokio::time::timeout(CHECK_BUDGET, check(options)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(Failure::Fatal(message))) => Err(anyhow::anyhow!(message)),
        Ok(Err(Failure::Unreachable(error))) => {
            tracing::warn!(
                %error,
                "database not reachable at start-up: serving, unready until it is (the TLS and pooler checks did not run)"
            );
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                "database did not answer the start-up check within {CHECK_BUDGET:?}: serving, unready until it does"
            );
            Ok(())
        }
    }
}

/// A connection for a one-off job (`migrate`): a refusal comes back as one line saying what to
/// check, any other failure as one line with the server's address and the error.
pub async fn connect(options: &PgConnectOptions) -> anyhow::Result<PgConnection> {
    PgConnection::connect_with(options).await.map_err(|error| {
        let message = refusal(options, &error)
            .unwrap_or_else(|| format!("cannot connect to {}: {error}", describe(options)));
        anyhow::anyhow!(message)
    })
}

enum Failure {
    /// Configuration that no retry fixes; the message says what to change.
    Fatal(String),
    /// Down, refusing, or not created yet: readiness reports it until it recovers.
    Unreachable(sqlx::Error),
}

async fn check(options: &PgConnectOptions) -> Result<(), Failure> {
    let open = |options: &PgConnectOptions| {
        let options = options.clone();
        async move {
            PgConnection::connect_with(&options).await.map_err(|error| {
                match refusal(&options, &error) {
                    Some(message) => Failure::Fatal(message),
                    None => Failure::Unreachable(error),
                }
            })
        }
    };
    let first = open(options).await?;
    let second = open(options).await?;
    prepared_statements_survive(options, first, second).await
}

/// Whether a pooler between here and PostgreSQL keeps each client's protocol-level prepared
/// statements (every sqlx query is one) its own: a direct connection, a session pooler and
/// PgBouncer ≥ 1.21 with `max_prepared_statements` > 0 do; a transaction-mode pooler that passes
/// statement names through (`max_prepared_statements = 0`, or an older PgBouncer) does not.
///
/// Two client connections each prepare a statement; sqlx names each connection's first statement
/// `sqlx_s_1`, so through such a pooler they meet on a shared server connection: the second
/// PREPARE finds the first's (`already exists`), or a later execution runs on a server connection
/// where its statement is missing (`does not exist`) or is the other client's (which answers with
/// the other's value). A pooler reusing its most recently released server connection, as
/// PgBouncer does by default, shows one of these in the first two rounds. On a connection that
/// keeps statements its own, every round answers with each client's own value.
async fn prepared_statements_survive(
    options: &PgConnectOptions,
    mut first: PgConnection,
    mut second: PgConnection,
) -> Result<(), Failure> {
    for _ in 0..PROBE_ROUNDS {
        for (connection, own) in [(&mut first, "first"), (&mut second, "second")] {
            let sql = format!("SELECT '{own}'::text");
            match sqlx::query_scalar::<_, String>(&sql)
                .fetch_one(&mut *connection)
                .await
            {
                Ok(answer) if answer == own => {}
                Ok(answer) => {
                    return Err(Failure::Fatal(lost_statements(
                        options,
                        &format!(
                            "a prepared statement answered with another connection's value ({answer:?})"
                        ),
                    )));
                }
                Err(sqlx::Error::Database(db))
                    if db
                        .code()
                        .is_some_and(|code| LOST_STATEMENT_CODES.contains(&code.as_ref())) =>
                {
                    return Err(Failure::Fatal(lost_statements(options, db.message())));
                }
                Err(error) => return Err(Failure::Unreachable(error)),
            }
        }
    }
    let _ = first.close().await;
    let _ = second.close().await;
    Ok(())
}

fn lost_statements(options: &PgConnectOptions, observed: &str) -> String {
    format!(
        "{} goes through a transaction-mode pooler that does not keep prepared statements ({observed}); \
         every query of this service is a prepared statement, so requests would fail at random: \
         set max_prepared_statements > 0 on the pooler (PgBouncer 1.21 or later; Neon's pooler has it), \
         or point DATABASE_URL at a direct (non-pooled) endpoint",
        describe(options)
    )
}

/// The one-line explanation of a connection error that no retry fixes; None for the others
/// (the server is down or restarting, the network failed, the database is not created yet).
pub fn refusal(options: &PgConnectOptions, error: &sqlx::Error) -> Option<String> {
    let target = describe(options);
    match error {
        // rustls' verdict on the certificate arrives as an I/O error during the handshake.
        sqlx::Error::Tls(_) | sqlx::Error::Io(_) => {
            let detail = error_chain(error);
            let cause = if detail.contains("UnknownIssuer") {
                "the server's TLS certificate is not signed by a CA this service trusts; check that \
                 sslrootcert in DATABASE_URL (or PGSSLROOTCERT) is the CA bundle that issued the \
                 server's certificate (without one, only the public web CAs are trusted)"
                    .to_owned()
            } else if detail.contains("not valid for name") || detail.contains("NotValidForName") {
                format!(
                    "the server's TLS certificate does not name the host `{}`; use a host name the \
                     certificate lists (its subjectAltName) in DATABASE_URL, or check that this is \
                     the right server",
                    options.get_host()
                )
            } else if matches!(error, sqlx::Error::Tls(_))
                || detail.contains("invalid peer certificate")
            {
                "TLS to the server failed; check sslmode and sslrootcert in DATABASE_URL".to_owned()
            } else {
                return None;
            };
            Some(format!("cannot connect to {target}: {cause} ({detail})"))
        }
        sqlx::Error::Database(db) => {
            let code = db.code();
            let message = db.message();
            let cause = match code.as_deref() {
                Some("28000") if message.contains("no encryption") => {
                    "the server accepts only TLS connections; set sslmode=verify-full (with \
                     sslrootcert) or sslmode=require in DATABASE_URL"
                }
                Some("28000") => {
                    "the server's pg_hba.conf refuses this connection; check the user, \
                     database and sslmode in DATABASE_URL"
                }
                Some("28P01") => {
                    "the server refused the password; check the user and password in DATABASE_URL"
                }
                _ => return None,
            };
            Some(format!(
                "cannot connect to {target}: {cause} (server said: {message})"
            ))
        }
        _ => None,
    }
}

/// `the database at host:port (database `d`, user `u`)`: what a person needs to find the
/// setting, never the password.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "the database at {}:{} (database `{}`, user `{}`)",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(the user's)"),
        options.get_username()
    )
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn options() -> PgConnectOptions {
        PgConnectOptions::from_str("postgres://app:hunter2-secret@db.example:6543/todo").unwrap()
    }

    #[test]
    fn an_unknown_issuer_says_to_check_sslrootcert_and_never_the_password() {
        let error = sqlx::Error::Tls("invalid peer certificate: UnknownIssuer".into());
        let message = refusal(&options(), &error).unwrap();
        assert!(message.contains("sslrootcert"), "{message}");
        assert!(message.contains("db.example:6543"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn a_wrong_host_name_names_the_host() {
        let error = sqlx::Error::Tls(
            "invalid peer certificate: certificate not valid for name \"db.example\"".into(),
        );
        let message = refusal(&options(), &error).unwrap();
        assert!(
            message.contains("does not name the host `db.example`"),
            "{message}"
        );
    }

    #[test]
    fn an_outage_is_not_a_refusal() {
        let error = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(refusal(&options(), &error), None);
        assert_eq!(refusal(&options(), &sqlx::Error::PoolTimedOut), None);
    }
}
