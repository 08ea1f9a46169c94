use common::token_attacks::{forged_tokens, sign, valid_claims};
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::helpers::{JWT_KEY, assert_problem, spawn_app, spawn_with};

#[tokio::test]
async fn every_forged_or_invalid_access_token_is_401() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    let me: Value = app
        .me(login["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let user = me["id"].as_str().unwrap().parse().unwrap();
    for (attack, token) in forged_tokens(JWT_KEY.as_bytes(), user) {
        let response = app.me(&token).await;
        assert_eq!(response.status(), 401, "{attack} was accepted");
        assert_problem(response, 401).await;
    }
}

#[tokio::test]
async fn a_refresh_token_is_not_an_access_token() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    assert_problem(app.me(login["refresh_token"].as_str().unwrap()).await, 401).await;
}

#[tokio::test]
async fn a_token_without_kid_is_checked_against_the_signing_key() {
    let app = spawn_app().await;
    let (_, login) = app.logged_in_user().await;
    let me: Value = app
        .me(login["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let user = me["id"].as_str().unwrap().parse().unwrap();
    let sid = common::token_attacks::payload(login["access_token"].as_str().unwrap())["sid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let token = sign(
        &valid_claims(user, sid),
        JWT_KEY.as_bytes(),
        Algorithm::HS256,
        None,
    );
    assert_eq!(app.me(&token).await.status(), 200);
}

#[tokio::test]
async fn a_key_ring_signs_with_its_first_key_and_verifies_with_all() {
    let old = "old-key-old-key-old-key-old-key-old-key!";
    let new = "new-key-new-key-new-key-new-key-new-key!";
    let before = spawn_with(&["--jwt-keys", &format!("v1:{old}")]).await;
    let (_, login) = before.logged_in_user().await;
    let old_token = login["access_token"].as_str().unwrap().to_owned();

    let ring = format!("v2:{new},v1:{old}");
    let after = crate::helpers::spawn_on(&before.database_url, &["--jwt-keys", &ring]).await;
    assert_eq!(
        after.me(&old_token).await.status(),
        200,
        "old tokens keep working"
    );
    let (_, login) = after.logged_in_user().await;
    let new_token = login["access_token"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(new_token)
            .unwrap()
            .kid
            .as_deref(),
        Some("v2")
    );
    assert_eq!(
        before.me(new_token).await.status(),
        401,
        "v2 is unknown to the old ring"
    );
}
