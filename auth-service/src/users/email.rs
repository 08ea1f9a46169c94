//! `Email`: a trimmed, valid address of at most 254 bytes. Parsed once at the edge.

use std::fmt;

/// RFC 5321's limit on a forward path.
const MAX_BYTES: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("email is required".into());
        }
        if trimmed.len() > MAX_BYTES {
            return Err(format!("email must be at most {MAX_BYTES} bytes"));
        }
        // NUL cannot be stored by PostgreSQL; the address check below rejects it with the rest.
        if !email_address::EmailAddress::is_valid(trimmed) {
            return Err("email is not a valid address".into());
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_addresses_are_trimmed_and_keep_their_case() {
        assert_eq!(
            Email::parse("  Alice@Example.com ").unwrap().as_str(),
            "Alice@Example.com"
        );
    }

    #[test]
    fn invalid_addresses_are_rejected() {
        for bad in [
            "",
            "   ",
            "alice",
            "alice@",
            "@example.com",
            "a b@example.com",
            "alice@exa\0mple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_length_limit_is_254_bytes() {
        let domain =
            |last: usize| format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(last));
        let at_limit = format!("{}@{}", "l".repeat(64), domain(61));
        assert_eq!(at_limit.len(), 254);
        assert!(Email::parse(&at_limit).is_ok());
        let over = format!("{}@{}", "l".repeat(64), domain(62));
        assert!(Email::parse(&over).unwrap_err().contains("254"));
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_accepted_values_are_trimmed(raw in "\\PC{0,300}") {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert_eq!(email.as_str(), raw.trim());
                prop_assert!(email.as_str().len() <= MAX_BYTES);
            }
        }
    }
}
