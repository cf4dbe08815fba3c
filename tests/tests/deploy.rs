//! What `deploy/` promises, checked against the real binary:
//! - the image's health check is a `kitsync health` command that passes against a serving
//!   kitsync and fails when it does not serve, and the image's entrypoint and default command
//!   are commands the binary has;
//! - the topology of `deploy/compose.yaml` (a one-shot `migrate`, two ingresses, two workers)
//!   runs as local processes of the binary with the settings read from the compose file itself,
//!   its `.env.example` and the image's `ENV` — rewritten only where this machine differs from
//!   the compose project (see [`Laptop`]) — and loses and doubles nothing when one ingress and
//!   one worker are SIGKILLed in the middle of a burst of callbacks;
//! - the image builds and reports the crate's version, where a container engine answers.
//!
//! Runs on the embedded defaults and, when `KITSYNC_TEST_DATABASE_URL` /
//! `KITSYNC_TEST_AMQP_URL` are set, on PostgreSQL / RabbitMQ: compose's `postgres` and
//! `rabbitmq` stand for the test's database and queue, whichever they are.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a panic

use kitsync_secrets::{OaepVariant, TestKeyPair};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::payload::{self, time, User};
use tests::{
    wait_until, Env, Kit, Server, ALL_ORG_SYNC, APPLICATION_SYNC, AUTH_SYNC, SINGLE_ORG_SYNC,
    TENANT_SYNC,
};
use yaml_rust2::{Yaml, YamlLoader};

fn dockerfile() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/Dockerfile");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The JSON array after `key` on its (possibly continued) Dockerfile line, comments skipped.
fn exec_form(dockerfile: &str, key: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| l.find(key).map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no {key} in deploy/Dockerfile"));
    let json = &line[line.find('[').unwrap()..=line.rfind(']').unwrap()];
    serde_json::from_str(json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_health_check_passes_on_a_serving_kitsync_and_fails_otherwise() {
    let env = Env::new("deploy").await;
    let server = env.start("serve").await;
    let base = server.kit().base_url().to_owned();
    let file = dockerfile();
    // HEALTHCHECK … CMD ["/usr/local/bin/kitsync", "health", "--url", "http://127.0.0.1:8080/healthz"]
    let check = exec_form(&file, "CMD [\"/usr/local/bin/kitsync\", \"health\"");
    assert_eq!(check[0], "/usr/local/bin/kitsync");
    let args: Vec<String> = check[1..]
        .iter()
        .map(|a| a.replace("http://127.0.0.1:8080", &base))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.cli_ok(&args).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("HTTP 200"));
    // /readyz too; a path that is not served, and a port nothing listens on, fail.
    let ready = format!("{base}/readyz");
    assert!(env.cli(&["health", "--url", &ready]).await.status.success());
    let missing = format!("{base}/nope");
    let out = env.cli(&["health", "--url", &missing]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}/healthz");
    let out = env
        .cli(&["health", "--url", &dead, "--timeout-ms", "2000"])
        .await;
    assert!(!out.status.success());
    // The image's entrypoint runs `serve` by default: both exist in the binary.
    assert_eq!(exec_form(&file, "ENTRYPOINT"), ["/usr/local/bin/kitsync"]);
    let default = exec_form(&file, "CMD [\"serve\"");
    assert_eq!(default, ["serve"]);
    let help = env.cli(&["serve", "--help"]).await;
    assert!(help.status.success());
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// deploy/compose.yaml, deploy/.env.example and the image, as data
// ---------------------------------------------------------------------------------------------

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read_deploy(name: &str) -> String {
    let path = deploy_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Resolves the `<<` merge keys compose.yaml uses (`<<: *kitsync`), everywhere: a mapping's
/// own keys win over merged ones, and of several merged mappings the first wins. The parser
/// resolves aliases (`*kitsync`) but leaves `<<` as a plain key.
fn merge_keys(y: Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut own = yaml_rust2::yaml::Hash::new();
            let mut merged = Vec::new();
            for (k, v) in h {
                let v = merge_keys(v);
                if k.as_str() == Some("<<") {
                    match v {
                        Yaml::Hash(m) => merged.push(m),
                        Yaml::Array(list) => {
                            for m in list {
                                match m {
                                    Yaml::Hash(m) => merged.push(m),
                                    other => panic!("`<<` merges mappings, not {other:?}"),
                                }
                            }
                        }
                        other => panic!("`<<` merges mappings, not {other:?}"),
                    }
                } else {
                    own.insert(k, v);
                }
            }
            for m in merged {
                for (k, v) in m {
                    if !own.contains_key(&k) {
                        own.insert(k, v);
                    }
                }
            }
            Yaml::Hash(own)
        }
        Yaml::Array(list) => Yaml::Array(list.into_iter().map(merge_keys).collect()),
        other => other,
    }
}

fn scalar(y: &Yaml, what: &str) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("{what}: expected a scalar, found {other:?}"),
    }
}

/// A list of scalars, or one scalar as a list of one.
fn scalars(y: &Yaml, what: &str) -> Vec<String> {
    match y {
        Yaml::BadValue => Vec::new(),
        Yaml::Array(list) => list.iter().map(|v| scalar(v, what)).collect(),
        other => vec![scalar(other, what)],
    }
}

/// `30s`, `2m`, `1m30s`, `500ms`: compose's durations as the file uses them.
fn duration(s: &str, what: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("{what}: {s:?} is not a duration"));
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        total += match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(60 * n),
            "h" => Duration::from_secs(3600 * n),
            other => panic!("{what}: unit {other:?} in {s:?}"),
        };
        rest = &rest[unit..];
    }
    total
}

/// One service of compose.yaml, merge keys resolved. Values are as written (interpolation
/// happens when a process is configured).
#[derive(Debug, Clone)]
struct Service {
    name: String,
    image: String,
    /// `build.context` and `build.dockerfile`, when the service builds the image.
    build: Option<(String, String)>,
    entrypoint: Option<Vec<String>>,
    command: Vec<String>,
    env_file: Vec<String>,
    environment: Vec<(String, String)>,
    /// `(service, condition)`.
    depends_on: Vec<(String, String)>,
    /// `(published, target)`.
    ports: Vec<(u16, u16)>,
    /// Bind mounts `(source relative to the compose file, target)`; named volumes are left out.
    binds: Vec<(String, String)>,
    /// The exec form after `CMD`, when the service has a health check.
    healthcheck: Option<Vec<String>>,
    restart: Option<String>,
    stop_grace_period: Option<Duration>,
}

