//! Configuration: defaults → TOML file → `KITSYNC_*` environment (`__` nests).
//!
//! Each section's struct lives in the crate it configures; this file only assembles them.
use anyhow::Context as _;
use kitsync_ingress::KitSettings;
use kitsync_queue::QueueSettings;
use kitsync_store::StoreSettings;
use kitsync_webhooks::WebhookSettings;
use kitsync_worker::WorkerSettings;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub queue: QueueSettings,
    pub kit: KitSettings,
    pub secrets: SecretsSettings,
    pub worker: WorkerSettings,
    pub store: StoreSettings,
    pub webhooks: WebhookSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Where `serve`/`ingress` listen. Use `0.0.0.0:8080` behind the TLS-terminating proxy
    /// that faces the marketplace.
    pub addr: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `sqlite://path?mode=rwc` (embedded default) or `postgres://user:pass@host/db`.
    pub url: String,
    pub max_connections: u32,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/kitsync.sqlite?mode=rwc".into(),
            max_connections: 16,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct SecretsSettings {
    /// Master key sealing secrets at rest (base64 of 32 random bytes). When unset, a key is
    /// created on first start at `master_key_path` and reused afterwards.
    #[serde(skip_serializing)]
    pub master_key: Option<SecretString>,
    pub master_key_path: PathBuf,
}

impl Default for SecretsSettings {
    fn default() -> Self {
        Self {
            master_key: None,
            master_key_path: PathBuf::from("data/master.key"),
        }
    }
}

/// `/metrics` and its own listener (`src/operations.rs`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct MetricsSettings {
    /// An extra listener for `/healthz`, `/readyz` and `/metrics` only, e.g. `0.0.0.0:9090`:
    /// the one HTTP listener of `kitsync worker`, and a private port for `serve`/`ingress`
    /// (which also keep serving them on `http.addr`). Empty: none.
    pub addr: String,
    /// When set, `/metrics` requires `Authorization: Bearer <token>` (on every listener);
    /// `/healthz` and `/readyz` stay open. Unset by default, like most exporters on a private
    /// network.
    #[serde(skip_serializing)]
    pub bearer_token: Option<SecretString>,
    /// How long the gauges read from the queue and the database (backlog, dead letters, held
    /// plans, statistics) are reused between scrapes.
    pub cache_ms: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            addr: String::new(),
            bearer_token: None,
            cache_ms: 5000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct LogSettings {
    /// `tracing` filter, e.g. `info` or `kitsync_worker=debug,info`. `RUST_LOG` overrides it.
    pub filter: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: "text".into(),
        }
    }
}

impl Settings {
    /// Loads defaults, then `file` (or `kitsync.toml` if present), then `KITSYNC_*`.
    ///
    /// # Errors
    /// A file that does not parse, or a value of the wrong type, named by its key.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let defaults = config::Config::try_from(&Settings::default())
            .context("building the default configuration")?;
        let mut b = config::Config::builder().add_source(defaults);
        match file {
            Some(f) => {
                b = b.add_source(
                    config::File::from(f)
                        .format(config::FileFormat::Toml)
                        .required(true),
                );
            }
            None => {
                b = b.add_source(
                    config::File::with_name("kitsync.toml")
                        .format(config::FileFormat::Toml)
                        .required(false),
                );
            }
        }
        b = b.add_source(
            config::Environment::with_prefix("KITSYNC")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        );
        let cfg = b.build().context("reading the configuration")?;
        let mut s: Settings = cfg
            .try_deserialize()
            .context("invalid configuration (see `kitsync config print-default` for every key)")?;
        if s.queue
            .amqp_url
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            s.queue.amqp_url = None;
        }
        Ok(s)
    }

    /// The defaults as TOML, for `kitsync config print-default`.
    ///
    /// # Errors
    /// Serialisation failed.
    pub fn default_toml() -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(&Settings::default())?)
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    let creds = &rest[..at];
    match creds.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &creds[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/x"), "sqlite://data/x");
    }

    #[test]
    fn default_toml_round_trips() {
        let text = Settings::default_toml().unwrap();
        assert!(text.contains("[kit]"));
        assert!(text.contains("[webhooks]") && text.contains("retry_max_delay_ms = 3600000"));
        let back: Settings = toml::from_str(&text).unwrap();
        assert_eq!(back.http.addr, "127.0.0.1:8080");
    }
}
