//! Access tokens this process has already verified, remembered so that a client sending the
//! same token on every request (as clients do, for its whole 24 hours) pays for its
//! verification once rather than on each request.
//!
//! Verifying a token means decoding its header, computing the HMAC of its signature, and
//! parsing and checking its claims: 3.0 µs in the `jwt/verify_access` bench (`cargo bench -p
//! common --bench hot_path`), plus the allocations it leaves behind. A remembered token costs a
//! hash of the token and one comparison with the remembered copy: 0.09 µs
//! (`jwt/verify_access_remembered`).
//!
//! Why remembering is safe: what made the token valid cannot change while it is remembered.
//! - The key ring is fixed for the life of the process (a rotation is a restart).
//! - `nbf` and `iat` were checked against the clock when the token was verified; time only
//!   moves them further into the past.
//! - `exp` is the one claim time can break, and it is checked again at every use, with the
//!   same leeway as the full verification.
//! - Revocation is not part of it: the caller looks up the session after this, on every request.
//!
//! Only a token that passed verification is remembered, under its whole text, so a token that
//! differs from a remembered one in any byte (another signature, another payload) is verified
//! in full. The map hashes with a per-process random seed, so a client cannot aim a token at a
//! remembered one's bucket to time the comparison.

use quick_cache::sync::Cache;
use uuid::Uuid;

use crate::jwt::{AccessClaims, TokenError};

/// Tokens remembered at most: about 0.5 KiB each with the map's overhead, so 2–3 MiB when
/// full. A replica that sees more distinct live tokens than this verifies again the ones it let go.
pub const CAPACITY: usize = 5_000;

/// What the requests of a verified token need from its claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// `exp`, seconds since the epoch.
    expires_at: i64,
}

impl From<&AccessClaims> for Verified {
    fn from(claims: &AccessClaims) -> Self {
        Self {
            user_id: claims.sub,
            session_id: claims.sid,
            expires_at: claims.exp,
        }
    }
}

pub struct VerifiedTokens {
    remembered: Cache<Box<str>, Verified>,
    leeway_seconds: i64,
}

impl VerifiedTokens {
    /// `leeway_seconds` as the full verification allows past `exp`.
    pub fn new(capacity: usize, leeway_seconds: u64) -> Self {
        Self {
            remembered: Cache::new(capacity),
            leeway_seconds: i64::try_from(leeway_seconds).unwrap_or(i64::MAX / 2),
        }
    }

    /// The remembered claims of `token` if it has not expired at `now` (seconds since the
    /// epoch); otherwise the result of `verify`, remembered when it is a success.
    pub fn get_or_verify(
        &self,
        token: &str,
        now: i64,
        verify: impl FnOnce(&str) -> Result<AccessClaims, TokenError>,
    ) -> Result<Verified, TokenError> {
        if let Some(verified) = self.remembered.get(token) {
            // The full verification refuses `exp < now - leeway`; so does this.
            if verified.expires_at >= now - self.leeway_seconds {
                return Ok(verified);
            }
            self.remembered.remove(token);
        }
        let verified = Verified::from(&verify(token)?);
        self.remembered.insert(token.into(), verified);
        Ok(verified)
    }

    pub fn len(&self) -> usize {
        self.remembered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.remembered.is_empty()
    }
}

impl std::fmt::Debug for VerifiedTokens {
    // The tokens themselves are credentials: only their number is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("remembered", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const NOW: i64 = 1_800_000_000;
    const LEEWAY: u64 = 30;

    fn claims(exp: i64) -> AccessClaims {
        crate::jwt::tests::access_claims(exp - 60, exp)
    }

    /// A verifier that answers `answer` and counts its calls.
    fn counting(
        calls: &Cell<u32>,
        answer: Result<AccessClaims, TokenError>,
    ) -> impl FnOnce(&str) -> Result<AccessClaims, TokenError> + '_ {
        move |_| {
            calls.set(calls.get() + 1);
            answer
        }
    }

    #[test]
    fn a_verified_token_is_verified_once() {
        let tokens = VerifiedTokens::new(CAPACITY, LEEWAY);
        let issued = claims(NOW + 600);
        let calls = Cell::new(0);
        let first = tokens
            .get_or_verify("a.b.c", NOW, counting(&calls, Ok(issued.clone())))
            .unwrap();
        let again = tokens
            .get_or_verify(
                "a.b.c",
                NOW + 1,
                counting(&calls, Err(TokenError::WrongType)),
            )
            .unwrap();
        assert_eq!(calls.get(), 1, "the second use was verified again");
        assert_eq!(first, again);
        assert_eq!((first.user_id, first.session_id), (issued.sub, issued.sid));
    }

    #[test]
    fn a_token_differing_in_any_byte_is_verified_in_full() {
        let tokens = VerifiedTokens::new(CAPACITY, LEEWAY);
        let calls = Cell::new(0);
        tokens
            .get_or_verify("a.b.c", NOW, counting(&calls, Ok(claims(NOW + 600))))
            .unwrap();
        for other in ["a.b.d", "a.b.c.", "a.b.", "A.b.c"] {
            let refused =
                tokens.get_or_verify(other, NOW, counting(&calls, Err(TokenError::WrongType)));
            assert_eq!(refused, Err(TokenError::WrongType), "{other}");
        }
        assert_eq!(calls.get(), 5);
    }

    #[test]
    fn a_refused_token_is_not_remembered() {
        let tokens = VerifiedTokens::new(CAPACITY, LEEWAY);
        let calls = Cell::new(0);
        let bad = || Err(TokenError::Invalid("InvalidSignature".into()));
        for _ in 0..2 {
            assert!(
                tokens
                    .get_or_verify("a.b.c", NOW, counting(&calls, bad()))
                    .is_err()
            );
        }
        assert_eq!(calls.get(), 2);
        assert!(tokens.is_empty());
    }

    #[test]
    fn a_remembered_token_expires_with_the_same_leeway() {
        let tokens = VerifiedTokens::new(CAPACITY, LEEWAY);
        let exp = NOW + 60;
        let calls = Cell::new(0);
        tokens
            .get_or_verify("a.b.c", NOW, counting(&calls, Ok(claims(exp))))
            .unwrap();
        // Still inside the leeway past `exp`: remembered.
        let at_the_edge = exp + i64::try_from(LEEWAY).unwrap();
        let expired = || Err(TokenError::Invalid("ExpiredSignature".into()));
        assert!(
            tokens
                .get_or_verify("a.b.c", at_the_edge, counting(&calls, expired()))
                .is_ok()
        );
        assert_eq!(calls.get(), 1);
        // One second later the full verification decides, and it refuses.
        let refused = tokens.get_or_verify("a.b.c", at_the_edge + 1, counting(&calls, expired()));
        assert_eq!(refused, Err(TokenError::Invalid("ExpiredSignature".into())));
        assert_eq!(calls.get(), 2);
        assert!(tokens.is_empty(), "the expired token is forgotten");
    }

    #[test]
    fn memory_is_bounded() {
        let tokens = VerifiedTokens::new(100, LEEWAY);
        for n in 0..1_000 {
            let token = format!("token-{n}");
            tokens
                .get_or_verify(&token, NOW, |_| Ok(claims(NOW + 600)))
                .unwrap();
        }
        assert!(tokens.len() <= 100, "{} remembered", tokens.len());
    }
}