impl Service {
    fn parse(name: &str, y: &Yaml) -> Service {
        let what = |key: &str| format!("compose.yaml services.{name}.{key}");
        let list_or_string = |key: &str| -> Vec<String> {
            match &y[key] {
                Yaml::BadValue => Vec::new(),
                Yaml::Array(_) => scalars(&y[key], &what(key)),
                Yaml::String(s) => {
                    assert!(
                        !s.contains(['"', '\'', '\\', '$']),
                        "{}: the string form with quoting or variables is not supported here; use a list",
                        what(key)
                    );
                    s.split_whitespace().map(str::to_owned).collect()
                }
                other => panic!("{}: {other:?}", what(key)),
            }
        };
        let environment = match &y["environment"] {
            Yaml::BadValue => Vec::new(),
            Yaml::Hash(h) => h
                .iter()
                .map(|(k, v)| {
                    let k = scalar(k, &what("environment"));
                    assert!(
                        !matches!(v, Yaml::Null),
                        "{}: {k} takes its value from the shell, which this test does not model",
                        what("environment")
                    );
                    let v = scalar(v, &what(&format!("environment.{k}")));
                    (k, v)
                })
                .collect(),
            Yaml::Array(list) => list
                .iter()
                .map(|e| {
                    let e = scalar(e, &what("environment"));
                    let (k, v) = e.split_once('=').unwrap_or_else(|| {
                        panic!(
                            "{}: {e:?} takes its value from the shell, which this test does not model",
                            what("environment")
                        )
                    });
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
            other => panic!("{}: {other:?}", what("environment")),
        };
        let depends_on = match &y["depends_on"] {
            Yaml::BadValue => Vec::new(),
            Yaml::Array(_) => scalars(&y["depends_on"], &what("depends_on"))
                .into_iter()
                .map(|s| (s, "service_started".to_owned()))
                .collect(),
            Yaml::Hash(h) => h
                .iter()
                .map(|(k, v)| {
                    let condition = match &v["condition"] {
                        Yaml::BadValue => "service_started".to_owned(),
                        c => scalar(c, &what("depends_on")),
                    };
                    (scalar(k, &what("depends_on")), condition)
                })
                .collect(),
            other => panic!("{}: {other:?}", what("depends_on")),
        };
        let ports = scalars(&y["ports"], &what("ports"))
            .iter()
            .map(|p| {
                let p = p.split('/').next().unwrap_or_default();
                let parts: Vec<&str> = p.split(':').collect();
                let port = |s: &str| -> u16 {
                    s.parse().unwrap_or_else(|_| {
                        panic!("{}: {p:?} (ranges are not supported)", what("ports"))
                    })
                };
                match parts.as_slice() {
                    [published, target] | [_, published, target] => (port(published), port(target)),
                    _ => panic!("{}: {p:?} publishes no fixed host port", what("ports")),
                }
            })
            .collect();
        let binds = scalars(&y["volumes"], &what("volumes"))
            .iter()
            .filter_map(|v| {
                let mut parts = v.split(':');
                let (source, target) = (parts.next()?, parts.next()?);
                if source.starts_with('/') {
                    panic!("{}: {v:?} mounts a path of the host", what("volumes"));
                }
                source
                    .starts_with('.')
                    .then(|| (source.to_owned(), target.to_owned()))
            })
            .collect();
        let healthcheck = match &y["healthcheck"]["test"] {
            Yaml::BadValue => None,
            Yaml::Array(_) => {
                let test = scalars(&y["healthcheck"]["test"], &what("healthcheck.test"));
                match test.first().map(String::as_str) {
                    Some("CMD") => Some(test[1..].to_vec()),
                    Some("NONE") => None,
                    _ => panic!(
                        "{}: {test:?}: only the CMD form runs in the distroless image (it has no shell)",
                        what("healthcheck.test")
                    ),
                }
            }
            other => panic!(
                "{}: {other:?}: the string form needs a shell, which the distroless image has not",
                what("healthcheck.test")
            ),
        };
        let build = match &y["build"] {
            Yaml::BadValue => None,
            b => Some((
                scalar(&b["context"], &what("build.context")),
                match &b["dockerfile"] {
                    Yaml::BadValue => "Dockerfile".to_owned(),
                    d => scalar(d, &what("build.dockerfile")),
                },
            )),
        };
        Service {
            name: name.to_owned(),
            image: match &y["image"] {
                Yaml::BadValue => String::new(),
                i => scalar(i, &what("image")),
            },
            build,
            entrypoint: (!y["entrypoint"].is_badvalue()).then(|| list_or_string("entrypoint")),
            command: list_or_string("command"),
            env_file: scalars(&y["env_file"], &what("env_file")),
            environment,
            depends_on,
            ports,
            binds,
            healthcheck,
            restart: (!y["restart"].is_badvalue()).then(|| scalar(&y["restart"], &what("restart"))),
            stop_grace_period: (!y["stop_grace_period"].is_badvalue()).then(|| {
                duration(
                    &scalar(&y["stop_grace_period"], &what("stop_grace_period")),
                    &what("stop_grace_period"),
                )
            }),
        }
    }

    /// The kitsync subcommand (`migrate`, `ingress`, `worker`, …).
    fn subcommand(&self) -> &str {
        self.command.first().map_or("", String::as_str)
    }
}

/// The services of compose.yaml, in file order.
#[derive(Debug)]
struct Compose {
    services: Vec<Service>,
}

impl Compose {
    fn parse(text: &str) -> Compose {
        let docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("compose.yaml: {e}"));
        assert_eq!(docs.len(), 1, "compose.yaml holds one document");
        let root = merge_keys(docs.into_iter().next().unwrap());
        let Yaml::Hash(services) = &root["services"] else {
            panic!("compose.yaml has no services")
        };
        Compose {
            services: services
                .iter()
                .map(|(k, v)| Service::parse(&scalar(k, "compose.yaml services"), v))
                .collect(),
        }
    }

    fn load() -> Compose {
        Compose::parse(&read_deploy("compose.yaml"))
    }

    fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("compose.yaml has no service {name}"))
    }

    /// The services that run the image built from deploy/Dockerfile (the one service that
    /// builds it names it; the others reuse the image by name).
    fn kitsync(&self) -> Vec<&Service> {
        let builders: Vec<&Service> = self
            .services
            .iter()
            .filter(|s| {
                s.build
                    .as_ref()
                    .is_some_and(|(_, f)| f == "deploy/Dockerfile")
            })
            .collect();
        assert_eq!(
            builders.len(),
            1,
            "one compose service builds deploy/Dockerfile: {builders:?}"
        );
        let (context, _) = builders[0].build.as_ref().unwrap();
        assert_eq!(
            deploy_dir().join(context).canonicalize().unwrap(),
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .canonicalize()
                .unwrap(),
            "the image is built from the repository root, as deploy/Dockerfile expects"
        );
        let image = &builders[0].image;
        self.services.iter().filter(|s| &s.image == image).collect()
    }

    fn with_subcommand(&self, sub: &str) -> Vec<&Service> {
        self.kitsync()
            .into_iter()
            .filter(|s| s.subcommand() == sub)
            .collect()
    }
}

/// What the final stage of deploy/Dockerfile gives every container.
#[derive(Debug)]
struct Image {
    env: Vec<(String, String)>,
    workdir: String,
    volumes: Vec<String>,
    entrypoint: Vec<String>,
}

impl Image {
    fn parse(text: &str) -> Image {
        let joined = text.replace("\\\n", " ");
        let lines: Vec<&str> = joined
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let last_from = lines
            .iter()
            .rposition(|l| l.starts_with("FROM "))
            .expect("deploy/Dockerfile has a FROM");
        let mut image = Image {
            env: Vec::new(),
            workdir: "/".into(),
            volumes: Vec::new(),
            entrypoint: Vec::new(),
        };
        let json = |l: &str| -> Vec<String> {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("deploy/Dockerfile: {l}: {e}"))
        };
        for line in &lines[last_from + 1..] {
            let (instruction, args) = line.split_once(' ').unwrap_or((line, ""));
            match instruction {
                "ENV" => {
                    for pair in args.split_whitespace() {
                        let (k, v) = pair.split_once('=').unwrap_or_else(|| {
                            panic!("deploy/Dockerfile: ENV {pair}: only the KEY=VALUE form is read here")
                        });
                        assert!(
                            !v.contains(['"', '\'', '$']),
                            "deploy/Dockerfile: ENV {pair}: quoting and variables are not read here"
                        );
                        image.env.retain(|(x, _)| x != k);
                        image.env.push((k.to_owned(), v.to_owned()));
                    }
                }
                "WORKDIR" => image.workdir = args.trim().to_owned(),
                "VOLUME" => image.volumes.extend(json(args.trim())),
                "ENTRYPOINT" => image.entrypoint = json(args.trim()),
                _ => {}
            }
        }
        image
    }

    fn load() -> Image {
        Image::parse(&read_deploy("Dockerfile"))
    }
}

/// An env file as compose reads it: `KEY=VALUE` lines, `#` comments, optional quotes.
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("env file line {l:?} is not KEY=VALUE"));
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_owned(), v.to_owned())
        })
        .collect()
}

