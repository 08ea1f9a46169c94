//! `Email`: a trimmed, valid, ASCII address of at most 254 bytes. Parsed once at the edge.
//!
//! Only ASCII is accepted. Accounts are unique on, and found by, PostgreSQL's `lower(email)`,
//! while the failed-login budget of an unknown email is keyed in Rust. Outside ASCII the two
//! fold differently (`İ`, U+0130, is one character to `lower()` under one collation and two
//! to Rust's `to_lowercase`, and `lower()` itself changes with the database's collation), so
//! spellings that reach one account could spend separate budgets; look-alike characters would
//! also allow accounts that read the same. In ASCII every folding agrees. Internationalised
//! domains still work in their ASCII (punycode, `xn--…`) form.

use std::fmt;

/// RFC 5321's limit on a forward path.
const MAX_BYTES: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// A new account's address: a bare address only. The crate's default also takes
    /// `Name <address>`, checks only the part in brackets, and would let one mailbox be
    /// registered under many display names.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::parse_with(
            raw,
            email_address::Options::default().without_display_text(),
        )
    }

    /// An address to find an account by (login, the operator's commands): the `Name <address>`
    /// forms registration took before it refused them are accepted too, so those accounts can
    /// still log in and be managed.
    pub fn parse_to_find(raw: &str) -> Result<Self, String> {
        Self::parse_with(raw, email_address::Options::default())
    }

    fn parse_with(raw: &str, options: email_address::Options) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("email is required".into());
        }
        if trimmed.len() > MAX_BYTES {
            return Err(format!("email must be at most {MAX_BYTES} bytes"));
        }
        if !trimmed.is_ascii() {
            return Err(
                "email must be ASCII (write an internationalised domain in its xn-- form)".into(),
            );
        }
        // NUL cannot be stored by PostgreSQL, and no control character belongs in an address
        // (a quoted local part could carry one past the check below).
        if trimmed.contains(|c: char| c.is_ascii_control()) {
            return Err("email is not a valid address".into());
        }
        if email_address::EmailAddress::parse_with_options(trimmed, options).is_err() {
            return Err("email is not a valid address".into());
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form every spelling of this address shares: lower-case (the address is ASCII, so
    /// this is what PostgreSQL's `lower()` gives under any collation).
    pub fn normalised(&self) -> String {
        self.0.to_ascii_lowercase()
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
            // Display forms: the text outside the brackets was never checked.
            "Alice <alice@example.com>",
            "\0 <alice@example.com>",
            "alice@example.com <mallory@example.com>",
            "\"al\tice\"@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn an_account_registered_under_a_display_form_can_still_be_found() {
        let found = Email::parse_to_find("Alice <alice@example.com>").unwrap();
        assert_eq!(found.as_str(), "Alice <alice@example.com>");
        for bad in ["\0 <alice@example.com>", "alice", "\"al\tice\"@example.com"] {
            assert!(Email::parse_to_find(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn non_ascii_addresses_are_rejected_with_a_reason() {
        for bad in [
            "\u{130}nci@example.com",
            "alice@b\u{fc}cher.example",
            "ALICE@EXAMPLE.COM\u{200b}",
        ] {
            assert!(Email::parse(bad).unwrap_err().contains("ASCII"), "{bad:?}");
        }
        assert!(Email::parse("alice@xn--bcher-kva.example").is_ok());
    }

    #[test]
    fn spellings_of_one_address_normalise_alike() {
        let a = Email::parse(" Alice@Example.COM ").unwrap();
        let b = Email::parse("alice@example.com").unwrap();
        assert_eq!(a.normalised(), b.normalised());
        assert_eq!(a.normalised(), "alice@example.com");
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
                prop_assert!(email.as_str().is_ascii());
            }
        }
    }
}
