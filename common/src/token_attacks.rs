//! Forged access tokens for tests: every way a token must be refused. Both services' test
//! suites send each of these and expect a 401.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

/// Claims of a valid access token for `user` in session `sid`.
pub fn valid_claims(user: Uuid, sid: Uuid) -> Value {
    let now = Utc::now().timestamp();
    json!({
        "sub": user, "iat": now, "nbf": now, "exp": now + 3600,
        "iss": "todo-auth", "aud": "todo-api", "jti": Uuid::new_v4(), "sid": sid, "typ": "access",
    })
}

/// Signs `claims` with `key` under `alg` and `kid`.
pub fn sign(claims: &Value, key: &[u8], alg: Algorithm, kid: Option<&str>) -> String {
    crate::jwt_hmac::install();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key)).expect("signing")
}

/// The claims of `token`, unverified (tests read what the service issued).
pub fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON claims")
}

fn without(claims: &Value, field: &str) -> Value {
    let mut claims = claims.clone();
    claims.as_object_mut().expect("object").remove(field);
    claims
}

fn with(claims: &Value, field: &str, value: Value) -> Value {
    let mut claims = claims.clone();
    claims[field] = value;
    claims
}

/// `(what the attack is, the token)` for each forged token, given the services' real key.
pub fn forged_tokens(key: &[u8], user: Uuid) -> Vec<(&'static str, String)> {
    let claims = valid_claims(user, Uuid::new_v4());
    let now = Utc::now().timestamp();
    let hs256 = |c: &Value| sign(c, key, Algorithm::HS256, Some("default"));
    let valid = hs256(&claims);
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "typ": "JWT"})),
        encode(&claims)
    );
    let tampered = {
        let parts: Vec<&str> = valid.split('.').collect();
        let other = with(&claims, "sub", json!(Uuid::new_v4()));
        format!("{}.{}.{}", parts[0], encode(&other), parts[2])
    };
    vec![
        ("alg none", alg_none),
        (
            "wrong key",
            sign(
                &claims,
                b"another-secret-key-that-is-32-bytes!!",
                Algorithm::HS256,
                Some("default"),
            ),
        ),
        (
            "HS512 with the right key",
            sign(&claims, key, Algorithm::HS512, Some("default")),
        ),
        (
            "unknown kid",
            sign(&claims, key, Algorithm::HS256, Some("nope")),
        ),
        (
            "expired",
            hs256(&with(
                &with(&claims, "exp", json!(now - 120)),
                "iat",
                json!(now - 3600),
            )),
        ),
        (
            "not yet valid",
            hs256(&with(&claims, "nbf", json!(now + 600))),
        ),
        (
            "issued in the future",
            hs256(&with(&claims, "iat", json!(now + 600))),
        ),
        ("missing exp", hs256(&without(&claims, "exp"))),
        ("missing iat", hs256(&without(&claims, "iat"))),
        ("missing sid", hs256(&without(&claims, "sid"))),
        ("missing typ", hs256(&without(&claims, "typ"))),
        (
            "wrong audience",
            hs256(&with(&claims, "aud", json!("someone-else"))),
        ),
        ("wrong issuer", hs256(&with(&claims, "iss", json!("evil")))),
        (
            "refresh typ",
            hs256(&with(&claims, "typ", json!("refresh"))),
        ),
        (
            "sub not a uuid",
            hs256(&with(&claims, "sub", json!("admin"))),
        ),
        ("tampered payload", tampered),
        ("not a jwt", "abc.def".to_owned()),
    ]
}