/// compose's interpolation of `$$`, `$VAR`, `${VAR}`, `${VAR:?err}`, `${VAR?err}`,
/// `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}` and `${VAR+alt}` from `vars` (the
/// project's `.env`). A variable the file does not set is an error here, not an empty string.
fn interpolate(s: &str, vars: &HashMap<String, String>, what: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let (expr, after) = if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .unwrap_or_else(|| panic!("{what}: unclosed ${{ in {s:?}"));
            (&r[..end], &r[end + 1..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        rest = after;
        let name_end = expr
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(expr.len());
        let (name, op) = expr.split_at(name_end);
        assert!(!name.is_empty(), "{what}: a lone $ in {s:?} (write $$)");
        let value = vars.get(name);
        let set = value.is_some();
        let non_empty = value.is_some_and(|v| !v.is_empty());
        let (cond, arg) = ["?", ":?", "-", ":-", "+", ":+"]
            .iter()
            .filter_map(|o| op.strip_prefix(o).map(|a| (*o, a)))
            .max_by_key(|(o, _)| o.len())
            .unwrap_or(("", op));
        let resolved = match cond {
            "" if set => value.cloned().unwrap_or_default(),
            "" => panic!("{what}: ${{{name}}} is not set by the project's .env"),
            ":?" | "?" => {
                let ok = if cond == ":?" { non_empty } else { set };
                assert!(ok, "{what}: compose would stop here: {name}: {arg}");
                value.cloned().unwrap_or_default()
            }
            ":-" => value
                .filter(|_| non_empty)
                .cloned()
                .unwrap_or_else(|| arg.to_owned()),
            "-" => value.cloned().unwrap_or_else(|| arg.to_owned()),
            ":+" => {
                if non_empty {
                    arg.to_owned()
                } else {
                    String::new()
                }
            }
            "+" => {
                if set {
                    arg.to_owned()
                } else {
                    String::new()
                }
            }
            _ => unreachable!(),
        };
        out.push_str(&resolved);
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// The compose project on this machine
// ---------------------------------------------------------------------------------------------

/// Where a value is read: a setting of a service's process (`localhost:P` is then the host's
/// published port P, what browsers and apps reach), or a command run inside its container
/// (its health check: `127.0.0.1:P` is its own port P).
#[derive(Clone, Copy, Debug)]
enum Seen<'s> {
    Setting(&'s str),
    Inside(&'s str),
}

impl<'s> Seen<'s> {
    fn service(self) -> &'s str {
        match self {
            Seen::Setting(s) | Seen::Inside(s) => s,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Mapped {
    Same,
    To(String),
    /// Leave the variable unset (compose's `rabbitmq` on the embedded setup: no broker, the
    /// embedded queue).
    Unset,
}

/// `scheme://[userinfo@]host[:port][/rest]`, in parts.
struct Url<'a> {
    scheme: &'a str,
    userinfo: &'a str,
    host: &'a str,
    port: Option<u16>,
    rest: &'a str,
}

impl<'a> Url<'a> {
    fn parse(s: &'a str) -> Option<Result<Url<'a>, String>> {
        let (scheme, after) = s.split_once("://")?;
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (&authority[..=at], &authority[at + 1..]),
            None => ("", authority),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            match h.split_once(']') {
                Some((_, p)) => (&hostport[..hostport.len() - p.len()], p.strip_prefix(':')),
                None => return Some(Err(format!("{s:?}: unclosed [ in the host"))),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse() {
                Ok(p) => Some(p),
                Err(_) => return Some(Err(format!("{s:?}: port {p:?}"))),
            },
        };
        Some(Ok(Url {
            scheme,
            userinfo,
            host,
            port,
            rest,
        }))
    }
}

/// Rewrites what must differ between the compose project and this machine, and nothing else:
/// - a URL whose host is compose's database or broker service → the test's database URL
///   (SQLite or PostgreSQL) or broker URL (none on the embedded setup: the variable is left
///   unset and the processes use the embedded queue); the service is recognised by its image
///   (`postgres:*`, `rabbitmq:*`) and the URL's scheme must fit it;
/// - a URL whose host is a kitsync service, or `localhost`/`127.0.0.1` with a port compose
///   publishes (or, inside a container, the container's own port) → `127.0.0.1:` the local port
///   that stands for that service's port;
/// - a listen address (`0.0.0.0:P`) → `127.0.0.1:` a free local port for (service, P);
/// - a path under a bind mount of the service (`./secrets:/run/kitsync`) → the same path
///   under the test's copy of the compose project; a path under the image's `WORKDIR` or
///   `VOLUME` (`/var/lib/kitsync`) → the processes' working directory.
///
/// Anything else passes unchanged, unless it looks host-specific (a URL, a `host:port`, a
/// path, a service's name): then [`Laptop::map_value`] says which value it cannot map.
struct Laptop<'c> {
    compose: &'c Compose,
    image: &'c Image,
    database_url: String,
    amqp_url: Option<String>,
    /// The test's copy of the compose project's directory (`.env`, `secrets/`).
    project: PathBuf,
    /// The processes' working directory: the image's `WORKDIR`.
    workdir: PathBuf,
    ports: HashMap<(String, u16), u16>,
    /// `(service, port)` it listens on → on every interface (`0.0.0.0`), not only loopback.
    listens: HashMap<(String, u16), bool>,
    /// `(service, port, from outside its container)` that a URL of compose reaches.
    reached: BTreeSet<(String, u16, bool)>,
    /// Files the settings name: local path → (variable, path in the container).
    files: BTreeMap<PathBuf, (String, String)>,
    /// `(variable, from, to)` → the services it was rewritten for.
    rewrites: BTreeMap<(String, String, String), Vec<String>>,
    /// The secrets the test filled into `.env`: opaque values, passed on as they are (a
    /// base64 master key may start with `/` and is still no path).
    secrets: HashSet<String>,
}

impl<'c> Laptop<'c> {
    fn new(
        compose: &'c Compose,
        image: &'c Image,
        (database_url, amqp_url): (String, Option<String>),
        project: PathBuf,
        workdir: PathBuf,
    ) -> Laptop<'c> {
        let mut laptop = Laptop {
            compose,
            image,
            database_url,
            amqp_url,
            project,
            workdir,
            ports: HashMap::new(),
            listens: HashMap::new(),
            reached: BTreeSet::new(),
            files: BTreeMap::new(),
            rewrites: BTreeMap::new(),
            secrets: HashSet::new(),
        };
        for s in &compose.services {
            for (_, target) in &s.ports {
                laptop.reached.insert((s.name.clone(), *target, true));
            }
        }
        laptop
    }

    /// Every port of a kitsync service that compose reaches (published, named in a URL,
    /// health-checked) is one its settings make it listen on — on every interface when it
    /// is reached from outside its container.
    fn unheard_ports(&self) -> Vec<String> {
        let kitsync: Vec<&str> = self
            .compose
            .kitsync()
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        self.reached
            .iter()
            .filter(|(service, _, _)| kitsync.contains(&service.as_str()))
            .filter(|(service, port, outside)| {
                let listens = self.listens.get(&(service.clone(), *port));
                !listens.is_some_and(|all| *all || !outside)
            })
            .map(|(service, port, outside)| {
                format!(
                    "compose reaches {service}:{port}, but no setting of {service} makes kitsync listen there{}",
                    if *outside { " on every interface" } else { "" }
                )
            })
            .collect()
    }

    fn local_port(&mut self, service: &str, port: u16) -> u16 {
        if let Some(p) = self.ports.get(&(service.to_owned(), port)) {
            return *p;
        }
        let taken: BTreeSet<u16> = self.ports.values().copied().collect();
        let local = loop {
            let p = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if !taken.contains(&p) {
                break p;
            }
        };
        self.ports.insert((service.to_owned(), port), local);
        local
    }

    fn service_named(&self, service: &str) -> Option<&'c Service> {
        self.compose.services.iter().find(|s| s.name == service)
    }

    /// One value of `what` (`SERVICE: KEY`, for messages) as `seen`.
    fn map_value(&mut self, seen: Seen<'_>, what: &str, value: &str) -> Result<Mapped, String> {
        if self.secrets.contains(value) {
            return Ok(Mapped::Same);
        }
        if let Some(url) = Url::parse(value) {
            return self.map_url(seen, what, value, &url?);
        }
        let service = seen.service();
        if let Ok(addr) = value.parse::<std::net::SocketAddr>() {
            let ip = addr.ip();
            if !(ip.is_unspecified() || ip.is_loopback()) {
                return Err(format!(
                    "{what} = {value:?} listens on an address of the container's network; only 0.0.0.0/[::] or loopback can be moved to this machine"
                ));
            }
            self.listens
                .insert((service.to_owned(), addr.port()), ip.is_unspecified());
            let port = self.local_port(service, addr.port());
            return Ok(Mapped::To(format!("127.0.0.1:{port}")));
        }
        if value.starts_with('/') {
            return self.map_path(service, what, value).map(Mapped::To);
        }
        let host_port = value.rsplit_once(':').is_some_and(|(h, p)| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-[]".contains(&b))
        });
        let names_service = self.compose.services.iter().any(|s| value == s.name);
        let names_host = ["localhost", "127.0.0.1", "0.0.0.0", "[::"]
            .iter()
            .any(|h| value.contains(h));
        if host_port || names_service || names_host {
            return Err(format!(
                "{what} = {value:?} looks host-specific, and this test does not know how to map it to this machine: teach `Laptop::map_value` (tests/tests/deploy.rs) what it stands for"
            ));
        }
        Ok(Mapped::Same)
    }

    fn map_url(
        &mut self,
        seen: Seen<'_>,
        what: &str,
        value: &str,
        url: &Url<'_>,
    ) -> Result<Mapped, String> {
        let needs_port = || {
            url.port
                .ok_or_else(|| format!("{what} = {value:?} names no port"))
        };
        let local = |port: u16| {
            format!(
                "{}://{}127.0.0.1:{port}{}",
                url.scheme, url.userinfo, url.rest
            )
        };
        if let Some(target) = self.service_named(url.host) {
            let kitsync = self.compose.kitsync().iter().any(|s| s.name == target.name);
            if kitsync {
                let port = needs_port()?;
                self.reached.insert((target.name.clone(), port, true));
                let p = self.local_port(&target.name, port);
                return Ok(Mapped::To(local(p)));
            }
            let image = target.image.as_str();
            return match (image.split(':').next().unwrap_or_default(), url.scheme) {
                ("postgres", "postgres" | "postgresql") => {
                    Ok(Mapped::To(self.database_url.clone()))
                }
                ("rabbitmq", "amqp" | "amqps") => Ok(match &self.amqp_url {
                    Some(u) => Mapped::To(u.clone()),
                    None => Mapped::Unset,
                }),
                _ => Err(format!(
                    "{what} = {value:?} points at compose's {} ({image}), which this test cannot stand in for with a {} URL",
                    target.name, url.scheme
                )),
            };
        }
        match url.host {
            "localhost" | "127.0.0.1" | "[::1]" => {
                let port = needs_port()?;
                let (service, target) = match seen {
                    Seen::Inside(s) => (s.to_owned(), port),
                    Seen::Setting(_) => {
                        let publisher = self.compose.services.iter().find_map(|s| {
                            s.ports
                                .iter()
                                .find(|(published, _)| *published == port)
                                .map(|(_, target)| (s.name.clone(), *target))
                        });
                        let (publisher, target) = publisher.ok_or_else(|| {
                            format!(
                                "{what} = {value:?}: no compose service publishes port {port} on the host"
                            )
                        })?;
                        if !self.compose.kitsync().iter().any(|s| s.name == publisher) {
                            return Err(format!(
                                "{what} = {value:?} reaches {publisher} through its published port, which this test cannot stand in for"
                            ));
                        }
                        (publisher, target)
                    }
                };
                let outside = matches!(seen, Seen::Setting(_));
                self.reached.insert((service.clone(), target, outside));
                let p = self.local_port(&service, target);
                Ok(Mapped::To(format!(
                    "{}://{}{}:{p}{}",
                    url.scheme, url.userinfo, url.host, url.rest
                )))
            }
            other => Err(format!(
                "{what} = {value:?} points at {other:?}, which is neither a compose service nor this machine: this test does not know how to map it"
            )),
        }
    }

    fn map_path(&mut self, service: &str, what: &str, value: &str) -> Result<String, String> {
        let under = |root: &str| -> Option<String> {
            let root = root.trim_end_matches('/');
            if value == root {
                Some(String::new())
            } else {
                value
                    .strip_prefix(root)
                    .and_then(|r| r.strip_prefix('/'))
                    .map(str::to_owned)
            }
        };
        let svc = self.service_named(service);
        let bind = svc.and_then(|s| {
            s.binds
                .iter()
                .find_map(|(source, target)| under(target).map(|r| (source.clone(), r)))
        });
        let local = if let Some((source, rest)) = bind {
            self.project
                .join(source.trim_start_matches("./"))
                .join(rest)
        } else if let Some(rest) = std::iter::once(&self.image.workdir)
            .chain(&self.image.volumes)
            .find_map(|root| under(root))
        {
            self.workdir.join(rest)
        } else {
            return Err(format!(
                "{what} = {value:?} is a path in the container that neither a bind mount of {service} nor the image's WORKDIR/VOLUME covers: this test does not know what to put there"
            ));
        };
        self.files.insert(
            local.clone(),
            (
                what.rsplit(' ').next().unwrap_or(what).to_owned(),
                value.to_owned(),
            ),
        );
        Ok(local.display().to_string())
    }

    /// Every variable a process of `svc` gets, as compose assembles them — the image's `ENV`,
    /// then each `env_file` (in the test's copy of the project), then `environment`
    /// (interpolated from the project's `.env`), later ones winning — each mapped.
    fn settings(
        &mut self,
        svc: &Service,
        dotenv: &HashMap<String, String>,
    ) -> Vec<(String, Option<String>)> {
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: String| {
            vars.retain(|(x, _)| x != k);
            vars.push((k.to_owned(), v));
        };
        for (k, v) in &self.image.env {
            set(k, v.clone());
        }
        for f in &svc.env_file {
            let path = self.project.join(f);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "compose.yaml: {} reads env_file {f}, which this test does not provide ({e}); it fills in only .env, from .env.example",
                    svc.name
                )
            });
            for (k, v) in parse_env_file(&text) {
                set(&k, v);
            }
        }
        for (k, v) in &svc.environment {
            let what = format!("compose.yaml services.{}.environment.{k}", svc.name);
            set(k, interpolate(v, dotenv, &what));
        }
        vars.into_iter()
            .map(|(k, v)| {
                let what = format!("{}: {k}", svc.name);
                let mapped = self
                    .map_value(Seen::Setting(&svc.name), &what, &v)
                    .unwrap_or_else(|e| panic!("{e}"));
                let out = match mapped {
                    Mapped::Same => Some(v.clone()),
                    Mapped::To(to) => Some(to),
                    Mapped::Unset => None,
                };
                if out.as_deref() != Some(v.as_str()) {
                    let to = out
                        .clone()
                        .unwrap_or_else(|| "(unset: the embedded queue)".into());
                    self.rewrites
                        .entry((k.clone(), v, to))
                        .or_default()
                        .push(svc.name.clone());
                }
                (k, out)
            })
            .collect()
    }

    /// The service's health check as `kitsync` arguments, mapped as seen inside its
    /// container; `None` when it has none.
    fn healthcheck(&mut self, svc: &Service) -> Option<Vec<String>> {
        let test = svc.healthcheck.as_ref()?;
        assert_eq!(
            test.first(),
            self.image.entrypoint.first(),
            "{}'s health check runs the image's binary",
            svc.name
        );
        Some(
            test[1..]
                .iter()
                .map(|a| {
                    let what = format!("{}: healthcheck", svc.name);
                    match self
                        .map_value(Seen::Inside(&svc.name), &what, a)
                        .unwrap_or_else(|e| panic!("{e}"))
                    {
                        Mapped::Same => a.clone(),
                        Mapped::To(to) => to,
                        Mapped::Unset => panic!("{what}: {a:?} cannot be left out"),
                    }
                })
                .collect(),
        )
    }
}

