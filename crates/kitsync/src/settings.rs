//! Configuration: defaults → TOML file → `KITSYNC_*` environment (`__` nests).
//!
//! Each section's struct lives in the crate it configures; this file only assembles them.
use anyhow::Context as _;
use kitsync_api::ApiSettings;
use kitsync_ingress::KitSettings;
use kitsync_login::LoginSettings;
use kitsync_queue::QueueSettings;
use kitsync_store::StoreSettings;
use kitsync_webhooks::WebhookSettings;
use kitsync_worker::WorkerSettings;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

mod known;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub queue: QueueSettings,
    pub kit: KitSettings,
    pub api: ApiSettings,
    pub login: LoginSettings,
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
    /// Time allowed for a request's head (request line and headers) to arrive.
    pub header_read_timeout_ms: u64,
    /// Largest request head, in bytes (at least 8192); a larger one is answered 431.
    pub max_header_bytes: usize,
    /// Open connections at most (per listener); more are closed as soon as accepted.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            header_read_timeout_ms: 10_000,
            max_header_bytes: 64 * 1024,
            max_connections: 8192,
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `sqlite://path?mode=rwc` (embedded default) or `postgres://user:pass@host/db`.
    pub url: String,
    /// Connections in the pool of each process.
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
    /// Master key sealing secrets at rest (base64 of 32 random bytes), the same for every
    /// process. When unset, a key is read from `master_key_path`; on the embedded SQLite
    /// database one is created there on first start, on a shared database (PostgreSQL) a
    /// process refuses to start without one.
    #[serde(serialize_with = "redacted_secret")]
    pub master_key: Option<SecretString>,
    /// Where the master key is read from when `master_key` is unset (created there, 0600, on
    /// the first start that needs one).
    pub master_key_path: PathBuf,
    /// Master keys the current one replaces (a rotation): values sealed under them still
    /// open, and `kitsync reseal` (also run by `migrate` and hourly by workers) seals them
    /// again under the current key. From the environment, a comma-separated list.
    #[serde(
        deserialize_with = "kitsync_ingress::settings::secret_list",
        serialize_with = "kitsync_ingress::settings::redacted_secrets"
    )]
    pub previous_master_keys: Vec<SecretString>,
    /// Files holding previous master keys, one key per file (for keys mounted as secret
    /// files); read like `previous_master_keys`.
    #[serde(deserialize_with = "kitsync_ingress::settings::path_list")]
    pub previous_master_key_paths: Vec<PathBuf>,
}

