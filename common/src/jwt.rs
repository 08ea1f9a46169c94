//! The JWT key ring: HS256 access tokens signed by the first key and verified by any key.
//!
//! Configuration is `JWT_SECRET` (one key, kid `default`) or `JWT_KEYS=kid:secret,kid:secret`
//! (the ring; the first entry signs). Verification pins HS256, requires every claim we issue,
//! and checks `typ`, `iss`, `aud`, `exp`/`nbf` with leeway and an `iat` not in the future.

use std::collections::HashMap;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::secret::parse_secret;
use crate::verified_tokens::{self, Verified, VerifiedTokens};

/// HS256 keys shorter than the hash output are brute-forceable from a single token.
pub const MIN_KEY_BYTES: usize = 32;
const ACCESS_TYPE: &str = "access";

#[derive(clap::Args, Debug, Clone)]
pub struct JwtArgs {
    /// One signing key (raw UTF-8 bytes, at least 32 bytes), kid `default`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_secret: Option<SecretString>,
    /// Key ring for rotation: `kid:secret,kid:secret`; the first signs, all verify.
    #[arg(long, env = "JWT_KEYS", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_keys: Option<SecretString>,
    /// `iss` claim issued and required.
    #[arg(long, env = "JWT_ISSUER", default_value = "todo-auth")]
    pub jwt_issuer: String,
    /// `aud` claim issued and required.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "todo-api")]
    pub jwt_audience: String,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[arg(long, env = "JWT_LEEWAY_SECONDS", default_value_t = 30)]
    pub jwt_leeway_seconds: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyConfigError {
    #[error("set JWT_SECRET or JWT_KEYS")]
    Missing,
    #[error("set only one of JWT_SECRET and JWT_KEYS")]
    Both,
    #[error("JWT_KEYS entry {0} is not of the form kid:secret")]
    Malformed(usize),
    #[error("JWT key `{0}` must be at least 32 bytes")]
    TooShort(String),
    #[error("JWT key id `{0}` appears twice")]
    DuplicateKid(String),
}

/// Why a token was refused. Never shown to the client in detail: every variant is one 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token signed with an unknown key id")]
    UnknownKid,
    #[error("token is not an access token")]
    WrongType,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token rejected: {0}")]
    Invalid(String),
}

/// The claims of an access token. Every field is required: a token missing one fails to decode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub sub: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub jti: Uuid,
    pub sid: Uuid,
    pub typ: String,
}

struct Key {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

pub struct KeyRing {
    signing_kid: String,
    keys: HashMap<String, Key>,
    issuer: String,
    audience: String,
    leeway_seconds: u64,
    validation: Validation,
    verified: VerifiedTokens,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<_> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing_kid)
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    pub fn from_args(args: &JwtArgs) -> Result<Self, KeyConfigError> {
        let entries = match (&args.jwt_secret, &args.jwt_keys) {
            (Some(_), Some(_)) => return Err(KeyConfigError::Both),
            (None, None) => return Err(KeyConfigError::Missing),
            (Some(secret), None) => {
                vec![(
                    "default".to_owned(),
                    secret.expose_secret().as_bytes().to_vec(),
                )]
            }
            (None, Some(ring)) => parse_ring(ring.expose_secret())?,
        };
        Self::new(
            entries,
            &args.jwt_issuer,
            &args.jwt_audience,
            args.jwt_leeway_seconds,
        )
    }