/// deploy/.env.example filled in the way its comments ask, written as `.env` in `project`:
/// a `replace-with-…` placeholder gets the test's secret of that name, and an optional setting
/// (a commented-out `# KITSYNC_…=…` line) is switched on when its own description — the
/// comment lines right above it — says to uncomment it; the others (a rotation's previous
/// keys) stay off. The `change-me-…` passwords stay: compose puts them only into the
/// postgres/rabbitmq URLs, which the test replaces. Returns the variables, the optional
/// settings left off, and the secrets filled in.
fn fill_env_example(env: &Env, project: &Path) -> FilledEnv {
    let is_setting = |l: &str| {
        l.split_once('=').is_some_and(|(k, _)| {
            k.starts_with("KITSYNC_")
                && k.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
    };
    let mut out = String::new();
    let mut left_off = Vec::new();
    let mut secrets = HashSet::new();
    let mut description = String::new();
    for line in read_deploy(".env.example").lines() {
        let commented = line.strip_prefix('#').map(str::trim_start);
        let optional = commented.filter(|l| is_setting(l));
        let line = match optional {
            Some(setting) if description.contains("uncomment") => setting,
            Some(setting) => {
                left_off.push(setting.split('=').next().unwrap_or_default().to_owned());
                line
            }
            None => line,
        };
        match commented {
            Some(text) if optional.is_none() => {
                description.push_str(text);
                description.push('\n');
            }
            _ => description.clear(),
        }
        let filled = match line.split_once('=') {
            Some((k, v)) if !line.starts_with('#') && v.starts_with("replace-with-") => {
                let secret = match k {
                    "KITSYNC_KIT__ACCESS_KEYS" => env.access_keys.join(","),
                    "KITSYNC_SECRETS__MASTER_KEY" => env.master_key.clone(),
                    _ => panic!(
                        "deploy/.env.example asks for {k} ({v}), which this test does not know how to fill in"
                    ),
                };
                secrets.insert(secret.clone());
                format!("{k}={secret}")
            }
            _ => line.to_owned(),
        };
        out.push_str(&filled);
        out.push('\n');
    }
    std::fs::create_dir_all(project).unwrap();
    std::fs::write(project.join(".env"), &out).unwrap();
    FilledEnv {
        vars: parse_env_file(&out),
        left_off,
        secrets,
    }
}

struct FilledEnv {
    vars: Vec<(String, String)>,
    left_off: Vec<String>,
    secrets: HashSet<String>,
}

/// The environment of a running process (Linux), to see what it really got.
fn environ_of(pid: u32) -> Option<HashMap<String, String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// The burst: callbacks of every kind over several tenants, and the directory they must make
// ---------------------------------------------------------------------------------------------

/// The marketplace version of `payload::time(offset_ms)`: that instant, read as UTC+8, in
/// Unix milliseconds.
fn version(offset_ms: i64) -> i64 {
    let t = chrono::NaiveDateTime::parse_from_str(&time(offset_ms), "%Y%m%d%H%M%S%3f").unwrap();
    t.and_local_timezone(chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .unwrap()
        .timestamp_millis()
}

struct Burst {
    /// `(kind, body)`, in sending order.
    calls: Vec<(&'static str, String)>,
    /// Tenant → its `DirectoryState` as JSON (without the sealed client secrets).
    expected: BTreeMap<String, Value>,
    /// `(tenant, app, plaintext clientSecret)`.
    secrets: Vec<(String, String, String)>,
    /// Journal rows the burst must write, whatever the order it is applied in.
    member_rows: i64,
    department_rows: i64,
}

/// Per tenant: its tenantSync, two apps (clientSecret RSA-encrypted), a full department
/// sync of ten, ten single department adds (newer than the full sync, so it never removes
/// them and its mass-deletion guard stays quiet), 20 authSyncs of one to three users per app,
/// and a later deauthorisation of five of them per app. Every change is distinct, so the
/// final directory does not depend on the order the callbacks are applied in, and a re-sent
/// callback is a duplicate that changes nothing.
fn burst(tenants: usize, kp: &TestKeyPair) -> Burst {
    const APPS: usize = 2;
    const AUTHS: usize = 20;
    let mut b = Burst {
        calls: Vec::new(),
        expected: BTreeMap::new(),
        secrets: Vec::new(),
        member_rows: 0,
        department_rows: 0,
    };
    for t in 0..tenants {
        let tid = format!("compose-t{t}");
        let name = format!("Compose Corp {t}");
        b.calls
            .push((TENANT_SYNC, payload::tenant(&tid, &name, 1, 0, &time(0))));
        let mut apps = Vec::new();
        for a in 0..APPS {
            let app = format!("{tid}-app{a}");
            let client = format!("client-{tid}-{a}");
            let secret = format!("secret-{app}-{}", uuid::Uuid::new_v4().simple());
            let ciphertext = kp.encrypt(&secret, OaepVariant::Sha256).unwrap();
            let off = 500 + a as i64;
            b.calls.push((
                APPLICATION_SYNC,
                payload::app(&tid, &app, &client, &ciphertext, &time(off)),
            ));
            apps.push(
                json!({"appId": app, "clientId": client, "test": false, "version": version(off)}),
            );
            b.secrets.push((tid.clone(), app, secret));
        }
        let mut departments = Vec::new();
        let codes: Vec<String> = (0..20).map(|k| format!("D{k:02}")).collect();
        let full: Vec<(&str, String, &str)> = (0..10)
            .map(|k| {
                let parent = if k == 0 {
                    ""
                } else {
                    codes[(k - 1) / 3].as_str()
                };
                (
                    codes[k].as_str(),
                    format!("Department {k} of {tid}"),
                    parent,
                )
            })
            .collect();
        let orgs: Vec<(&str, &str, &str)> =
            full.iter().map(|(c, n, p)| (*c, n.as_str(), *p)).collect();
        b.calls
            .push((ALL_ORG_SYNC, payload::all_org(&tid, &orgs, &time(1_000))));
        for (code, name, parent) in &full {
            departments.push(json!({
                "orgCode": code, "orgName": name,
                "parentCode": if parent.is_empty() { Value::Null } else { json!(parent) },
                "test": false, "version": version(1_000),
            }));
        }
        for k in 10..20 {
            let off = 2_000 + k as i64;
            let name = format!("Team {k} of {tid}");
            let parent = &codes[k - 10];
            b.calls.push((
                SINGLE_ORG_SYNC,
                payload::single_org(&tid, &codes[k], &name, parent, 1, &time(off)),
            ));
            departments.push(json!({
                "orgCode": codes[k], "orgName": name, "parentCode": parent,
                "test": false, "version": version(off),
            }));
        }
        b.department_rows += departments.len() as i64;
        let mut members = Vec::new();
        let mut authorizations = Vec::new();
        for a in 0..APPS {
            let app = format!("{tid}-app{a}");
            for i in 0..AUTHS {
                let off = 10_000 + (a * 1_000 + i) as i64;
                let org = &codes[i % 20];
                let users: Vec<User> = (0..1 + i % 3)
                    .map(|j| {
                        let role = if j == 0 && i % 5 == 0 {
                            "admin"
                        } else {
                            "user"
                        };
                        User::new(&format!("{tid}-a{a}-u{i:02}-{j}"), org, role, i % 7 != 3)
                    })
                    .collect();
                b.calls
                    .push((AUTH_SYNC, payload::auth(&tid, &app, 1, &users, &time(off))));
                b.member_rows += users.len() as i64;
                for u in &users {
                    members.push(json!({
                        "userName": u.user_name, "name": u.name, "orgCode": org,
                        "position": "engineer", "employeeCode": null, "employeeType": 1,
                        "mobile": null, "email": null, "workPlace": null, "entryDate": null,
                        "extension": null, "test": false, "version": version(off),
                    }));
                }
                if i % 4 == 1 {
                    // Removed later: the authorisation goes, the member's profile stays.
                    let off = 50_000 + (a * 1_000 + i) as i64;
                    b.calls
                        .push((AUTH_SYNC, payload::auth(&tid, &app, 0, &users, &time(off))));
                    b.member_rows += users.len() as i64;
                } else {
                    for u in &users {
                        authorizations.push(json!({
                            "appId": app, "userName": u.user_name, "role": u.role,
                            "enabled": u.enable, "test": false, "version": version(off),
                        }));
                    }
                }
            }
        }
        let by = |keys: &'static [&'static str]| {
            move |x: &Value, y: &Value| {
                let k = |v: &Value| {
                    keys.iter()
                        .map(|f| v[*f].as_str().unwrap_or_default().to_owned())
                        .collect::<Vec<_>>()
                };
                k(x).cmp(&k(y))
            }
        };
        apps.sort_by(by(&["appId"]));
        departments.sort_by(by(&["orgCode"]));
        members.sort_by(by(&["userName"]));
        authorizations.sort_by(by(&["appId", "userName"]));
        b.expected.insert(
            tid.clone(),
            json!({
                "tenant": {
                    "tenantCode": format!("code-{tid}"), "name": name,
                    "domainName": format!("https://{tid}.tenantaccount.example.com"),
                    "test": false, "version": version(0),
                },
                "instanceIds": [format!("inst-{tid}")],
                "apps": apps,
                "departments": departments,
                "members": members,
                "authorizations": authorizations,
            }),
        );
    }
    // Mixed, so the kills fall among every kind of callback (a fixed shuffle: reproducible).
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..b.calls.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        b.calls.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    b
}

/// What differs between two lists of rows: missing and unexpected ones (the first few).
fn row_diff(what: &str, expected: &Value, got: &Value) -> Option<String> {
    let rows = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .map(|a| a.iter().map(Value::to_string).collect())
            .unwrap_or_default()
    };
    let (e, g) = (rows(expected), rows(got));
    let missing: Vec<&String> = e.difference(&g).take(5).collect();
    let unexpected: Vec<&String> = g.difference(&e).take(5).collect();
    let n = |v: &Value| v.as_array().map_or(0, Vec::len);
    (expected != got).then(|| {
        format!(
            "{what}: expected {} rows, found {}; missing (first 5): {missing:#?}; unexpected (first 5): {unexpected:#?}",
            n(expected),
            n(got)
        )
    })
}

/// Why callbacks were sent again.
#[derive(Default, Clone, Copy)]
struct Resends {
    /// The request was sent and the connection died before an answer (the kill).
    cut: usize,
    /// Nothing listened any more.
    refused: usize,
    /// Answered `000005` (busy, or the queue did not confirm in time).
    busy: usize,
}

/// Sends one callback the way the marketplace does: signed afresh on every attempt, and
/// re-sent — to the other ingress when this one did not answer — until it is answered
/// `000000`.
async fn deliver(kits: &[Kit], current: &mut usize, kind: &str, body: &str, again: &mut Resends) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let kit = &kits[*current];
        let last = match kit.send_signed(kind, &kit.signed(body)).await {
            Ok(r) if r.ok() => {
                assert!(
                    r.body_sign_verifies(&kit.key),
                    "{kind}: Body-Sign must verify under the access key: {r:?}"
                );
                return;
            }
            Ok(r) if r.code == "000005" => {
                again.busy += 1;
                format!("{r:?}")
            }
            Ok(r) => panic!("{kind} refused by {}: {r:?}\n{body}", kit.base_url()),
            // No answer (the ingress is gone): the marketplace's retry reaches another one.
            Err(e) => {
                if e.contains("(Connect)") {
                    again.refused += 1;
                } else {
                    again.cut += 1;
                }
                *current = (*current + 1) % kits.len();
                e
            }
        };
        assert!(
            Instant::now() < deadline,
            "{kind} still not accepted after 45 s; last: {last}\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

type Overrides = Vec<(String, Option<String>)>;

/// The kitsync services by role, and infrastructure (the database, the broker).
struct Roles<'c> {
    migrate: &'c Service,
    ingresses: Vec<&'c Service>,
    workers: Vec<&'c Service>,
    infra: Vec<&'c Service>,
}

/// The roles, and what compose promises about the order: one `migrate` that completes
/// before the ingresses and workers start, which do not migrate themselves (`--no-migrate`:
/// they refuse a database `migrate` has not brought up to date); nothing waits for a health
/// check that does not exist.
fn roles(compose: &Compose) -> Roles<'_> {
    let kitsync = compose.kitsync();
    let migrates = compose.with_subcommand("migrate");
    assert_eq!(migrates.len(), 1, "one migrate service: {migrates:?}");
    let migrate = migrates[0];
    assert_eq!(
        migrate.restart.as_deref(),
        Some("no"),
        "a one-shot service must not be restarted, or it never completes"
    );
    let mut ingresses = compose.with_subcommand("ingress");
    let mut workers = compose.with_subcommand("worker");
    ingresses.sort_by(|a, b| a.name.cmp(&b.name));
    workers.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        ingresses.len() >= 2 && workers.len() >= 2,
        "two ingresses and two workers"
    );
    assert_eq!(
        kitsync.len(),
        1 + ingresses.len() + workers.len(),
        "every kitsync service is a migrate, an ingress or a worker: {kitsync:?}"
    );
    let infra: Vec<&Service> = compose
        .services
        .iter()
        .filter(|s| !kitsync.iter().any(|k| k.name == s.name))
        .collect();
    for s in ingresses.iter().chain(&workers) {
        assert!(
            s.depends_on.contains(&(
                migrate.name.clone(),
                "service_completed_successfully".into()
            )),
            "{} must wait until {} completed successfully: {:?}",
            s.name,
            migrate.name,
            s.depends_on
        );
        assert!(
            s.command.iter().any(|a| a == "--no-migrate"),
            "{} runs with --no-migrate: {:?}",
            s.name,
            s.command
        );
    }
    for s in &kitsync {
        assert!(
            s.entrypoint.is_none(),
            "{} keeps the image's entrypoint",
            s.name
        );
        for (dep, condition) in &s.depends_on {
            if condition == "service_healthy" {
                assert!(
                    compose.service(dep).healthcheck.is_some(),
                    "{} waits until {dep} is healthy, but {dep} has no health check: compose would wait forever",
                    s.name
                );
            }
        }
    }
    let database = infra
        .iter()
        .find(|s| s.image.starts_with("postgres:"))
        .expect("a postgres service");
    assert!(
        migrate
            .depends_on
            .contains(&(database.name.clone(), "service_healthy".into())),
        "migrate waits for a healthy database: {:?}",
        migrate.depends_on
    );
    Roles {
        migrate,
        ingresses,
        workers,
        infra,
    }
}

