//! Re-sealing stored secrets so that each is sealed for its row under the current master
//! key, and holds the decrypted `clientSecret` where an RSA key is configured.
//!
//! Three kinds of stored value are rewritten:
//! - `v1:` values, which older versions sealed bound to nothing (they would still open after
//!   being copied to another row); today's `v2:` seal is bound to its table, column and row
//!   (`kitsync_secrets::Place`), and `Sealer::open` refuses `v1:`;
//! - values that open only with a previous master key (`secrets.previous_master_keys`, a
//!   rotation): sealed again under the current key, so the previous one can be removed;
//! - app secrets stored as the marketplace's RSA ciphertext (no RSA key was configured when
//!   they arrived) that a configured RSA key now decrypts: stored decrypted, so a later RSA
//!   key rotation does not strand them.
//!
//! The sealed columns are listed in [`COLUMNS`] (created by migrations
//! `m20261122_000001_directory`, `m20261129_000007_webhooks` and `m20261203_000012_login`).
//!
//! - Safe beside running processes: a row is only updated if it still holds the value that
//!   was read (compare-and-set in the `UPDATE`), so a concurrent write is never overwritten;
//!   each row is its own statement, so no lock is held across rows and an apply transaction
//!   cannot deadlock with it.
//! - Idempotent: rewritten rows no longer match, so a second run rewrites nothing. Rows are
//!   read in key order, a page at a time, so memory stays bounded on any table size.
//! - Cheap when there is nothing to do: without previous master keys and without an RSA key
//!   only `v1:` rows are read; otherwise every sealed value is opened once (AES-GCM, about a
//!   microsecond each).
//! - A value no configured key opens is left as it is and reported with its row's key, never
//!   its value.
use anyhow::Context as _;
use kitsync_secrets::{Opened, Place, RsaDecryptor, SealedKind, Sealer};
use kitsync_sql::Sql;
use sea_orm::{ConnectionTrait as _, DatabaseConnection};
use secrecy::{ExposeSecret as _, SecretString};

/// Rows read per page.
const PAGE: u64 = 200;

/// A column that holds sealed secrets, and how to name the place of one of its rows.
struct SealedColumn {
    table: &'static str,
    column: &'static str,
    /// The primary key, in order.
    key: &'static [&'static str],
    place: for<'a> fn(&'a [String]) -> Place<'a>,
    /// May hold `SealedKind::RsaCiphertext` (only app secrets do).
    rsa_ciphertext: bool,
}

fn app_place(key: &[String]) -> Place<'_> {
    Place::app_client_secret(&key[0], &key[1])
}

fn webhook_place(key: &[String]) -> Place<'_> {
    Place::webhook_secret(&key[0])
}

fn signing_key_place(key: &[String]) -> Place<'_> {
    Place::oidc_signing_key(&key[0])
}

fn kit_tokens_place(key: &[String]) -> Place<'_> {
    Place::oidc_kit_tokens(&key[0])
}

const COLUMNS: [SealedColumn; 4] = [
    SealedColumn {
        table: "apps",
        column: "client_secret",
        key: &["tenant_id", "app_id"],
        place: app_place,
        rsa_ciphertext: true,
    },
    SealedColumn {
        table: "webhook_endpoints",
        column: "secret",
        key: &["id"],
        place: webhook_place,
        rsa_ciphertext: false,
    },
    SealedColumn {
        table: "oidc_keys",
        column: "private_key",
        key: &["kid"],
        place: signing_key_place,
        rsa_ciphertext: false,
    },
    SealedColumn {
        table: "oidc_sessions",
        column: "kit_tokens",
        key: &["id"],
        place: kit_tokens_place,
        rsa_ciphertext: false,
    },
];

/// What a pass did and found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// `v1:` values sealed again for their rows.
    pub legacy: usize,
    /// Values sealed again under the current master key.
    pub from_previous_key: usize,
    /// RSA ciphertexts stored decrypted.
    pub decrypted: usize,
    /// Values no configured master key opens (left as they are).
    pub unopenable: usize,
    /// RSA ciphertexts no configured RSA key decrypts (left as they are).
    pub undecryptable: usize,
    /// Rows that changed while this pass rewrote them: the concurrent write stands, and the
    /// next pass looks at them again.
    pub raced: usize,
}

impl Resealed {
    /// Rows rewritten.
    #[must_use]
    pub fn rewritten(&self) -> usize {
        self.legacy + self.from_previous_key + self.decrypted
    }

    fn add(&mut self, o: Self) {
        self.legacy += o.legacy;
        self.from_previous_key += o.from_previous_key;
        self.decrypted += o.decrypted;
        self.unopenable += o.unopenable;
        self.undecryptable += o.undecryptable;
        self.raced += o.raced;
    }
}

