//! The names of the settings, taken from the settings types themselves, and the checks that
//! every key of the configuration file and every `KITSYNC_*` variable names one of them.
//!
//! serde ignores unknown keys, so without these checks a misspelt setting
//! (`KITSYNC_KIT__ACESS_KEYS`) would silently leave its default in place. The set of names is
//! the serialised defaults (`serde_json::to_value(Settings::default())`): every field of every
//! section, `None` ones as `null` and secrets as a placeholder, so a new field is known
//! the moment it exists and the list cannot drift.
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// `KITSYNC_*` variables that are not settings and are left alone: the CLI's own, and those of
/// the test suite and CI, which start the binary with them set. A trailing `*` is a prefix.
pub(super) const NOT_SETTINGS: &[&str] = &[
    "KITSYNC_CONFIG",                // `--config` (src/main.rs)
    "KITSYNC_TEST_DATABASE_URL",     // tests on PostgreSQL (migrations/src/testing.rs)
    "KITSYNC_TEST_AMQP_URL",         // tests on RabbitMQ (migrations/src/testing.rs)
    "KITSYNC_SCIM_TOOLS",            // the SCIM clients' test (tests/tests/directory.rs)
    "KITSYNC_DASHBOARD_SCREENSHOTS", // the dashboard's browser test (tests/src/browser.rs)
    "KITSYNC_CHROMIUM",              // the browser it uses (tests/src/browser.rs)
    "KITSYNC_CHROMEDRIVER",          // and its WebDriver (tests/src/browser.rs)
    "KITSYNC_CI_*",                  // CI's own (.ci/run)
];

const PREFIX: &str = "KITSYNC_";

/// The dotted names of the settings (`kit.access_keys`) and of their sections (`kit`).
pub(super) struct Known {
    pub(super) keys: BTreeSet<String>,
    sections: BTreeSet<String>,
}

impl Known {
    /// From the serialised defaults: objects are sections, everything else is a setting.
    pub(super) fn from_defaults(defaults: &Value) -> Known {
        let mut known = Known {
            keys: BTreeSet::new(),
            sections: BTreeSet::new(),
        };
        known.walk("", defaults);
        known
    }

    fn walk(&mut self, path: &str, value: &Value) {
        if let Value::Object(map) = value {
            if !path.is_empty() {
                self.sections.insert(path.to_owned());
            }
            for (k, v) in map {
                self.walk(&join(path, k), v);
            }
        } else {
            self.keys.insert(path.to_owned());
        }
    }

    /// One message per key of the TOML `table` (the file `file`) that names no setting.
    pub(super) fn check_file(&self, table: &toml::Table, file: &str) -> Vec<String> {
        let mut unknown = Vec::new();
        self.check_table(table, "", &mut unknown);
        let candidates: Vec<&str> = self
            .keys
            .iter()
            .chain(&self.sections)
            .map(String::as_str)
            .collect();
        unknown
            .into_iter()
            .map(|key| {
                let mut m = format!("unknown setting `{key}` in {file}");
                if let Some(near) = closest(&key, &candidates) {
                    let _ = write!(m, "; did you mean `{near}`?");
                }
                m
            })
            .collect()
    }

    fn check_table(&self, table: &toml::Table, path: &str, unknown: &mut Vec<String>) {
        for (k, v) in table {
            let key = join(path, k);
            if self.keys.contains(&key) {
                continue; // its value's type is serde's to check
            }
            match v {
                toml::Value::Table(t) if self.sections.contains(&key) => {
                    self.check_table(t, &key, unknown);
                }
                _ if self.sections.contains(&key) => {} // a section given a value: serde says
                _ => unknown.push(key),
            }
        }
    }