/// The compose project on this machine: each kitsync service's settings and health check,
/// mapped by [`Laptop`].
struct Project {
    settings: BTreeMap<String, Overrides>,
    checks: BTreeMap<String, Vec<String>>,
}

/// Fills in `.env` from the example, maps every service's settings and health check, checks
/// that what compose reaches is listened on, writes the files the settings name (the RSA
/// key for the apps' clientSecret), and prints what was rewritten.
fn prepare(env: &Env, compose: &Compose, image: &Image, kp: &TestKeyPair) -> Project {
    let project = env.dir().join("compose-project");
    let FilledEnv {
        vars,
        left_off,
        secrets,
    } = fill_env_example(env, &project);
    let dotenv: HashMap<String, String> = vars.into_iter().collect();
    let broker = env
        .server_amqp_url
        .clone()
        .or_else(|| env.queue.amqp_url.clone());
    let mut laptop = Laptop::new(
        compose,
        image,
        (env.db.url.clone(), broker),
        project,
        env.dir().to_path_buf(),
    );
    laptop.secrets = secrets;
    let kitsync = compose.kitsync();
    let settings: BTreeMap<String, Overrides> = kitsync
        .iter()
        .map(|s| (s.name.clone(), laptop.settings(s, &dotenv)))
        .collect();
    let checks: BTreeMap<String, Vec<String>> = kitsync
        .iter()
        .filter_map(|s| laptop.healthcheck(s).map(|c| (s.name.clone(), c)))
        .collect();
    let unheard = laptop.unheard_ports();
    assert!(unheard.is_empty(), "{}", unheard.join("\n"));
    for (local, (key, in_container)) in &laptop.files {
        match key.as_str() {
            "KITSYNC_KIT__RSA_PRIVATE_KEY_PATH" => {
                std::fs::create_dir_all(local.parent().unwrap()).unwrap();
                std::fs::write(local, kp.private_pem().unwrap()).unwrap();
                let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
                std::fs::set_permissions(local, private).unwrap();
            }
            _ => panic!("{key} names {in_container}; this test does not know what to put there"),
        }
    }
    if !left_off.is_empty() {
        eprintln!(
            "compose: optional settings of .env.example left commented out: {}",
            left_off.join(", ")
        );
    }
    let mut rewrites: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for ((key, from, to), services) in &laptop.rewrites {
        rewrites
            .entry((key, from))
            .or_default()
            .push(format!("{to} ({})", services.join(", ")));
    }
    for ((key, from), to) in rewrites {
        eprintln!("compose: {key}={from} → {}", to.join("; "));
    }
    Project { settings, checks }
}

