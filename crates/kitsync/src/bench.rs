//! `kitsync bench …` (the `bench` feature): the benchmarks of `kitsync-bench`, run with this
//! binary's configuration and its service started in-process. Without the feature the binary
//! links none of them, and `kitsync bench` says how to build them.
use crate::app;
use crate::settings::{redact_url, Settings};
use kitsync_bench::{Mode, Running, Service};
use kitsync_ingress::KitSettings;
use kitsync_login::LoginSettings;
use kitsync_queue::{Queue, QueueSettings};
use kitsync_store::StoreSettings;
use kitsync_worker::WorkerSettings;
use sea_orm::DatabaseConnection;
use secrecy::SecretString;
use std::path::PathBuf;

impl Service for Settings {
    fn database_url(&self) -> &str {
        &self.database.url
    }

    fn set_database_url(&mut self, url: String) {
        self.database.url = url;
    }

    fn redacted_database_url(&self) -> String {
        redact_url(&self.database.url)
    }

    fn queue(&self) -> &QueueSettings {
        &self.queue
    }

    fn queue_mut(&mut self) -> &mut QueueSettings {
        &mut self.queue
    }

    fn kit(&self) -> &KitSettings {
        &self.kit
    }

    fn kit_mut(&mut self) -> &mut KitSettings {
        &mut self.kit
    }

    fn login_mut(&mut self) -> &mut LoginSettings {
        &mut self.login
    }

    fn store(&self) -> &StoreSettings {
        &self.store
    }

    fn worker(&self) -> &WorkerSettings {
        &self.worker
    }

    fn set_master_key(&mut self, key: SecretString) {
        self.secrets.master_key = Some(key);
    }

    fn set_master_key_path(&mut self, path: PathBuf) {
        self.secrets.master_key_path = path;
    }

    fn set_http_addr(&mut self, addr: String) {
        self.http.addr = addr;
    }

    /// The benchmarks set up their own databases: they migrate them.
    async fn open_db(&self) -> anyhow::Result<DatabaseConnection> {
        app::open_db_with(self, app::Schema::Migrate).await
    }

    async fn open_queue(&self, db: &DatabaseConnection) -> anyhow::Result<Queue> {
        app::open_queue(self, db).await
    }

    /// On the database `open_db` migrated: only checks its schema.
    async fn start(self, mode: Mode) -> anyhow::Result<Running> {
        let mode = match mode {
            Mode::Both => app::Mode::Both,
            Mode::Ingress => app::Mode::Ingress,
        };
        let app::Running {
            addr,
            shutdown,
            done,
        } = app::start_with(self, mode, app::Schema::Check).await?;
        Ok(Running {
            addr,
            shutdown,
            done,
        })
    }
}
