//! Rotating the shared JWT key without logging anyone out, walked through on both services:
//! add the new key second, make it the signer, retire the old one.

use serde_json::{Value, json};

use crate::helpers::{fresh_database, spawn_auth, spawn_on};

const OLD: &str = "old-signing-key-old-signing-key-0001";
const NEW: &str = "new-signing-key-new-signing-key-0002";

struct Deployment {
    auth: String,
    tasks: String,
}

/// Both services rolled to the key ring `ring` (same database, as a rolling update leaves it).
async fn roll(database: &str, ring: &str) -> Deployment {
    let (auth, _) = spawn_auth(database, &["--jwt-keys", ring]).await;
    let tasks = spawn_on(database, &["--jwt-keys", ring]).await;
    Deployment {
        auth,
        tasks: tasks.address,
    }
}

impl Deployment {
    async fn login(&self, client: &reqwest::Client) -> String {
        let credentials =
            json!({"email": "rotate@example.com", "password": "correct horse battery"});
        let body: Value = client
            .post(format!("{}/api/v1/auth/login", self.auth))
            .json(&credentials)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// The statuses of `token` at auth-service's /me and task-service's list.
    async fn accepts(&self, client: &reqwest::Client, token: &str) -> (u16, u16) {
        let me = client
            .get(format!("{}/api/v1/auth/me", self.auth))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let tasks = client
            .get(format!("{}/api/v1/tasks", self.tasks))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (me.status().as_u16(), tasks.status().as_u16())
    }
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn rotating_the_key_in_four_steps_logs_nobody_out() {
    let database = fresh_database().await;
    let client = reqwest::Client::new();

    // 0. Running with the old key only.
    let v0 = roll(&database, &format!("old:{OLD}")).await;
    let credentials = json!({"email": "rotate@example.com", "password": "correct horse battery"});
    let registered = client
        .post(format!("{}/api/v1/auth/register", v0.auth))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let old_token = v0.login(&client).await;
    assert_eq!(kid(&old_token), "old");
    assert_eq!(v0.accepts(&client, &old_token).await, (200, 200));

    // 1. Add the new key second: it verifies everywhere before anything is signed with it.
    let v1 = roll(&database, &format!("old:{OLD},new:{NEW}")).await;
    assert_eq!(v1.accepts(&client, &old_token).await, (200, 200));
    assert_eq!(
        kid(&v1.login(&client).await),
        "old",
        "the first key still signs"
    );

    // 2. Move the new key first: new tokens carry it; old tokens still verify.
    let v2 = roll(&database, &format!("new:{NEW},old:{OLD}")).await;
    let new_token = v2.login(&client).await;
    assert_eq!(kid(&new_token), "new");
    assert_eq!(v2.accepts(&client, &new_token).await, (200, 200));
    assert_eq!(v2.accepts(&client, &old_token).await, (200, 200));
    // A replica still on step 1 accepts the new tokens too: the roll needs no ordering.
    assert_eq!(v1.accepts(&client, &new_token).await, (200, 200));

    // 3. Retire the old key (after one access-token lifetime in real life).
    let v3 = roll(&database, &format!("new:{NEW}")).await;
    assert_eq!(v3.accepts(&client, &new_token).await, (200, 200));
    assert_eq!(v3.accepts(&client, &old_token).await, (401, 401));
}