impl Default for SecretsSettings {
    fn default() -> Self {
        Self {
            master_key: None,
            master_key_path: PathBuf::from("data/master.key"),
            previous_master_keys: Vec::new(),
            previous_master_key_paths: Vec::new(),
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
    #[serde(serialize_with = "redacted_secret")]
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
    /// A file that does not parse, a value of the wrong type (named by its key), or a key of
    /// the file or a `KITSYNC_*` variable that names no setting (with the nearest that does).
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_from(file, std::env::vars_os().collect())
    }

    /// [`Settings::load`] with `env` as the environment.
    fn load_from(file: Option<&Path>, env: Vec<(OsString, OsString)>) -> anyhow::Result<Self> {
        let env = Self::check_names(file, env)?;
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
                .try_parsing(true)
                .source(Some(env)),
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

    /// Refuses a key of the configuration file or a `KITSYNC_*` variable that names no
    /// setting (`settings/known.rs`), and returns the environment's variables as the `config`
    /// crate reads them.
    fn check_names(
        file: Option<&Path>,
        env: Vec<(OsString, OsString)>,
    ) -> anyhow::Result<config::Map<String, String>> {
        let known = known::Known::from_defaults(&Self::defaults_value()?);
        let mut problems = Vec::new();
        let path = file.unwrap_or(Path::new("kitsync.toml"));
        match std::fs::read_to_string(path) {
            // A file that does not parse is left to the `config` crate, which says where.
            Ok(text) => {
                if let Ok(table) = text.parse::<toml::Table>() {
                    problems.extend(known.check_file(&table, &path.display().to_string()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.is_none() => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the configuration {}", path.display()))
            }
        }
        let mut vars = config::Map::new();
        for (name, value) in env {
            // Like the `config` crate: a name that is not Unicode cannot be a setting's.
            let Ok(name) = name.into_string() else {
                continue;
            };
            match value.into_string() {
                Ok(value) => {
                    vars.insert(name, value);
                }
                Err(_) if name.to_uppercase().starts_with("KITSYNC_") => {
                    anyhow::bail!("the variable {name} is not valid UTF-8")
                }
                Err(_) => {}
            }
        }
        problems.extend(known.check_env(vars.keys().map(String::as_str)));
        if !problems.is_empty() {
            anyhow::bail!(
                "{}\n(`kitsync config print-default` prints every setting)",
                problems.join("\n")
            );
        }
        Ok(vars)
    }

    /// Every setting with its default, secrets as a placeholder; the source of the names
    /// [`Settings::load`] accepts.
    fn defaults_value() -> anyhow::Result<serde_json::Value> {
        serde_json::to_value(Settings::default()).context("serialising the default settings")
    }

    /// The defaults as TOML, for `kitsync config print-default`: every setting, those unset
    /// by default commented out.
    ///
    /// # Errors
    /// Serialisation failed.
    pub fn default_toml() -> anyhow::Result<String> {
        Ok(known::default_toml(&Self::defaults_value()?)?)
    }
}

/// A secret serialises as `"<redacted>"`, never as its value, and `null` when unset: its name
/// still appears wherever the settings are serialised (the names [`Settings::load`] accepts,
/// `kitsync config print-default`), its value nowhere.
fn redacted_secret<S: serde::Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host` (the one definition is the
/// queue's; re-exported for the database URL and the callers here).
pub use kitsync_queue::redact_url;

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

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    /// The settings these variables make, which must load.
    fn load_pairs(pairs: &[(String, String)]) -> Settings {
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Settings::load_from(None, vars(&refs)).unwrap_or_else(|e| panic!("{e:#}\n{refs:?}"))
    }

    /// `text` as a configuration file, loaded with `env`.
    fn load_toml(text: &str, env: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kitsync.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load_from(Some(&path), vars(env))
    }

    fn error_of(r: anyhow::Result<Settings>) -> String {
        let e = r.expect_err("the configuration should be refused");
        format!("{:#}", e.root_cause())
    }

    #[test]
    fn a_misspelt_key_in_the_file_is_refused_with_the_nearest_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kitsync.toml");
        std::fs::write(&path, "[kit]\nacess_keys = [\"k\"]\n").unwrap();
        let e = Settings::load_from(Some(&path), vars(&[])).unwrap_err();
        assert_eq!(
            e.to_string().lines().next().unwrap(),
            format!(
                "unknown setting `kit.acess_keys` in {}; did you mean `kit.access_keys`?",
                path.display()
            )
        );
        // Every unknown key is named, a whole unknown section once.
        let e = error_of(load_toml(
            "[kti]\naccess_keys = [\"k\"]\n[queue]\namqp_ur = \"amqp://h\"\nnmae = \"q\"\n",
            &[],
        ));
        assert!(e.contains("unknown setting `kti` in "), "{e}");
        assert!(e.contains("; did you mean `kit`?"), "{e}");
        assert!(e.contains("`queue.amqp_ur` in "), "{e}");
        assert!(e.contains("; did you mean `queue.amqp_url`?"), "{e}");
        assert!(e.contains("`queue.nmae` in "), "{e}");
        assert!(e.contains("; did you mean `queue.name`?"), "{e}");
        assert!(e.contains("`kitsync config print-default`"), "{e}");
        // A top-level key that is no section.
        let e = error_of(load_toml("adr = \"0.0.0.0:1\"\n", &[]));
        assert!(e.contains("unknown setting `adr`"), "{e}");
    }

    #[test]
    fn nested_keys_in_any_toml_form_are_accepted_and_applied() {
        let s = load_toml(
            "kit.prefix = \"/isv\"\n\
             metrics = { cache_ms = 7 }\n\
             [queue]\n\
             amqp_url = \"amqp://h/%2f\"\n\
             [webhooks]\n\
             ca_file = \"/etc/ca.pem\"\n\
             [secrets]\n\
             master_key = \"bWFzdGVy\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(s.kit.prefix, "/isv");
        assert_eq!(s.metrics.cache_ms, 7);
        assert_eq!(s.queue.amqp_url.as_deref(), Some("amqp://h/%2f"));
        assert_eq!(
            s.webhooks.ca_file.as_deref(),
            Some(Path::new("/etc/ca.pem"))
        );
        assert!(s.secrets.master_key.is_some());
        // A type error is still serde's, named by its key.
        let e = load_toml("[worker]\nconcurrency = \"many\"\n", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("concurrency"), "{e:#}");
    }

    #[test]
    fn a_misspelt_variable_is_refused_with_the_nearest_setting() {
        let e = error_of(load_toml("", &[("KITSYNC_KIT__ACESS_KEYS", "k")]));
        assert!(
            e.starts_with(
                "unknown variable KITSYNC_KIT__ACESS_KEYS; did you mean KITSYNC_KIT__ACCESS_KEYS?"
            ),
            "{e}"
        );
        // One underscore where two nest; and every such variable at once.
        let e = error_of(load_toml(
            "",
            &[
                ("KITSYNC_KIT_PREFIX", "/x"),
                ("KITSYNC_DATABASE__URI", "sqlite://x"),
                ("KITSYNC_QUEUE", "x"),
            ],
        ));
        assert!(
            e.contains("unknown variable KITSYNC_KIT_PREFIX; did you mean KITSYNC_KIT__PREFIX?"),
            "{e}"
        );
        assert!(
            e.contains(
                "unknown variable KITSYNC_DATABASE__URI; did you mean KITSYNC_DATABASE__URL?"
            ),
            "{e}"
        );
        assert!(e.contains("unknown variable KITSYNC_QUEUE;"), "{e}");
        // The `config` crate matches the prefix case-insensitively: so does the check.
        let e = error_of(load_toml("", &[("kitsync_log__fromat", "json")]));
        assert!(
            e.contains("unknown variable kitsync_log__fromat; did you mean KITSYNC_LOG__FORMAT?"),
            "{e}"
        );
        // Variables of other programs are none of kitsync's business.
        load_toml(
            "",
            &[("KITSYNCX", "1"), ("HOME", "/root"), ("RUST_LOG", "x")],
        )
        .unwrap();
    }

    #[test]
    fn variables_of_nested_and_secret_settings_are_accepted_and_applied() {
        let s = load_toml(
            "",
            &[
                ("KITSYNC_KIT__ACCESS_KEYS", "a,b"),
                ("KITSYNC_QUEUE__AMQP_URL", "amqp://h/%2f"),
                ("KITSYNC_SECRETS__MASTER_KEY", "bWFzdGVy"),
                ("KITSYNC_METRICS__BEARER_TOKEN", "t"),
                ("KITSYNC_KIT__RSA_PRIVATE_KEY_PATH", "/k.pem"),
                ("KITSYNC_WORKER__CONCURRENCY", "5"),
            ],
        )
        .unwrap();
        assert_eq!(s.kit.access_keys.len(), 2);
        assert_eq!(s.queue.amqp_url.as_deref(), Some("amqp://h/%2f"));
        assert!(s.secrets.master_key.is_some() && s.metrics.bearer_token.is_some());
        assert_eq!(
            s.kit.rsa_private_key_path.as_deref(),
            Some(Path::new("/k.pem"))
        );
        assert_eq!(s.worker.concurrency, 5);
    }

    #[test]
    fn the_test_suites_and_cis_variables_are_allowed_and_only_they() {
        load_toml(
            "",
            &[
                ("KITSYNC_CONFIG", "kitsync.toml"),
                ("KITSYNC_TEST_DATABASE_URL", "postgres://h/test"),
                ("KITSYNC_TEST_AMQP_URL", "amqp://h/%2f"),
                ("KITSYNC_SCIM_TOOLS", "/venv/bin"),
                ("KITSYNC_DASHBOARD_SCREENSHOTS", "/tmp/shots"),
                ("KITSYNC_CHROMIUM", "/usr/bin/chromium"),
                ("KITSYNC_CHROMEDRIVER", "/usr/bin/chromedriver"),
                ("KITSYNC_CI_DATABASE_URL", "postgres://h/ci"),
                ("KITSYNC_CI_ANYTHING_ELSE", "x"),
            ],
        )
        .unwrap();
        let e = error_of(load_toml("", &[("KITSYNC_TEST_DATABSE_URL", "x")]));
        assert!(
            e.contains("did you mean KITSYNC_TEST_DATABASE_URL?"),
            "a misspelt allowed name is caught too: {e}"
        );
    }

    /// `docs/configuration.md` has a row per setting with its variable and its default, and
    /// no row for a setting that does not exist.
    #[test]
    fn docs_configuration_lists_every_setting_with_its_default() {
        let doc = include_str!("../../../docs/configuration.md");
        let mut rows = std::collections::BTreeMap::new();
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line
                .split(" | ")
                .map(|c| c.trim_matches(['|', ' ', '`']))
                .collect();
            rows.insert(
                cells[0].to_owned(),
                (
                    cells[1].to_owned(),
                    cells[2].to_owned(),
                    cells[3].to_owned(),
                ),
            );
        }
        let defaults = Settings::defaults_value().unwrap();
        let keys = known::Known::from_defaults(&defaults).keys;
        let mut wrong = Vec::new();
        for key in &keys {
            let Some((env, default, what)) = rows.get(key) else {
                wrong.push(format!("{key}: no row"));
                continue;
            };
            if *env != known::env_name(key) {
                wrong.push(format!(
                    "{key}: variable {env}, expected {}",
                    known::env_name(key)
                ));
            }
            let (section, name) = key.split_once('.').unwrap();
            let expected = match &defaults[section][name] {
                serde_json::Value::Null => "unset".to_owned(),
                // Secrets serialise redacted; they have no default.
                serde_json::Value::String(s) if s == "<redacted>" => "unset".to_owned(),
                v => v.to_string(),
            };
            if *default != expected {
                wrong.push(format!("{key}: default {default}, expected {expected}"));
            }
            if what.is_empty() {
                wrong.push(format!("{key}: not described"));
            }
        }
        for key in rows.keys().filter(|k| !keys.contains(*k)) {
            wrong.push(format!("{key}: documented, but no such setting"));
        }
        assert!(wrong.is_empty(), "docs/configuration.md: {wrong:#?}");
    }

    #[test]
    fn every_setting_is_known_and_printed_by_print_default_without_a_secret() {
        let keys = known::Known::from_defaults(&Settings::defaults_value().unwrap()).keys;
        // `None` and secret settings are part of the set (as `null`).
        for key in [
            "queue.amqp_url",
            "kit.rsa_private_key_path",
            "webhooks.ca_file",
            "secrets.master_key",
            "metrics.bearer_token",
            "kit.access_keys",
            "http.addr",
            "log.format",
        ] {
            assert!(keys.contains(key), "{key} missing from {keys:?}");
        }

        // Every printed line, commented-out ones uncommented, is accepted…
        let text = Settings::default_toml().unwrap();
        let mut printed = std::collections::BTreeSet::new();
        let mut section = String::new();
        let mut uncommented = String::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            }
            let setting = line.strip_prefix("# ").unwrap_or(line);
            if let Some((key, _)) = setting.split_once(" = ") {
                printed.insert(format!("{section}.{key}"));
                uncommented.push_str(setting);
            } else {
                uncommented.push_str(line);
            }
            uncommented.push('\n');
        }
        let s = load_toml(&uncommented, &[]).unwrap();
        assert!(s.secrets.master_key.is_some() && s.queue.amqp_url.is_some());
        // …and they are every setting.
        assert_eq!(printed, keys);

        // A configured secret is serialised as a placeholder, never as itself.
        let mut s = Settings::default();
        s.secrets.master_key = Some(SecretString::from("hunter2-master".to_owned()));
        s.metrics.bearer_token = Some(SecretString::from("hunter2-token".to_owned()));
        s.kit.access_keys = vec![SecretString::from("hunter2-kit".to_owned())];
        for shown in [
            serde_json::to_string(&s).unwrap(),
            toml::to_string(&s).unwrap(),
            format!("{s:?}"),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert!(toml::to_string(&s)
            .unwrap()
            .contains("master_key = \"<redacted>\""));
    }

    #[test]
    fn the_deploy_example_names_only_real_settings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kitsync.example.toml");
        Settings::load_from(Some(&path), vars(&[])).unwrap();
    }

