//! API tokens: issued once, stored hashed, scoped, tenant-bound, revocable.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

mod common;

use common::*;
use kitsync_domain::Scope;
use kitsync_store::Actor;
use kitsync_store::StoreError;
use sea_orm::{ConnectionTrait, Statement};
use secrecy::ExposeSecret;

#[tokio::test]
async fn tokens_authenticate_until_revoked_and_are_stored_hashed() {
    let (db, s) = store().await;
    let (reader, secret) = s
        .create_token(
            &Actor::Cli,
            "dashboard",
            &[Scope::StatsRead, Scope::DirectoryRead],
            None,
        )
        .await
        .unwrap();
    let (bound, bound_secret) = s
        .create_token(
            &Actor::Cli,
            "app of t1",
            &[Scope::DirectoryRead],
            Some("t1"),
        )
        .await
        .unwrap();

    let got = s
        .authenticate(secret.expose_secret())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, reader);
    assert_eq!(got.scopes, vec![Scope::DirectoryRead, Scope::StatsRead]);
    assert!(got.allows(Scope::StatsRead, Some("any")));
    assert!(!got.allows(Scope::ActivityWrite, None));

    let got = s
        .authenticate(bound_secret.expose_secret())
        .await
        .unwrap()
        .unwrap();
    assert!(got.allows(Scope::DirectoryRead, Some("t1")));
    assert!(!got.allows(Scope::DirectoryRead, Some("t2")));
    assert!(
        !got.allows(Scope::DirectoryRead, None),
        "a bound token cannot list all tenants"
    );

    // Wrong secret, unknown id, garbage: all simply unauthenticated.
    let wrong = format!("kst_{}_{}", reader.id, "A".repeat(43));
    for presented in [wrong.as_str(), "kst_0123456789ab_x", "", "Bearer x"] {
        assert_eq!(
            s.authenticate(presented).await.unwrap(),
            None,
            "{presented:?}"
        );
    }

    // Only the hash is stored.
    let stored: Vec<String> = db
        .conn
        .query_all(Statement::from_string(
            db.conn.get_database_backend(),
            "SELECT secret_hash FROM api_tokens".to_owned(),
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect();
    assert_eq!(stored.len(), 2);
    for h in &stored {
        assert!(!secret.expose_secret().contains(h.as_str()));
        assert!(!h.contains(secret.expose_secret().rsplit('_').next().unwrap()));
    }

    s.revoke_token(&Actor::Cli, &reader.id).await.unwrap();
    assert_eq!(s.authenticate(secret.expose_secret()).await.unwrap(), None);
    assert!(matches!(
        s.revoke_token(&Actor::Cli, &reader.id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.revoke_token(&Actor::Cli, "nope").await,
        Err(StoreError::NotFound(_))
    ));
    let listed = s.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .any(|t| t.id == reader.id && t.revoked_at.is_some()));
    assert!(listed
        .iter()
        .any(|t| t.id == bound.id && t.revoked_at.is_none()));
    db.cleanup().await;
}