    /// `entries` in ring order: the first signs.
    pub fn new(
        entries: Vec<(String, Vec<u8>)>,
        issuer: &str,
        audience: &str,
        leeway_seconds: u64,
    ) -> Result<Self, KeyConfigError> {
        crate::jwt_hmac::install();
        let signing_kid = entries.first().ok_or(KeyConfigError::Missing)?.0.clone();
        let mut keys = HashMap::new();
        for (kid, secret) in entries {
            if secret.len() < MIN_KEY_BYTES {
                return Err(KeyConfigError::TooShort(kid));
            }
            let key = Key {
                encoding: EncodingKey::from_secret(&secret),
                decoding: DecodingKey::from_secret(&secret),
            };
            if keys.insert(kid.clone(), key).is_some() {
                return Err(KeyConfigError::DuplicateKid(kid));
            }
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_seconds;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        Ok(Self {
            signing_kid,
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_seconds,
            validation,
            verified: VerifiedTokens::new(verified_tokens::CAPACITY, leeway_seconds),
        })
    }

    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// Issues an access token for `user` in session `sid`, valid for `ttl_seconds`.
    pub fn sign_access(&self, user: Uuid, sid: Uuid, ttl_seconds: u64) -> String {
        let now = Utc::now().timestamp();
        let claims = AccessClaims {
            sub: user,
            iat: now,
            nbf: now,
            exp: now + i64::try_from(ttl_seconds).unwrap_or(i64::MAX / 2),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: Uuid::new_v4(),
            sid,
            typ: ACCESS_TYPE.to_owned(),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims with the signing key (tests forge tokens through this).
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        let key = &self.keys[&self.signing_kid].encoding;
        // HMAC signing of a serialisable struct cannot fail.
        jsonwebtoken::encode(&header, claims, key).expect("HS256 signing never fails")
    }

    /// `verify_access` for a request: a token this ring has verified before is not verified
    /// again until it expires (`verified_tokens` says why that is safe).
    pub fn verify_access_remembered(&self, token: &str) -> Result<Verified, TokenError> {
        self.verified
            .get_or_verify(token, Utc::now().timestamp(), |token| {
                self.verify_access(token)
            })
    }

    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let kid = header.kid.as_deref().unwrap_or(&self.signing_kid);
        let key = self.keys.get(kid).ok_or(TokenError::UnknownKid)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.typ != ACCESS_TYPE {
            return Err(TokenError::WrongType);
        }
        let leeway = i64::try_from(self.leeway_seconds).unwrap_or(i64::MAX / 2);
        if claims.iat > Utc::now().timestamp() + leeway {
            return Err(TokenError::IssuedInFuture);
        }
        Ok(claims)
    }
}

/// Parses `kid:secret,kid:secret`. A secret may itself contain `:`; a kid may not.
fn parse_ring(ring: &str) -> Result<Vec<(String, Vec<u8>)>, KeyConfigError> {
    ring.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(index, entry)| match entry.split_once(':') {
            Some((kid, secret)) if !kid.trim().is_empty() && !secret.is_empty() => {
                Ok((kid.trim().to_owned(), secret.as_bytes().to_vec()))
            }
            _ => Err(KeyConfigError::Malformed(index + 1)),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Access claims as auth-service issues them (`nbf` = `iat`), with the times given.
    pub(crate) fn access_claims(iat: i64, exp: i64) -> AccessClaims {
        AccessClaims {
            sub: Uuid::new_v4(),
            iat,
            nbf: iat,
            exp,
            iss: "todo-auth".into(),
            aud: "todo-api".into(),
            jti: Uuid::new_v4(),
            sid: Uuid::new_v4(),
            typ: "access".into(),
        }
    }

    const KEY_A: &str = "a-very-long-secret-key-of-32-bytes!!";
    const KEY_B: &str = "another-long-secret-key-of-32-bytes!";

    fn args(secret: Option<&str>, keys: Option<&str>) -> JwtArgs {
        JwtArgs {
            jwt_secret: secret.map(|s| SecretString::from(s.to_owned())),
            jwt_keys: keys.map(|s| SecretString::from(s.to_owned())),
            jwt_issuer: "todo-auth".into(),
            jwt_audience: "todo-api".into(),
            jwt_leeway_seconds: 30,
        }
    }

    #[test]
    fn a_key_under_32_bytes_is_refused() {
        let err = KeyRing::from_args(&args(Some("short"), None)).unwrap_err();
        assert_eq!(err, KeyConfigError::TooShort("default".into()));
        assert_eq!(
            err.to_string(),
            "JWT key `default` must be at least 32 bytes"
        );
    }

    #[test]
    fn secret_and_ring_together_are_refused() {
        let ring = format!("k1:{KEY_A}");
        assert_eq!(
            KeyRing::from_args(&args(Some(KEY_A), Some(&ring))).unwrap_err(),
            KeyConfigError::Both
        );
        assert_eq!(
            KeyRing::from_args(&args(None, None)).unwrap_err(),
            KeyConfigError::Missing
        );
    }

    #[test]
    fn ring_parsing_keeps_order_and_rejects_malformed_entries() {
        let parsed = parse_ring(&format!("new:{KEY_B}, old:{KEY_A}")).unwrap();
        assert_eq!(parsed[0].0, "new");
        assert_eq!(parsed[1], ("old".to_owned(), KEY_A.as_bytes().to_vec()));
        assert_eq!(
            parse_ring(&format!("k1:{KEY_A},nocolon")).unwrap_err(),
            KeyConfigError::Malformed(2)
        );
        assert_eq!(
            parse_ring(&format!("k1:{KEY_A},k1:{KEY_B}"))
                .map(|e| KeyRing::new(e, "i", "a", 0).unwrap_err())
                .unwrap(),
            KeyConfigError::DuplicateKid("k1".into())
        );
    }

    #[test]
    fn first_key_signs_and_every_key_verifies() {
        let old = KeyRing::from_args(&args(None, Some(&format!("old:{KEY_A}")))).unwrap();
        let both =
            KeyRing::from_args(&args(None, Some(&format!("new:{KEY_B},old:{KEY_A}")))).unwrap();
        let user = Uuid::new_v4();
        let sid = Uuid::new_v4();
        let old_token = old.sign_access(user, sid, 60);
        let new_token = both.sign_access(user, sid, 60);
        assert_eq!(both.verify_access(&old_token).unwrap().sub, user);
        assert_eq!(both.verify_access(&new_token).unwrap().sid, sid);
        assert_eq!(old.verify_access(&new_token), Err(TokenError::UnknownKid));
    }

    #[test]
    fn a_token_with_a_future_iat_is_refused() {
        let ring = KeyRing::from_args(&args(Some(KEY_A), None)).unwrap();
        let now = Utc::now().timestamp();
        let mut claims = access_claims(now + 3600, now + 7200);
        claims.nbf = now;
        assert_eq!(
            ring.verify_access(&ring.sign(&claims)),
            Err(TokenError::IssuedInFuture)
        );
        claims.iat = now + 20; // within leeway
        assert!(ring.verify_access(&ring.sign(&claims)).is_ok());
        claims.typ = "refresh".into();
        assert_eq!(
            ring.verify_access(&ring.sign(&claims)),
            Err(TokenError::WrongType)
        );
    }

    #[test]
    fn a_remembered_token_vouches_for_no_other() {
        let ring = KeyRing::from_args(&args(Some(KEY_A), None)).unwrap();
        let (user, sid) = (Uuid::new_v4(), Uuid::new_v4());
        let token = ring.sign_access(user, sid, 60);
        let verified = ring.verify_access_remembered(&token).unwrap();
        assert_eq!((verified.user_id, verified.session_id), (user, sid));
        assert_eq!(ring.verify_access_remembered(&token), Ok(verified));
        // The same claims under another signature, and another user's claims under the
        // remembered signature: both are verified in full, and refused.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
        let other_signature = format!("{signed}.{flipped}{}", &signature[1..]);
        let other_claims = ring.sign_access(Uuid::new_v4(), sid, 60);
        let (other_signed, _) = other_claims.rsplit_once('.').unwrap();
        for forged in [other_signature, format!("{other_signed}.{signature}")] {
            assert!(
                matches!(
                    ring.verify_access_remembered(&forged),
                    Err(TokenError::Invalid(_))
                ),
                "{forged}"
            );
        }
    }

    /// A token remembered while valid is refused once it expires: on a remembered token only
    /// `exp` is checked, so that check must be there. (Takes about 2 s: the token is made to
    /// expire a second after it is first used.)
    #[test]
    fn a_remembered_token_is_refused_once_it_expires() {
        let ring = KeyRing::from_args(&args(Some(KEY_A), None)).unwrap();
        let leeway = i64::try_from(ring.leeway_seconds).unwrap();
        // Remembered while valid: a token that expires (leeway included) a second from now. A
        // stall past that second before its first use only means another try with a new one.
        let (token, exp) = (0..5)
            .find_map(|_| {
                let now = Utc::now().timestamp();
                let exp = now - leeway + 1;
                let token = ring.sign(&access_claims(now - 60, exp));
                ring.verify_access_remembered(&token)
                    .is_ok()
                    .then_some((token, exp))
            })
            .expect("a token a second from expiry verifies");
        while Utc::now().timestamp() <= exp + leeway {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(matches!(
            ring.verify_access_remembered(&token),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let ring = KeyRing::from_args(&args(Some(KEY_A), None)).unwrap();
        let printed = format!("{ring:?} {:?}", args(Some(KEY_A), None));
        assert!(!printed.contains(KEY_A), "{printed}");
    }
}