/// Runs `kitsync ARGS` of a health check with `overrides` and says whether it passed.
async fn healthy(env: &Env, args: &[String], overrides: &[(String, Option<String>)]) -> bool {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.cli_with(&args, overrides).await.status.success()
}

/// Starts the kitsync services in the order their `depends_on` gives: a one-shot service
/// (`restart: "no"`) runs to completion and must exit 0; the others are started together
/// once what they wait for is there, and pass their health check. The test's database and
/// broker stand for compose's postgres and rabbitmq and are up already.
async fn start_in_dependency_order(
    env: &Env,
    compose: &Compose,
    roles: &Roles<'_>,
    project: &Project,
) -> BTreeMap<String, Server> {
    let mut completed: BTreeSet<String> = BTreeSet::new();
    let mut healthy_now: BTreeSet<String> = BTreeSet::new();
    let mut running: BTreeMap<String, Server> = BTreeMap::new();
    let mut pending: Vec<&Service> = compose.kitsync();
    while !pending.is_empty() {
        let ready: Vec<&Service> = pending
            .iter()
            .copied()
            .filter(|s| {
                s.depends_on.iter().all(|(dep, condition)| {
                    if roles.infra.iter().any(|i| &i.name == dep) {
                        return true;
                    }
                    match condition.as_str() {
                        "service_completed_successfully" => completed.contains(dep),
                        "service_healthy" => healthy_now.contains(dep),
                        "service_started" => running.contains_key(dep) || completed.contains(dep),
                        other => panic!("{}: depends_on condition {other}", s.name),
                    }
                })
            })
            .collect();
        assert!(
            !ready.is_empty(),
            "depends_on never lets these start: {pending:?}"
        );
        pending.retain(|s| !ready.iter().any(|r| r.name == s.name));
        let (one_shots, long): (Vec<&Service>, Vec<&Service>) = ready
            .into_iter()
            .partition(|s| s.restart.as_deref() == Some("no"));
        for s in one_shots {
            let args: Vec<&str> = s.command.iter().map(String::as_str).collect();
            let out = env.cli_with(&args, &project.settings[&s.name]).await;
            assert!(
                out.status.success(),
                "{} failed ({}):\n{}",
                s.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            completed.insert(s.name.clone());
        }
        let started = futures_util::future::join_all(long.iter().map(|s| {
            let args: Vec<&str> = s.command.iter().map(String::as_str).collect();
            let overrides = &project.settings[&s.name];
            async move { env.start_with(&args, overrides).await }
        }))
        .await;
        for (s, server) in long.iter().zip(started) {
            if let Some(check) = project.checks.get(&s.name) {
                wait_until(
                    &format!("{} passes its health check", s.name),
                    Duration::from_secs(30),
                    || healthy(env, check, &project.settings[&s.name]),
                )
                .await;
                healthy_now.insert(s.name.clone());
            }
            running.insert(s.name.clone(), server);
        }
    }
    running
}

/// Each process got compose's settings (the mapped ones as mapped, every other one as
/// written), and the ingresses' login bridge announces the public URL of `.env` as its
/// issuer.
async fn check_what_the_processes_got(
    roles: &Roles<'_>,
    project: &Project,
    running: &BTreeMap<String, Server>,
) {
    for (name, server) in running {
        let Some(seen) = environ_of(server.pid()) else {
            eprintln!("compose: no /proc here, the processes' environments are not checked");
            break;
        };
        for (k, v) in &project.settings[name] {
            assert_eq!(seen.get(k), v.as_ref(), "{name}: {k}");
        }
    }
    for s in &roles.ingresses {
        let public = project.settings[&s.name]
            .iter()
            .find(|(k, _)| k == "KITSYNC_LOGIN__PUBLIC_URL")
            .and_then(|(_, v)| v.clone());
        if let Some(public) = public {
            let (status, doc) = running[&s.name]
                .kit()
                .api_get("/.well-known/openid-configuration", None)
                .await;
            assert_eq!(status, 200, "{}: discovery", s.name);
            assert_eq!(doc["issuer"], public.as_str(), "{}: issuer", s.name);
        }
    }
}

/// Until the queue is drained and the directory holds every change of the burst — or, when
/// some change never arrives, until nothing has moved for 5 s (longer than the embedded
/// queue's lease), so that the checks after it say what is missing.
async fn until_drained(env: &Env, b: &Burst) {
    let rows = |entity: &str| format!("SELECT COUNT(*) FROM journal WHERE entity = '{entity}'");
    let deadline = Instant::now() + Duration::from_secs(45);
    let (mut seen, mut moved) = ((-1, -1), Instant::now());
    loop {
        let now = (
            env.scalar(&rows("member")).await,
            env.scalar(&rows("department")).await,
        );
        if now != seen {
            (seen, moved) = (now, Instant::now());
        }
        let complete = now.0 >= b.member_rows && now.1 >= b.department_rows;
        let queued = env.queued().await;
        if queued == 0 && (complete || moved.elapsed() > Duration::from_secs(5)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not drained within 45 s: {queued} queued, {} of {} member and {} of {} department changes applied",
            now.0,
            b.member_rows,
            now.1,
            b.department_rows
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nothing lost, nothing doubled: each tenant's directory is exactly the expected one, the
/// tables hold exactly the expected rows, the journal has one row per change, nothing was
/// dead-lettered or held, nothing is left queued.
async fn assert_exactly_the_burst(env: &Env, b: &Burst) {
    for (tid, expected) in &b.expected {
        let got = serde_json::to_value(env.snapshot(tid).await).unwrap();
        let diffs: Vec<String> = ["apps", "departments", "members", "authorizations"]
            .iter()
            .filter_map(|s| row_diff(&format!("{tid} {s}"), &expected[s], &got[s]))
            .collect();
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
        assert_eq!(got, *expected, "{tid}: the whole directory");
    }
    let in_tenants = b
        .expected
        .keys()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(",");
    let live = |table: &str| {
        format!(
            "SELECT COUNT(*) FROM {table} WHERE deleted = FALSE AND tenant_id IN ({in_tenants})"
        )
    };
    let sum = |section: &str| -> i64 {
        b.expected
            .values()
            .map(|t| t[section].as_array().map_or(0, Vec::len) as i64)
            .sum()
    };
    assert_eq!(
        env.scalar(&live("tenants")).await,
        b.expected.len() as i64,
        "live tenants"
    );
    for table in ["apps", "departments", "members", "authorizations"] {
        assert_eq!(env.scalar(&live(table)).await, sum(table), "live {table}");
    }
    let journal = |entity: &str| format!("SELECT COUNT(*) FROM journal WHERE entity = '{entity}'");
    assert_eq!(
        env.scalar(&journal("member")).await,
        b.member_rows,
        "one journal row per member change: none lost, none applied twice"
    );
    assert_eq!(
        env.scalar(&journal("department")).await,
        b.department_rows,
        "one journal row per department change"
    );
    assert_eq!(
        env.scalar(&journal("app")).await,
        sum("apps"),
        "one journal row per app binding"
    );
    assert_eq!(
        env.scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM journal \
             GROUP BY tenant_id, entity, entity_key, action, version HAVING COUNT(*) > 1) d"
        )
        .await,
        0,
        "no change journaled twice"
    );
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM dead_letters").await,
        0,
        "no dead letters"
    );
    assert_eq!(
        env.scalar("SELECT COUNT(*) FROM org_plans WHERE status = 'held'")
            .await,
        0,
        "no full sync held by the mass-deletion guard"
    );
    assert_eq!(env.queued().await, 0, "nothing left in the queue");
}

/// The compose topology as local processes, a burst of callbacks, and SIGKILL for one ingress
/// and one worker in the middle of it: every callback answered `000000` is in the directory
/// exactly once, nothing is dead-lettered, and the survivors stay healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_topology_loses_and_doubles_nothing_when_an_ingress_and_a_worker_die() {
    const SENDERS: usize = 16;
    let compose = Compose::load();
    let image = Image::load();
    let roles = roles(&compose);
    let mut env = Env::unmigrated("compose").await;
    // The embedded queue gives a killed worker's leases back after this long (RabbitMQ
    // requeues its unacknowledged messages when its connection drops).
    env.queue.lease_ms = 3_000;
    let kp = TestKeyPair::generate_3072().unwrap();
    let project = prepare(&env, &compose, &image, &kp);
    assert!(
        project.settings[&roles.ingresses[0].name]
            .iter()
            .any(|(k, v)| k == "KITSYNC_KIT__RSA_PRIVATE_KEY_PATH" && v.is_some()),
        "the compose topology decrypts clientSecrets (deploy/.env.example names the RSA key)"
    );

    // Before `migrate`, an ingress refuses the database: the order compose enforces matters.
    let early = roles.ingresses[0];
    let args: Vec<&str> = early.command.iter().map(String::as_str).collect();
    let out = env.cli_with(&args, &project.settings[&early.name]).await;
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("kitsync migrate"),
        "{} on an unmigrated database must refuse to start and say to run `kitsync migrate`: {}",
        early.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut running = start_in_dependency_order(&env, &compose, &roles, &project).await;
    assert!(
        env.tables().await.iter().any(|t| t == "journal"),
        "{} created the schema",
        roles.migrate.name
    );
    check_what_the_processes_got(&roles, &project, &running).await;

    // The burst, from concurrent senders spread over the ingresses. Each sender pauses at two
    // thirds of its share until the kills are done, so they always fall inside the burst.
    let b = burst(6, &kp);
    let total = b.calls.len();
    let kits: Vec<Kit> = roles
        .ingresses
        .iter()
        .map(|s| running[&s.name].kit())
        .collect();
    let calls = Arc::new(b.calls.clone());
    let answered = Arc::new(AtomicUsize::new(0));
    let resends = Arc::new(Mutex::new(Resends::default()));
    let (killed_tx, killed) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for k in 0..SENDERS {
        let (kits, calls, mut killed) = (kits.clone(), Arc::clone(&calls), killed.clone());
        let (answered, resends) = (Arc::clone(&answered), Arc::clone(&resends));
        senders.spawn(async move {
            let mine: Vec<usize> = (k..calls.len()).step_by(SENDERS).collect();
            let mut current = k % kits.len();
            let mut again = Resends::default();
            for (n, i) in mine.iter().enumerate() {
                if n == mine.len() * 2 / 3 {
                    killed.wait_for(|k| *k).await.unwrap();
                }
                let (kind, body) = &calls[*i];
                deliver(&kits, &mut current, kind, body, &mut again).await;
                answered.fetch_add(1, Ordering::SeqCst);
            }
            let mut all = resends.lock().unwrap();
            all.cut += again.cut;
            all.refused += again.refused;
            all.busy += again.busy;
        });
    }

    // While the workers apply, SIGKILL the last ingress and the first worker.
    let member_rows = || env.scalar("SELECT COUNT(*) FROM journal WHERE entity = 'member'");
    wait_until(
        "the workers are applying the burst",
        Duration::from_secs(45),
        || async { answered.load(Ordering::SeqCst) >= total / 3 && member_rows().await > 0 },
    )
    .await;
    let victim_ingress = roles.ingresses.last().unwrap().name.clone();
    let victim_worker = roles.workers[0].name.clone();
    for victim in [&victim_ingress, &victim_worker] {
        running.remove(victim).unwrap().kill9();
    }
    let kill_ms = started.elapsed().as_millis();
    let (answered_at_kill, applied_at_kill) =
        (answered.load(Ordering::SeqCst), member_rows().await);
    killed_tx.send_replace(true);
    assert!(
        applied_at_kill < b.member_rows,
        "the kills must fall in the middle of the applying ({applied_at_kill} of {} member changes applied)",
        b.member_rows
    );
    while let Some(done) = senders.join_next().await {
        done.unwrap();
    }
    assert_eq!(
        answered.load(Ordering::SeqCst),
        total,
        "every callback answered 000000"
    );
    let again = *resends.lock().unwrap();
    until_drained(&env, &b).await;
    let all_applied_ms = started.elapsed().as_millis();

    // The survivors stay up and healthy; then they stop the way compose stops them.
    for (name, server) in &mut running {
        assert!(
            server.try_wait().is_none(),
            "{name} exited:\n{}",
            server.logs()
        );
        if let Some(check) = project.checks.get(name) {
            assert!(
                healthy(&env, check, &project.settings[name]).await,
                "{name}'s health check fails"
            );
        }
    }
    for (name, server) in &mut running {
        let grace = compose
            .service(name)
            .stop_grace_period
            .unwrap_or(Duration::from_secs(10));
        let status = server.terminate(grace).await;
        assert!(
            status.success(),
            "{name} exit status {status}:\n{}",
            server.logs()
        );
    }

    assert_exactly_the_burst(&env, &b).await;
    // The clientSecrets went through the RSA key compose mounts: decrypted at an ingress,
    // sealed with the master key from .env, and readable with the same settings.
    let reader = &project.settings[&roles.workers.last().unwrap().name];
    for (tid, app, secret) in [b.secrets.first().unwrap(), b.secrets.last().unwrap()] {
        let out = env
            .cli_with(&["apps", "show", tid, app, "--reveal-secret"], reader)
            .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(shown["clientSecret"], secret.as_str(), "{tid}/{app}");
    }

    eprintln!(
        "compose: {total} callbacks, killed {victim_ingress} and {victim_worker} at {kill_ms} ms ({answered_at_kill} answered, {applied_at_kill} of {} member changes applied), re-sent {} cut off + {} refused + {} busy, all applied in {all_applied_ms} ms ({}, {})",
        b.member_rows,
        again.cut,
        again.refused,
        again.busy,
        if env.is_postgres() { "PostgreSQL" } else { "SQLite" },
        if env.is_amqp() { "RabbitMQ" } else { "the embedded queue" },
    );
    env.finish().await;
}

