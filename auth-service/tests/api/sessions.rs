//! `GET /sessions` and `DELETE /sessions/{id}`: a user sees their live sessions and ends one.

use crate::helpers::{PASSWORD, assert_problem, email, session_id, spawn_app};

#[tokio::test]
async fn the_live_sessions_are_listed_with_the_callers_marked_current() {
    let app = spawn_app().await;
    let email = email();
    assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
    let mut logins = Vec::new();
    for agent in ["phone/1.0", "laptop/2.0", "ended/3.0"] {
        let response = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .header("user-agent", agent)
            .json(&serde_json::json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        logins.push(response.json::<serde_json::Value>().await.unwrap());
    }
    assert_eq!(
        app.logout(logins[2]["refresh_token"].as_str().unwrap())
            .await
            .status(),
        204
    );

    let caller = logins[1]["access_token"].as_str().unwrap();
    let sessions = app.sessions(caller).await;
    assert_eq!(
        sessions.len(),
        2,
        "the ended session is not listed: {sessions:?}"
    );
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], session_id(caller));
    assert_eq!(current[0]["user_agent"], "laptop/2.0");
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(
        other["id"],
        session_id(logins[0]["access_token"].as_str().unwrap())
    );
    assert_eq!(other["user_agent"], "phone/1.0");
    for session in &sessions {
        assert_eq!(session["ip"], "127.0.0.1");
        assert!(
            at(&session["expires_at"]) > at(&session["created_at"]),
            "{session}"
        );
        assert_eq!(session["last_used_at"], session["created_at"]);
    }

    // A refresh is a use.
    let refreshed = app
        .refresh(logins[0]["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status(), 200);
    let sessions = app.sessions(caller).await;
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    assert!(at(&other["last_used_at"]) > at(&other["created_at"]));
}

fn at(timestamp: &serde_json::Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(timestamp.as_str().expect("a timestamp")).unwrap()
}

#[tokio::test]
async fn ending_a_session_kills_its_tokens_and_no_other() {
    let app = spawn_app().await;
    let (email, mine) = app.logged_in_user().await;
    let other = app.another_session(&email).await;
    let access = mine["access_token"].as_str().unwrap();
    let other_id = session_id(other["access_token"].as_str().unwrap());

    assert_eq!(app.end_session(access, &other_id).await.status(), 204);
    assert_problem(app.me(other["access_token"].as_str().unwrap()).await, 401).await;
    assert_problem(
        app.refresh(other["refresh_token"].as_str().unwrap()).await,
        401,
    )
    .await;
    assert_eq!(app.me(access).await.status(), 200);
    let listed = app.sessions(access).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], session_id(access));
    // Ended is not live: a second end finds nothing.
    assert_problem(app.end_session(access, &other_id).await, 404).await;
}

#[tokio::test]
async fn another_users_session_or_an_unknown_id_is_404() {
    let app = spawn_app().await;
    let (_, alice) = app.logged_in_user().await;
    let (_, mallory) = app.logged_in_user().await;
    let alices = session_id(alice["access_token"].as_str().unwrap());
    let attacker = mallory["access_token"].as_str().unwrap();

    let body = assert_problem(app.end_session(attacker, &alices).await, 404).await;
    assert_eq!(body["detail"], "no such session");
    assert_problem(
        app.end_session(attacker, &uuid::Uuid::new_v4().to_string())
            .await,
        404,
    )
    .await;
    assert_problem(app.end_session(attacker, "not-a-uuid").await, 400).await;
    assert_eq!(
        app.me(alice["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    assert_eq!(
        app.sessions(attacker).await.len(),
        1,
        "mallory sees only her own"
    );
}

#[tokio::test]
async fn sessions_need_a_bearer_token() {
    let app = spawn_app().await;
    let list = app
        .call(reqwest::Method::GET, "/api/v1/auth/sessions", None, None)
        .await;
    assert_problem(list, 401).await;
    let end = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/auth/sessions/{}", uuid::Uuid::new_v4()),
            Some("not-a-token"),
            None,
        )
        .await;
    assert_problem(end, 401).await;
}

/// A session whose tokens have all expired, or one started before sessions had an absolute
/// lifetime (no `ends_at`) that is past it, has ended: it is not listed, and ending it is a 404
/// like any other ended session.
#[tokio::test]
async fn expired_sessions_and_old_sessions_past_their_lifetime_are_neither_listed_nor_ended() {
    let app = spawn_app().await;
    let email = email();
    assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let login: serde_json::Value = app.login(&email, PASSWORD).await.json().await.unwrap();
        sessions.push(session_id(login["access_token"].as_str().unwrap()));
    }
    let caller_login: serde_json::Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    let caller = caller_login["access_token"].as_str().unwrap();
    let db = app.db().await;
    let (expired, old, young_old, access_only) =
        (&sessions[0], &sessions[1], &sessions[2], &sessions[3]);
    // Refresh tokens gone: `expired` has nothing left; `access_only` has an access token good for
    // an hour more, and is listed until then.
    sqlx::query(
        "UPDATE auth.refresh_tokens SET expires_at = now() - interval '1 second'
         WHERE session_id = ANY($1::uuid[])",
    )
    .bind([expired.clone(), access_only.clone()])
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE auth.sessions
         SET access_expires_at = CASE WHEN id = $1::uuid THEN now() + interval '1 hour'
                                      ELSE now() - interval '1 second' END
         WHERE id = ANY($2::uuid[])",
    )
    .bind(access_only)
    .bind([
        expired.clone(),
        old.clone(),
        young_old.clone(),
        access_only.clone(),
    ])
    .execute(&db)
    .await
    .unwrap();
    // Without `ends_at`, as a release before it started them: one past the 90-day lifetime,
    // one within it.
    for (session, age) in [(old, "100 days"), (young_old, "10 days")] {
        sqlx::query(
            "UPDATE auth.sessions SET ends_at = NULL, created_at = now() - $2::interval
             WHERE id = $1::uuid",
        )
        .bind(session)
        .bind(age)
        .execute(&db)
        .await
        .unwrap();
    }

    let listing = app.sessions(caller).await;
    let listed: Vec<String> = listing
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.contains(young_old) && !listed.contains(expired) && !listed.contains(old));
    let access_only_ends = listing
        .iter()
        .find(|s| s["id"] == access_only.as_str())
        .map(|s| at(&s["expires_at"]).with_timezone(&chrono::Utc))
        .expect("listed while its access token works");
    // Set an hour ahead before this read: still ahead, and no further (its absolute end, which
    // the listing showed before, is 90 days away).
    let now = chrono::Utc::now();
    assert!(
        now < access_only_ends && access_only_ends <= now + chrono::Duration::hours(1),
        "ends with its access token: {access_only_ends}"
    );
    for ended in [expired, old] {
        assert_problem(app.end_session(caller, ended).await, 404).await;
    }
    assert_eq!(app.end_session(caller, young_old).await.status(), 204);
}
