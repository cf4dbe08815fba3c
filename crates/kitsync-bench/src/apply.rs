//! `kitsync bench apply`: a 100 000-member tenant (200 authSync batches of 500) plus a
//! 10 000-department full sync, queued first, then drained by a real worker; next to raw
//! batched `INSERT … ON CONFLICT`s of the same rows, departments included (see
//! `raw_member_rows` and `raw_same_rows`).
use crate::Service;
use clap::Args;
use kitsync_domain::decide::Rank;
use kitsync_domain::{
    AuthChange, AuthOp, AuthUser, Command, FullOrgSnapshot, KitTime, OrgInfo, QueuedCallback, Role,
};
use kitsync_queue::OutgoingMessage;
use kitsync_sql::Sql;
use kitsync_store::tables::{AuthorizationRow, DepartmentRow, MemberRow, Row};
use kitsync_store::Store;
use kitsync_worker::Worker;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, Value};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// authSync callbacks of `--batch` users each.
    #[arg(long, default_value_t = 200)]
    callbacks: usize,
    /// Users per authSync callback.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Departments in the full sync.
    #[arg(long, default_value_t = 10_000)]
    departments: usize,
}

/// The `batch` users of authSync callback `i` of a tenant (`m0000000`, … in order).
pub(crate) fn member_users(i: usize, batch: usize) -> Vec<AuthUser> {
    (0..batch)
        .map(|u| AuthUser {
            user_name: format!("m{:07}", i * batch + u),
            name: Some(format!("Member {i} {u}")),
            org_code: Some(format!("d{:05}", (i * batch + u) % 10_000)),
            position: Some("Engineer".into()),
            employee_code: Some(format!("E{:07}", i * batch + u)),
            employee_type: Some(1),
            role: if u == 0 { Role::Admin } else { Role::User },
            enabled: true,
            mobile: Some("13800000000".into()),
            email: Some(format!("m{}@example.com", i * batch + u)),
            work_place: Some("Shenzhen".into()),
            entry_date: None,
            extension: None,
        })
        .collect()
}

