//! Secrets read from the environment: kept in a type whose `Debug` never prints them.

pub use secrecy::{ExposeSecret, SecretString};

/// clap value parser for secret settings (`DATABASE_URL`, `JWT_SECRET`, `JWT_KEYS`).
pub fn parse_secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value.to_owned()))
}