/// The mapping refuses what it cannot place on this machine instead of passing it through.
#[test]
fn the_compose_mapping_refuses_host_specific_values_it_does_not_know() {
    let compose = Compose::parse(
        "services:\n  db:\n    image: postgres:16\n    ports: [\"5432:5432\"]\n  cache:\n    image: redis:7\n  mq:\n    image: rabbitmq:4\n  app:\n    image: kitsync:local\n    build: {context: .., dockerfile: deploy/Dockerfile}\n    ports: [\"8080:8080\"]\n    volumes: [\"./secrets:/run/kitsync:ro\"]\n",
    );
    let image = Image::parse(
        "FROM scratch\nWORKDIR /var/lib/kitsync\nENTRYPOINT [\"/usr/local/bin/kitsync\"]\n",
    );
    // A laptop with nothing of its own: an SQLite file, no broker.
    let fresh = || {
        Laptop::new(
            &compose,
            &image,
            ("sqlite://here.sqlite".into(), None),
            PathBuf::from("/tmp/project"),
            PathBuf::from("/tmp/work"),
        )
    };
    let mut laptop = fresh();
    let map = |l: &mut Laptop<'_>, v: &str| l.map_value(Seen::Setting("app"), "app: KITSYNC_X", v);
    assert_eq!(
        map(&mut laptop, "postgres://u:p@db:5432/x").unwrap(),
        Mapped::To("sqlite://here.sqlite".into())
    );
    assert_eq!(
        map(&mut laptop, "amqp://u:p@mq:5672/%2f").unwrap(),
        Mapped::Unset,
        "no broker: the embedded queue"
    );
    assert_eq!(map(&mut laptop, "json").unwrap(), Mapped::Same);
    let key = "/e7VGuaVQfmSDXEMS6jAUP3u1RrmlUH5kg1xDEuowFA=";
    assert!(map(&mut laptop, key).is_err(), "an unknown /… is a path");
    laptop.secrets.insert(key.into());
    assert_eq!(
        map(&mut laptop, key).unwrap(),
        Mapped::Same,
        "a secret the test filled in is opaque, even when base64 starts with /"
    );
    assert_eq!(
        map(&mut laptop, "/run/kitsync/key.pem").unwrap(),
        Mapped::To("/tmp/project/secrets/key.pem".into())
    );
    assert_eq!(
        map(&mut laptop, "/var/lib/kitsync/data").unwrap(),
        Mapped::To("/tmp/work/data".into())
    );
    let Mapped::To(listen) = map(&mut laptop, "0.0.0.0:8080").unwrap() else {
        panic!()
    };
    let Mapped::To(public) = map(&mut laptop, "http://localhost:8080/login").unwrap() else {
        panic!()
    };
    assert_eq!(
        public,
        format!(
            "http://localhost:{}/login",
            listen.rsplit(':').next().unwrap()
        ),
        "the host's published port 8080 is app's port 8080"
    );
    let inside = laptop.map_value(
        Seen::Inside("app"),
        "app: healthcheck",
        "http://127.0.0.1:8080/readyz",
    );
    assert_eq!(
        inside.unwrap(),
        Mapped::To(format!("http://{listen}/readyz")),
        "inside its container, 127.0.0.1:8080 is app's own port"
    );
    assert_eq!(laptop.unheard_ports(), Vec::<String>::new());
    for (value, says) in [
        ("redis://cache:6379", "compose's cache"),
        ("mysql://u@db/x", "compose's db"),
        (
            "https://idp.example.com/x",
            "neither a compose service nor this machine",
        ),
        (
            "http://localhost:9999",
            "no compose service publishes port 9999",
        ),
        ("postgres://u@localhost:5432/x", "cannot stand in for"),
        ("cache:6379", "looks host-specific"),
        ("db", "looks host-specific"),
        ("/etc/ssl/certs/ca.pem", "neither a bind mount"),
        ("10.0.0.5:80", "container's network"),
    ] {
        let err = map(&mut laptop, value).expect_err(value);
        assert!(err.contains(says), "{value}: {err}");
    }
    // compose's interpolation, from the project's .env.
    let vars: HashMap<String, String> = [
        ("PW".to_owned(), "s3cret".to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ]
    .into();
    assert_eq!(
        interpolate(
            "a:${PW:?set PW}@$PW/$$x/${NOPE:-d}/${EMPTY:-e}/${EMPTY-f}/${PW:+g}",
            &vars,
            "t"
        ),
        "a:s3cret@s3cret/$x/d/e//g"
    );
    for unset in ["${NOPE:?set NOPE}", "${EMPTY:?set EMPTY}", "${NOPE}"] {
        let r = std::panic::catch_unwind(|| interpolate(unset, &vars, "t"));
        assert!(r.is_err(), "{unset} must stop the test as it stops compose");
    }
    // A published port that no setting makes kitsync listen on (on every interface).
    let mut deaf = fresh();
    assert_eq!(deaf.unheard_ports().len(), 1);
    deaf.map_value(
        Seen::Setting("app"),
        "app: KITSYNC_HTTP__ADDR",
        "127.0.0.1:8080",
    )
    .unwrap();
    let unheard = deaf.unheard_ports();
    assert!(
        unheard.len() == 1
            && unheard[0].contains("app:8080")
            && unheard[0].contains("every interface"),
        "{unheard:?}"
    );
}

/// Where a container engine answers, the image builds from the repository root and its
/// binary reports the crate's version. Skipped, saying why, where none does.
#[test]
fn the_image_builds_and_reports_the_crate_version_where_a_container_engine_answers() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // crates/kitsync takes the workspace's version, as this crate does.
    let manifest = std::fs::read_to_string(root.join("crates/kitsync/Cargo.toml")).unwrap();
    assert!(manifest.contains("version.workspace = true"));
    let expected = format!("kitsync {}", env!("CARGO_PKG_VERSION"));
    let mut why = Vec::new();
    let mut engine = None;
    for name in ["podman", "docker"] {
        let on_path = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
        if !on_path {
            why.push(format!("{name} is not on PATH"));
            continue;
        }
        match run_for(Command::new(name).arg("info"), Duration::from_secs(30)) {
            Some(out) if out.status.success() => {
                engine = Some(name);
                break;
            }
            Some(out) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let last = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                why.push(format!(
                    "`{name} info` fails ({}): {}",
                    out.status,
                    last.trim()
                ));
            }
            None => why.push(format!("`{name} info` did not answer within 30 s")),
        }
    }
    let Some(engine) = engine else {
        // Straight to stderr (libtest swallows `eprintln!` of a passing test), so every log
        // says that the image was not built and why. A missing engine is this machine's
        // limit, not a fault: the step passes.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr().lock(),
            "image: skipped, no container engine answers: {}",
            why.join("; ")
        );
        return;
    };
    let build = run_for(
        Command::new(engine)
            .args([
                "build",
                "-f",
                "deploy/Dockerfile",
                "-t",
                "kitsync:test",
                ".",
            ])
            .current_dir(&root),
        Duration::from_secs(40 * 60),
    )
    .expect("the image build did not finish within 40 minutes");
    let tail = |o: &Output| {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    assert!(
        build.status.success(),
        "{engine} build failed:\n{}",
        tail(&build)
    );
    let run = run_for(
        Command::new(engine).args(["run", "--rm", "kitsync:test", "--version"]),
        Duration::from_secs(120),
    )
    .expect("the container did not exit within 2 minutes");
    assert!(run.status.success(), "{engine} run failed:\n{}", tail(&run));
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), expected);
    eprintln!("image: built with {engine}; `kitsync:test --version` prints {expected}");
}

/// Runs `cmd` to completion, or kills it after `limit` (`None`).
fn run_for(cmd: &mut Command, limit: Duration) -> Option<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    let out = std::thread::spawn(move || {
        let _ = tx.send(());
        child.wait_with_output()
    });
    let _ = rx.recv();
    let deadline = Instant::now() + limit;
    while !out.is_finished() {
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = out.join();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    out.join().ok()?.ok()
}