    /// Every `KITSYNC_*` variable the Kubernetes manifests set (the base ConfigMap, the
    /// Deployments, the production overlay's literals, the example Secret) is a real setting,
    /// and together they load.
    #[test]
    fn the_kubernetes_manifests_name_only_real_settings() {
        let k8s = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
        let mut pairs: Vec<(String, String)> = Vec::new();
        for file in [
            "base/configmap.yaml",
            "base/secret.example.yaml",
            "base/worker-deployment.yaml",
            "overlays/production/kustomization.yaml",
        ] {
            let text = std::fs::read_to_string(k8s.join(file)).unwrap();
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            for (i, line) in lines.iter().enumerate() {
                let line = line.trim_start_matches("- ");
                let found = line
                    .split_once(": ")
                    .or_else(|| line.split_once('='))
                    .filter(|(k, _)| k.starts_with("KITSYNC_"))
                    .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()));
                // `- name: KITSYNC_…` followed by `value: …` (a Deployment's env).
                let named = line
                    .strip_prefix("name: KITSYNC_")
                    .map(|rest| format!("KITSYNC_{rest}"))
                    .zip(lines.get(i + 1).and_then(|l| l.strip_prefix("value: ")))
                    .map(|(k, v)| (k, v.trim_matches('"').to_owned()));
                pairs.extend(found.into_iter().chain(named));
            }
        }
        assert!(pairs.len() >= 10, "{pairs:?}");
        let s = load_pairs(&pairs);
        assert_eq!(s.worker.concurrency, 4);
        assert_eq!(s.metrics.addr, "0.0.0.0:9090");
    }

    /// Every `KITSYNC_*` variable that `deploy/compose.yaml` sets or `deploy/.env.example`
    /// names (commented or not) is a real setting with a valid value: loaded together, the
    /// way a container gets them, they are accepted.
    #[test]
    fn the_compose_file_and_its_env_example_name_only_real_settings() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let mut pairs: Vec<(String, String)> = Vec::new();
        let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
        for line in compose.lines() {
            if let Some((k, v)) = line.trim().split_once(": ") {
                if k.starts_with("KITSYNC_") {
                    pairs.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        let example = std::fs::read_to_string(deploy.join(".env.example")).unwrap();
        for line in example.lines() {
            let line = line.trim_start_matches(['#', ' ']);
            if let Some((k, v)) = line.split_once('=') {
                if k.starts_with("KITSYNC_") && !k.contains(' ') {
                    pairs.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        assert!(pairs.len() >= 8, "{pairs:?}");
        // `${VAR:?message}` is compose's interpolation: a password here.
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| {
                let mut v = v;
                while let (Some(a), Some(b)) = (v.find("${"), v.find('}')) {
                    v.replace_range(a..=b, "secret");
                }
                (k, v)
            })
            .collect();
        let s = load_pairs(&pairs);
        assert!(s
            .database
            .url
            .starts_with("postgres://kitsync:secret@postgres:5432/"));
        assert_eq!(s.metrics.addr, "0.0.0.0:9090");
    }
}