/// One pass over every sealed column (see the module documentation).
///
/// # Errors
/// A database error, or the cipher failed.
pub async fn reseal_secrets(
    db: &DatabaseConnection,
    sealer: &Sealer,
    rsa: Option<&RsaDecryptor>,
) -> anyhow::Result<Resealed> {
    reseal_paged(db, sealer, rsa, PAGE).await
}

async fn reseal_paged(
    db: &DatabaseConnection,
    sealer: &Sealer,
    rsa: Option<&RsaDecryptor>,
    page: u64,
) -> anyhow::Result<Resealed> {
    let mut total = Resealed::default();
    for col in &COLUMNS {
        let found = reseal_column(db, sealer, rsa, col, page)
            .await
            .with_context(|| format!("re-sealing {}.{}", col.table, col.column))?;
        total.add(found);
    }
    Ok(total)
}

/// What to do with one stored value.
enum Verdict {
    Keep,
    /// Seal this again for its row under the current key; the counter it adds to.
    Rewrite(SealedKind, SecretString, fn(&mut Resealed)),
    Unopenable,
    Undecryptable,
}

fn judge(
    sealer: &Sealer,
    rsa: Option<&RsaDecryptor>,
    col: &SealedColumn,
    old: &str,
    place: &Place<'_>,
) -> Verdict {
    let legacy = old.starts_with("v1:");
    let opened = if legacy {
        sealer.open_legacy_v1(old).map(|(kind, secret)| Opened {
            kind,
            secret,
            under_previous_key: false,
        })
    } else {
        sealer.open_detailed(old, place)
    };
    let Ok(opened) = opened else {
        return Verdict::Unopenable;
    };
    let stale = legacy || opened.under_previous_key;
    let count: fn(&mut Resealed) = if legacy {
        |r| r.legacy += 1
    } else {
        |r| r.from_previous_key += 1
    };
    if let (true, SealedKind::RsaCiphertext, Some(rsa)) = (col.rsa_ciphertext, opened.kind, rsa) {
        return match rsa.decrypt(opened.secret.expose_secret()) {
            Ok(plain) => Verdict::Rewrite(SealedKind::Plain, plain, |r| r.decrypted += 1),
            // Keep the ciphertext (a key configured later may decrypt it), sealed afresh if
            // its seal is stale.
            Err(_) if stale => Verdict::Rewrite(opened.kind, opened.secret, count),
            Err(_) => Verdict::Undecryptable,
        };
    }
    if stale {
        Verdict::Rewrite(opened.kind, opened.secret, count)
    } else {
        Verdict::Keep
    }
}

async fn reseal_column(
    db: &DatabaseConnection,
    sealer: &Sealer,
    rsa: Option<&RsaDecryptor>,
    col: &SealedColumn,
    page: u64,
) -> anyhow::Result<Resealed> {
    let keys = col.key.join(", ");
    // Only v1 values can need work unless a previous key or an RSA key is configured.
    let every_value = sealer.previous_keys() > 0 || (col.rsa_ciphertext && rsa.is_some());
    let filter = if every_value {
        format!("{} <> ''", col.column)
    } else {
        format!("substr({}, 1, 3) = 'v1:'", col.column)
    };
    let mut after: Option<Vec<String>> = None;
    let mut found = Resealed::default();
    loop {
        // Keyset paging on the primary key: rows left as they are still match, so "the
        // first page of matching rows" would return them forever.
        let mut sql = Sql::new(db.get_database_backend());
        sql.push(&format!(
            "SELECT {keys}, {c} FROM {t} WHERE {filter}",
            c = col.column,
            t = col.table
        ));
        if let Some(last) = &after {
            sql.push(&format!(" AND ({keys}) > "))
                .bind_tuple(last.iter().map(String::as_str));
        }
        sql.push(&format!(" ORDER BY {keys} LIMIT {page}"));
        let rows = db.query_all(sql.build()).await?;
        let n = col.key.len();
        for row in &rows {
            let key = (0..n)
                .map(|i| row.try_get_by_index::<String>(i))
                .collect::<Result<Vec<_>, _>>()?;
            let old: String = row.try_get_by_index(n)?;
            let place = (col.place)(&key);
            match judge(sealer, rsa, col, &old, &place) {
                Verdict::Keep => {}
                Verdict::Unopenable => {
                    tracing::warn!(
                        table = col.table,
                        key = %key.join("/"),
                        "a sealed secret opens with no configured master key; left as it is"
                    );
                    found.unopenable += 1;
                }
                Verdict::Undecryptable => {
                    tracing::warn!(
                        table = col.table,
                        key = %key.join("/"),
                        "a stored RSA ciphertext decrypts with no configured RSA key; left as it is"
                    );
                    found.undecryptable += 1;
                }
                Verdict::Rewrite(kind, plain, count) => {
                    let new = sealer.seal(kind, plain.expose_secret(), &place)?;
                    if replace_if_unchanged(db, col, &key, &old, &new).await? {
                        count(&mut found);
                    } else {
                        found.raced += 1;
                    }
                }
            }
            after = Some(key);
        }
        if (rows.len() as u64) < page {
            return Ok(found);
        }
    }
}