    /// One message per `KITSYNC_*` variable (case-insensitive, as the `config` crate reads
    /// them) that is neither a setting nor in [`NOT_SETTINGS`].
    pub(super) fn check_env<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut candidates: Vec<String> = self.keys.iter().map(|k| env_name(k)).collect();
        candidates.extend(
            NOT_SETTINGS
                .iter()
                .filter(|n| !n.ends_with('*'))
                .map(|n| (*n).to_owned()),
        );
        let candidates: Vec<&str> = candidates.iter().map(String::as_str).collect();
        let mut messages: Vec<String> = names
            .into_iter()
            .filter(|name| {
                let upper = name.to_uppercase();
                upper.starts_with(PREFIX)
                    && !is_not_a_setting(&upper)
                    && !self.keys.contains(&setting_of(&upper))
            })
            .map(|name| {
                let mut m = format!("unknown variable {name}");
                if let Some(near) = closest(&name.to_uppercase(), &candidates) {
                    let _ = write!(m, "; did you mean {near}?");
                }
                m
            })
            .collect();
        messages.sort();
        messages
    }
}

fn is_not_a_setting(upper: &str) -> bool {
    NOT_SETTINGS.iter().any(|n| match n.strip_suffix('*') {
        Some(prefix) => upper.starts_with(prefix),
        None => upper == *n,
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `KITSYNC_KIT__ACCESS_KEYS` → `kit.access_keys`, as the `config` crate maps it.
fn setting_of(var: &str) -> String {
    var[PREFIX.len()..].to_lowercase().replace("__", ".")
}

/// `kit.access_keys` → `KITSYNC_KIT__ACCESS_KEYS`.
pub(super) fn env_name(key: &str) -> String {
    format!("{PREFIX}{}", key.replace('.', "__").to_uppercase())
}

/// The candidate nearest to `name` by edit distance (the first of equals).
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates.iter().min_by_key(|c| distance(name, c)).copied()
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbours (`acess` → `access` is 1, `kti` → `kit` is 1).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows i-2, i-1 and i of the usual table.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            row[j] = d;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

/// The defaults as TOML, every setting included: a setting without a default (`null`: unset,
/// like `queue.amqp_url`, or a secret) is printed commented out, with its variable.
///
/// # Errors
/// A value has no TOML form.
pub(super) fn default_toml(defaults: &Value) -> Result<String, toml::ser::Error> {
    let mut out = String::from(
        "# kitsync settings with their defaults (`kitsync config print-default`).\n\
         # File: ./kitsync.toml or --config FILE. Each can also be set as\n\
         # KITSYNC_<SECTION>__<KEY>, e.g. KITSYNC_DATABASE__URL.\n",
    );
    emit_table(&mut out, "", defaults)?;
    Ok(out)
}

fn emit_table(out: &mut String, path: &str, value: &Value) -> Result<(), toml::ser::Error> {
    let Value::Object(map) = value else {
        return Ok(());
    };
    let has_leaves = map.values().any(|v| !v.is_object());
    if !path.is_empty() && (has_leaves || map.is_empty()) {
        let _ = write!(out, "\n[{path}]\n");
    }
    // A table's own keys come before its sub-tables in TOML.
    for (k, v) in map.iter().filter(|(_, v)| !v.is_object()) {
        if v.is_null() {
            let _ = writeln!(
                out,
                "# {k} = \"…\"  # unset by default; or {}",
                env_name(&join(path, k))
            );
        } else {
            let mut one = toml::Table::new();
            one.insert(k.clone(), toml::Value::try_from(v)?);
            out.push_str(&toml::to_string(&one)?);
        }
    }
    for (k, v) in map.iter().filter(|(_, v)| v.is_object()) {
        emit_table(out, &join(path, k), v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("acess_keys", "access_keys"), 1);
        assert_eq!(distance("kti", "kit"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("ca", "abc"), 3); // OSA, not unrestricted Damerau (2)
    }

    #[test]
    fn names_map_like_the_config_crate() {
        assert_eq!(setting_of("KITSYNC_KIT__ACCESS_KEYS"), "kit.access_keys");
        assert_eq!(env_name("queue.amqp_url"), "KITSYNC_QUEUE__AMQP_URL");
        assert!(is_not_a_setting("KITSYNC_CI_WHATEVER"));
        assert!(is_not_a_setting("KITSYNC_CONFIG"));
        assert!(!is_not_a_setting("KITSYNC_CONFIGS"));
    }
}