pub(crate) async fn run<S: Service>(settings: S, a: ApplyArgs) -> anyhow::Result<()> {
    let db = settings.open_db().await?;
    let queue = settings.open_queue(&db).await?;
    let tenant = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let base = chrono::Utc::now().timestamp_millis();
    let members = a.callbacks * a.batch;

    // The raw baselines, on the same users and departments (see `raw_member_rows` and
    // `raw_same_rows`).
    let users: Vec<AuthUser> = (0..a.callbacks)
        .flat_map(|i| member_users(i, a.batch))
        .collect();
    let orgs: Vec<OrgInfo> = (0..a.departments)
        .map(|d| OrgInfo {
            org_code: format!("d{d:05}"),
            org_name: format!("Department {d}"),
            parent_code: (d > 0).then(|| format!("d{:05}", (d - 1) / 10)),
        })
        .collect();
    let raw_members = raw_member_rows(&db, &tenant, &users).await?;
    let raw_same = raw_same_rows(&db, &tenant, &users, &orgs).await?;
    drop(users);

    // Queue everything first, so the measurement is the worker alone.
    let mut commands = vec![Command::FullOrg(FullOrgSnapshot {
        tenant_id: tenant.clone(),
        instance_id: Some("bench-instance".into()),
        orgs,
        test: false,
        version: KitTime::from_millis(base),
    })];
    commands.extend(auth_commands(&tenant, a.callbacks, a.batch, base));
    let total_messages = publish(&queue, commands, base).await?;

    let store = Store::new(db.clone(), settings.store().clone());
    let worker = Worker::new(store.clone(), queue.clone(), settings.worker().clone());
    let stats = worker.stats();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let handle = tokio::spawn(async move { worker.run(rx).await });
    let deadline = Instant::now() + Duration::from_secs(1800);
    while stats.messages_acked.get() < total_messages {
        if Instant::now() > deadline {
            anyhow::bail!("the worker did not drain the queue within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let _ = tx.send(true);
    let _ = handle.await;
    let snapshot = store.snapshot(&tenant).await?;
    let rate = members as f64 / elapsed.as_secs_f64();
    let _ = queue.delete_topology().await;

    println!(
        "kitsync bench apply: {} authSync × {} users + one {}-department full sync, database {}, queue {}",
        a.callbacks,
        a.batch,
        a.departments,
        match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "PostgreSQL",
            _ => "SQLite",
        },
        queue.kind()
    );
    println!(
        "  applied                {:>10} members, {} departments in {:.2} s (worker batch {})",
        snapshot.members.len(),
        snapshot.departments.len(),
        elapsed.as_secs_f64(),
        settings.worker().batch_size
    );
    println!(
        "  members/s              {rate:>10.0}   (each: member + authorisation + journal rows)"
    );
    println!("  raw same rows          {raw_same:>10.0}   members/s (its member, authorisation and journal rows, and the departments' and their journal rows, batched INSERT … ON CONFLICT into copies of the tables)");
    println!("  raw member rows        {raw_members:>10.0}   members/s (the member row alone, 1 000 per INSERT … ON CONFLICT, bare table)");
    println!(
        "  ratio to same rows     {:>10.2}   (target ≥ 0.70)",
        rate / raw_same
    );
    println!(
        "  ratio to member rows   {:>10.2}   (what the authorisation and journal rows cost on top)",
        rate / raw_members
    );
    if snapshot.members.len() != members {
        anyhow::bail!(
            "expected {members} members, found {}",
            snapshot.members.len()
        );
    }
    queue.close().await;
    Ok(())
}

/// `callbacks` authSync grants of `batch` users each ([`member_users`]) to `tenant`, versioned
/// after `base` in order.
pub(crate) fn auth_commands(
    tenant: &str,
    callbacks: usize,
    batch: usize,
    base: i64,
) -> impl Iterator<Item = Command> + '_ {
    (0..callbacks).map(move |i| {
        Command::Auth(AuthChange {
            tenant_id: tenant.to_owned(),
            instance_id: Some("bench-instance".into()),
            app_id: "bench-app".into(),
            op: AuthOp::Add,
            users: member_users(i, batch),
            test: false,
            version: KitTime::from_millis(base + 1 + i as i64),
            time_stamp: None,
        })
    })
}

/// Queues `commands` as the ingress would have accepted them at `received_at_ms`; how many.
pub(crate) async fn publish(
    queue: &kitsync_queue::Queue,
    commands: impl IntoIterator<Item = Command>,
    received_at_ms: i64,
) -> anyhow::Result<u64> {
    let mut n = 0;
    for c in commands {
        let q = QueuedCallback {
            message_id: uuid::Uuid::now_v7().to_string(),
            received_at_ms,
            replay: None,
            command: c,
        };
        queue
            .publish(OutgoingMessage {
                message_id: q.message_id.clone(),
                body: q.to_bytes()?,
                replay: None,
            })
            .await?;
        n += 1;
    }
    Ok(n)
}

/// A scratch table for a raw baseline.
struct Scratch {
    name: String,
    extra: Vec<String>,
}

impl Scratch {
    /// A bare member table: the member columns, keyed by (tenant, user), no other index.
    async fn bare_members(db: &DatabaseConnection) -> anyhow::Result<Self> {
        let name = format!("bench_members_{}", uuid::Uuid::new_v4().simple());
        db.execute(Statement::from_string(
            db.get_database_backend(),
            format!(
                "CREATE TABLE {name} (tenant_id TEXT NOT NULL, user_name TEXT NOT NULL, name TEXT, org_code TEXT, \
                 position TEXT, employee_code TEXT, employee_type INTEGER, mobile TEXT, email TEXT, work_place TEXT, \
                 version BIGINT NOT NULL, PRIMARY KEY (tenant_id, user_name))"
            ),
        ))
        .await?;
        Ok(Self {
            name,
            extra: Vec::new(),
        })
    }

    /// An empty copy of a directory table with the same columns, keys and indexes (and,
    /// for the journal, an id sequence of its own).
    async fn copy_of(db: &DatabaseConnection, table: &str) -> anyhow::Result<Self> {
        let backend = db.get_database_backend();
        let name = format!("bench_{table}_{}", uuid::Uuid::new_v4().simple());
        let mut extra = Vec::new();
        let mut ddl = Vec::new();
        match backend {
            sea_orm::DatabaseBackend::Postgres => {
                ddl.push(format!(
                    "CREATE TABLE {name} (LIKE {table} INCLUDING ALL EXCLUDING DEFAULTS)"
                ));
                if table == "journal" {
                    let seq = format!("{name}_id_seq");
                    ddl.push(format!("CREATE SEQUENCE {seq}"));
                    ddl.push(format!(
                        "ALTER TABLE {name} ALTER COLUMN id SET DEFAULT nextval('{seq}')"
                    ));
                    extra.push(format!("DROP SEQUENCE IF EXISTS {seq}"));
                }
            }
            _ => {
                // SQLite has no LIKE: replay the table's own DDL under the new name.
                let rows = db
                    .query_all(Statement::from_sql_and_values(
                        backend,
                        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type DESC",
                        [table.into()],
                    ))
                    .await?;
                for row in rows {
                    let kind: String = row.try_get_by_index(0)?;
                    let object: String = row.try_get_by_index(1)?;
                    let sql: String = row.try_get_by_index(2)?;
                    ddl.push(if kind == "table" {
                        sql.replacen(
                            &format!("CREATE TABLE {table}"),
                            &format!("CREATE TABLE {name}"),
                            1,
                        )
                    } else {
                        sql.replacen(
                            &format!("{object} ON {table}"),
                            &format!("{name}_{object} ON {name}"),
                            1,
                        )
                    });
                }
            }
        }
        for sql in ddl {
            db.execute(Statement::from_string(backend, sql)).await?;
        }
        Ok(Self { name, extra })
    }

    /// Writes `rows` (`columns` each), as many per statement as the store's chunking rule
    /// allows, as `INSERT … ON CONFLICT (conflict) DO UPDATE` of every other column, or a
    /// plain `INSERT` when `conflict` is empty. Returns the seconds it took.
    async fn write(
        &self,
        db: &impl ConnectionTrait,
        columns: &[&str],
        conflict: &[&str],
        rows: Vec<Vec<Value>>,
    ) -> anyhow::Result<f64> {
        let backend = db.get_database_backend();
        let started = Instant::now();
        let per_statement = kitsync_sql::rows_per_statement(columns.len());
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let mut sql = Sql::new(backend);
            sql.push(&format!(
                "INSERT INTO {} ({}) VALUES ",
                self.name,
                columns.join(", ")
            ))
            // Moved, not cloned: the baseline pays for no copy kitsync does not make.
            .bind_rows(rows.by_ref().take(per_statement));
            if !conflict.is_empty() {
                sql.push(&format!(
                    " ON CONFLICT ({}) DO UPDATE SET ",
                    conflict.join(", ")
                ))
                .joined(
                    columns.iter().filter(|c| !conflict.contains(c)),
                    ", ",
                    |sql, c| {
                        sql.push(&format!("{c} = excluded.{c}"));
                    },
                );
            }
            db.execute(sql.build()).await?;
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// Writes typed directory rows, built as the store's write path builds them, keyed and
    /// updated as [`Scratch::write`] does. Returns the seconds it took.
    async fn write_rows<R: Row>(
        &self,
        db: &impl ConnectionTrait,
        rows: Vec<R>,
    ) -> anyhow::Result<f64> {
        let rows = rows.into_iter().map(Row::values).collect();
        self.write(db, R::COLUMNS, R::CONFLICT, rows).await
    }

    async fn drop(self, db: &DatabaseConnection) -> anyhow::Result<()> {
        let backend = db.get_database_backend();
        db.execute(Statement::from_string(
            backend,
            format!("DROP TABLE {}", self.name),
        ))
        .await?;
        for sql in self.extra {
            db.execute(Statement::from_string(backend, sql)).await?;
        }
        Ok(())
    }
}

/// Baseline A: the member rows alone (the profile columns and a version), into a bare
/// table keyed by (tenant, user). Members per second.
async fn raw_member_rows(
    db: &DatabaseConnection,
    tenant: &str,
    users: &[AuthUser],
) -> anyhow::Result<f64> {
    let table = Scratch::bare_members(db).await?;
    let rows = users
        .iter()
        .map(|u| {
            vec![
                tenant.into(),
                u.user_name.clone().into(),
                u.name.clone().into(),
                u.org_code.clone().into(),
                u.position.clone().into(),
                u.employee_code.clone().into(),
                u.employee_type.into(),
                u.mobile.clone().into(),
                u.email.clone().into(),
                u.work_place.clone().into(),
                1_i64.into(),
            ]
        })
        .collect();
    let secs = table
        .write(
            db,
            &[
                "tenant_id",
                "user_name",
                "name",
                "org_code",
                "position",
                "employee_code",
                "employee_type",
                "mobile",
                "email",
                "work_place",
                "version",
            ],
            &["tenant_id", "user_name"],
            rows,
        )
        .await?;
    table.drop(db).await?;
    Ok(users.len() as f64 / secs)
}

/// Baseline B: every row kitsync writes in the timed apply — each member, its
/// authorisation and its journal row, and each department of the full sync with its
/// journal row — into empty copies of the real tables (same keys and indexes). Members per
/// second, over the time of all of them, as kitsync's figure is.
async fn raw_same_rows(
    db: &DatabaseConnection,
    tenant: &str,
    users: &[AuthUser],
    orgs: &[OrgInfo],
) -> anyhow::Result<f64> {
    let now = chrono::Utc::now().timestamp_millis();
    let tables = SameRows::create(db).await?;
    let departments = Scratch::copy_of(db, DepartmentRow::TABLE).await?;
    let mut secs = departments
        .write_rows(
            db,
            orgs.iter()
                .map(|o| DepartmentRow {
                    tenant_id: tenant.to_owned(),
                    org_code: o.org_code.clone(),
                    org_name: o.org_name.clone(),
                    parent_code: o.parent_code.clone(),
                    test: false,
                    deleted: false,
                    version: 1,
                    fp: 7,
                    updated_at: now,
                })
                .collect(),
        )
        .await?;
    let journal_rows = orgs
        .iter()
        .map(|o| {
            let data = serde_json::json!({
                "orgCode": o.org_code, "orgName": o.org_name, "parentCode": o.parent_code,
            });
            (
                tenant,
                "department",
                o.org_code.clone(),
                "created",
                data.to_string(),
            )
        })
        .collect();
    secs += tables.write_journal(db, journal_rows, now).await?;
    departments.drop(db).await?;
    for chunk in users.chunks(500) {
        secs += tables
            .write(db, chunk.iter().map(|u| (tenant, u)), now)
            .await?;
    }
    tables.drop(db).await?;
    Ok(users.len() as f64 / secs)
}

/// Empty copies of the member, authorisation and journal tables (same keys and indexes),
/// for raw writes of the rows kitsync writes for the members an authSync grants.
pub(crate) struct SameRows {
    members: Scratch,
    auths: Scratch,
    journal: Scratch,
}

impl SameRows {
    pub(crate) async fn create(db: &DatabaseConnection) -> anyhow::Result<Self> {
        Ok(Self {
            members: Scratch::copy_of(db, MemberRow::TABLE).await?,
            auths: Scratch::copy_of(db, AuthorizationRow::TABLE).await?,
            journal: Scratch::copy_of(db, "journal").await?,
        })
    }

    /// The copy of the member table.
    pub(crate) fn members_table(&self) -> &str {
        &self.members.name
    }

    /// Writes, on `db` (a connection or a transaction), each user's member row, its
    /// authorisation of `bench-app` and its journal row, as batched `INSERT … ON CONFLICT`s
    /// (a plain `INSERT` for the journal), each table's rows built before its statements are
    /// timed. Returns the seconds the statements took.
    pub(crate) async fn write<'a>(
        &self,
        db: &impl ConnectionTrait,
        users: impl Iterator<Item = (&'a str, &'a AuthUser)> + Clone,
        now: i64,
    ) -> anyhow::Result<f64> {
        let mut secs = 0.0;
        let member_rows = users
            .clone()
            .map(|(tenant, u)| {
                MemberRow::of_user(tenant, u, Rank { version: 1, fp: 7 }, false, now)
            })
            .collect();
        secs += self.members.write_rows(db, member_rows).await?;
        let auth_rows = users
            .clone()
            .map(|(tenant, u)| AuthorizationRow {
                tenant_id: tenant.to_owned(),
                app_id: "bench-app".into(),
                user_name: u.user_name.clone(),
                role: u.role.as_str().into(),
                enabled: u.enabled,
                test: false,
                deleted: false,
                version: 1,
                fp: 7,
                updated_at: now,
            })
            .collect();
        secs += self.auths.write_rows(db, auth_rows).await?;
        let journal_rows = users
            .map(|(tenant, u)| {
                let data = serde_json::json!({
                    "userName": u.user_name, "appId": "bench-app",
                    "authorization": {"role": u.role.as_str(), "enabled": u.enabled},
                    "profile": {"name": u.name, "orgCode": u.org_code, "position": u.position,
                        "employeeCode": u.employee_code, "employeeType": u.employee_type,
                        "mobile": u.mobile, "email": u.email, "workPlace": u.work_place,
                        "entryDate": u.entry_date, "extension": u.extension},
                });
                (
                    tenant,
                    "member",
                    u.user_name.clone(),
                    "authorized",
                    data.to_string(),
                )
            })
            .collect();
        secs += self.write_journal(db, journal_rows, now).await?;
        Ok(secs)
    }

    /// Writes journal rows (tenant, entity, key, action, data; version 1, not a test,
    /// applied at `now`) with plain batched `INSERT`s, each row's values built before the
    /// statements are timed. Returns the seconds it took.
    async fn write_journal(
        &self,
        db: &impl ConnectionTrait,
        rows: Vec<(&str, &str, String, &str, String)>,
        now: i64,
    ) -> anyhow::Result<f64> {
        let rows = rows
            .into_iter()
            .map(|(tenant, entity, key, action, data)| {
                vec![
                    tenant.into(),
                    entity.into(),
                    key.into(),
                    action.into(),
                    1_i64.into(),
                    data.into(),
                    false.into(),
                    now.into(),
                ]
            })
            .collect();
        self.journal
            .write(
                db,
                &[
                    "tenant_id",
                    "entity",
                    "entity_key",
                    "action",
                    "version",
                    "data",
                    "test",
                    "applied_at",
                ],
                &[],
                rows,
            )
            .await
    }

    pub(crate) async fn drop(self, db: &DatabaseConnection) -> anyhow::Result<()> {
        for t in [self.members, self.auths, self.journal] {
            t.drop(db).await?;
        }
        Ok(())
    }
}