/// Writes `new` where the row `key` still holds `old`; false when a concurrent writer got
/// there first (its value stands; if that is `v1:` again, the next run re-seals it).
async fn replace_if_unchanged(
    db: &DatabaseConnection,
    col: &SealedColumn,
    key: &[String],
    old: &str,
    new: &str,
) -> anyhow::Result<bool> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(&format!("UPDATE {} SET {} = ", col.table, col.column))
        .bind(new)
        .push(" WHERE ");
    let old = old.to_owned();
    let conds = col.key.iter().zip(key).chain([(&col.column, &old)]);
    sql.joined(conds, " AND ", |sql, (name, value)| {
        sql.push(name).push(" = ").bind(value.as_str());
    });
    Ok(db.execute(sql.build()).await?.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use kitsync_secrets::{SealedKind, SecretsError};
    use secrecy::SecretString;

    /// Values an older kitsync sealed (format v1) under [`MASTER`], made independently with
    /// Python's `cryptography` (AES-256-GCM, associated data `kitsync-v1`).
    const MASTER: &str = "EyDRv5kwtLyR/HDhBnwtPs6PhaxYxGm3ktRoL4CdcFY=";
    const V1_CLIENT_SECRET: &str =
        "v1:Rk8R8dRt5hPtymI/2lHzrbAkGs5POV5rGmqq1nB8aFiQ/dTOyoS0xVSPV6mO0ulCdQ==";
    const V1_WEBHOOK_SECRET: &str = "v1:8H19X8xKBPdciIUVqhKQev2ycfclSFlM9mfFk/E7NC/A1s3sRa+5reIhupMo2MYiqIrLwV7eqBmMobkeZJg0b2vBPpcCPeVA2mO8";
    const WEBHOOK_PLAIN: &str = "whsec_bGVnYWN5LXdlYmhvb2stc2lnbmluZy1zZWNyZXQ=";

    fn sealer() -> Sealer {
        Sealer::from_master_key(&SecretString::from(MASTER.to_owned())).unwrap()
    }

    /// A freshly migrated database and the sealer of [`MASTER`].
    async fn fresh() -> (migrations::testing::TestDb, Sealer) {
        (migrations::testing::fresh_db().await.unwrap(), sealer())
    }

    async fn insert_app(db: &DatabaseConnection, tenant: &str, app: &str, secret: &str) {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("INSERT INTO apps (tenant_id, app_id, client_secret, client_id, test, deleted, version, fp, updated_at) VALUES (")
            .bind_list([tenant, app, secret])
            .push(", 'client', FALSE, FALSE, 1, 1, 1)");
        db.execute(sql.build()).await.unwrap();
    }

    async fn insert_webhook(db: &DatabaseConnection, id: &str, secret: &str) {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("INSERT INTO webhook_endpoints (id, secret, url, journal_cursor, state, next_attempt_at, created_at) VALUES (")
            .bind_list([id, secret])
            .push(", 'http://127.0.0.1:1/', 0, 'active', 0, 0)");
        db.execute(sql.build()).await.unwrap();
    }

    async fn app_secret(db: &DatabaseConnection, tenant: &str, app: &str) -> String {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("SELECT client_secret FROM apps WHERE tenant_id = ")
            .bind(tenant)
            .push(" AND app_id = ")
            .bind(app);
        first_text(db, sql).await
    }

    async fn webhook_secret(db: &DatabaseConnection, id: &str) -> String {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("SELECT secret FROM webhook_endpoints WHERE id = ")
            .bind(id);
        first_text(db, sql).await
    }

    /// The first column of the one row `sql` selects.
    async fn first_text(db: &DatabaseConnection, sql: Sql) -> String {
        db.query_one(sql.build())
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index(0)
            .unwrap()
    }

    #[tokio::test]
    async fn v1_secrets_are_resealed_bound_to_their_rows_once() {
        let (tdb, sealer) = fresh().await;
        let db = &tdb.conn;
        // The same v1 value in two rows: each must end up sealed for its own row.
        insert_app(db, "t1", "a1", V1_CLIENT_SECRET).await;
        insert_app(db, "t2", "a2", V1_CLIENT_SECRET).await;
        let already = sealer
            .seal(
                SealedKind::Plain,
                "current",
                &Place::app_client_secret("t3", "a3"),
            )
            .unwrap();
        insert_app(db, "t3", "a3", &already).await;
        insert_app(db, "t4", "deleted", "").await;
        // Sealed under another master key: left alone, not counted, does not stop the run.
        let foreign = "v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        insert_app(db, "t5", "a5", foreign).await;
        insert_webhook(db, "whk_000000000001", V1_WEBHOOK_SECRET).await;

        assert_eq!(reseal_secrets(db, &sealer, None).await.unwrap().legacy, 3);

        for (t, a) in [("t1", "a1"), ("t2", "a2")] {
            let v = app_secret(db, t, a).await;
            assert!(v.starts_with("v2:"), "{t}/{a}: {v:.8}");
            let (kind, plain) = sealer.open(&v, &Place::app_client_secret(t, a)).unwrap();
            assert_eq!(
                (kind, plain.expose_secret()),
                (SealedKind::Plain, "legacy-client-secret")
            );
        }
        let t1 = app_secret(db, "t1", "a1").await;
        assert!(matches!(
            sealer.open(&t1, &Place::app_client_secret("t2", "a2")),
            Err(SecretsError::Unseal)
        ));
        assert!(sealer.open(&t1, &Place::webhook_secret("t1")).is_err());
        assert_eq!(app_secret(db, "t3", "a3").await, already);
        assert_eq!(app_secret(db, "t4", "deleted").await, "");
        assert_eq!(app_secret(db, "t5", "a5").await, foreign);
        let hook = webhook_secret(db, "whk_000000000001").await;
        let (_, plain) = sealer
            .open(&hook, &Place::webhook_secret("whk_000000000001"))
            .unwrap();
        assert_eq!(plain.expose_secret(), WEBHOOK_PLAIN);

        assert_eq!(
            reseal_secrets(db, &sealer, None).await.unwrap().rewritten(),
            0
        );
        assert_eq!(app_secret(db, "t1", "a1").await, t1, "nothing rewritten");
        tdb.cleanup().await;
    }

    #[tokio::test]
    async fn pages_cover_every_row_past_unopenable_ones() {
        let (tdb, sealer) = fresh().await;
        let db = &tdb.conn;
        // Unopenable rows sort first and fill whole pages: paging must move past them.
        for i in 0..4 {
            insert_app(
                db,
                "t0",
                &format!("bad{i}"),
                "v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )
            .await;
        }
        for i in 0..5 {
            insert_app(db, "t1", &format!("a{i}"), V1_CLIENT_SECRET).await;
        }
        for i in 0..3 {
            insert_webhook(db, &format!("whk_{i:012}"), V1_WEBHOOK_SECRET).await;
        }
        assert_eq!(reseal_paged(db, &sealer, None, 2).await.unwrap().legacy, 8);
        for i in 0..5 {
            let a = format!("a{i}");
            let v = app_secret(db, "t1", &a).await;
            assert!(sealer.open(&v, &Place::app_client_secret("t1", &a)).is_ok());
        }
        for i in 0..3 {
            let id = format!("whk_{i:012}");
            let v = webhook_secret(db, &id).await;
            assert!(sealer.open(&v, &Place::webhook_secret(&id)).is_ok());
        }
        assert_eq!(
            reseal_paged(db, &sealer, None, 2)
                .await
                .unwrap()
                .rewritten(),
            0
        );
        tdb.cleanup().await;
    }

    #[tokio::test]
    async fn a_row_changed_since_it_was_read_is_not_overwritten() {
        let (tdb, sealer) = fresh().await;
        let db = &tdb.conn;
        insert_app(db, "t1", "a1", V1_CLIENT_SECRET).await;
        let key = vec!["t1".to_owned(), "a1".to_owned()];
        let place = Place::app_client_secret("t1", "a1");
        // A worker applies a newer secret between our read and our write.
        let newer = sealer.seal(SealedKind::Plain, "newer", &place).unwrap();
        assert!(
            replace_if_unchanged(db, &COLUMNS[0], &key, V1_CLIENT_SECRET, &newer)
                .await
                .unwrap()
        );
        let stale = sealer
            .seal(SealedKind::Plain, "legacy-client-secret", &place)
            .unwrap();
        assert!(
            !replace_if_unchanged(db, &COLUMNS[0], &key, V1_CLIENT_SECRET, &stale)
                .await
                .unwrap()
        );
        assert_eq!(app_secret(db, "t1", "a1").await, newer);
        tdb.cleanup().await;
    }
}
