//! `Password`: what bcrypt may hash without truncating. bcrypt reads at most 72 bytes, so a
//! longer password is refused rather than silently cut (two passwords sharing 72 bytes would
//! otherwise be the same password).

use secrecy::{ExposeSecret, SecretString};

pub const MAX_BYTES: usize = 72;
pub const MIN_CHARS_AT_REGISTER: usize = 8;

/// A password that passed the edge checks. Its `Debug` never shows it.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
    /// At registration: 8 or more characters, at most 72 bytes.
    pub fn for_registration(raw: SecretString) -> Result<Self, String> {
        let chars = raw.expose_secret().chars().count();
        if chars < MIN_CHARS_AT_REGISTER {
            return Err(format!(
                "password must be at least {MIN_CHARS_AT_REGISTER} characters"
            ));
        }
        Self::checked(raw)
    }

    /// At login: anything 1..=72 bytes; a wrong one is a 401, not a 400.
    pub fn for_login(raw: SecretString) -> Result<Self, String> {
        if raw.expose_secret().is_empty() {
            return Err("password is required".into());
        }
        Self::checked(raw)
    }

    fn checked(raw: SecretString) -> Result<Self, String> {
        let value = raw.expose_secret();
        if value.len() > MAX_BYTES {
            return Err(format!("password must be at most {MAX_BYTES} bytes"));
        }
        if value.contains('\0') {
            return Err("password must not contain NUL characters".into());
        }
        Ok(Self(raw))
    }

    pub fn into_secret(self) -> SecretString {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn registration_needs_eight_characters_not_bytes() {
        assert!(Password::for_registration(secret("1234567")).is_err());
        assert!(Password::for_registration(secret("12345678")).is_ok());
        // Seven characters but fourteen bytes: still too short.
        assert!(Password::for_registration(secret("ééééééé")).is_err());
    }

    #[test]
    fn seventy_two_bytes_pass_and_seventy_three_fail() {
        assert!(Password::for_registration(secret(&"a".repeat(72))).is_ok());
        let err = Password::for_registration(secret(&"a".repeat(73))).unwrap_err();
        assert!(err.contains("72 bytes"));
        // 36 two-byte characters are 72 bytes; one more is over even though it is 37 chars.
        assert!(Password::for_login(secret(&"é".repeat(36))).is_ok());
        assert!(Password::for_login(secret(&"é".repeat(37))).is_err());
    }

    #[test]
    fn login_accepts_any_non_empty_password_up_to_the_limit() {
        assert!(Password::for_login(secret("x")).is_ok());
        assert!(Password::for_login(secret("")).is_err());
        assert!(Password::for_login(secret("abc\0def")).is_err());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let printed = format!("{:?}", Password::for_login(secret("hunter22")).unwrap());
        assert!(!printed.contains("hunter22"), "{printed}");
    }

    proptest! {
        #[test]
        fn accepted_registration_passwords_fit_bcrypt(raw in "\\PC{0,100}") {
            if let Ok(p) = Password::for_registration(secret(&raw)) {
                let value = p.into_secret();
                prop_assert!(value.expose_secret().len() <= MAX_BYTES);
                prop_assert!(value.expose_secret().chars().count() >= MIN_CHARS_AT_REGISTER);
            }
        }
    }
}
