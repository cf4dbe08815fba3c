//! `kitsync send KIND`: one callback, signed and sent the way the marketplace does, to this
//! kitsync or to any server that implements the Kit callbacks; prints the request, the answer
//! and whether `Body-Sign` verified.
use crate::settings::Settings;
use anyhow::Context as _;
use clap::Args;
use kitsync_domain::{CallbackKind, KitTime};
use kitsync_marketplace::body::{self, Org, Spec, User};
use kitsync_marketplace::{Marketplace, Signed};
use kitsync_secrets::{OaepVariant, RsaEncryptor};
use secrecy::ExposeSecret as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct SendArgs {
    /// The callback: tenantSync, applicationSync, authSync, singleOrgSync or allOrgSync.
    #[arg(value_parser = parse_kind)]
    kind: CallbackKind,
    /// Send this file as the body, byte for byte, instead of building one from the flags.
    #[arg(long, conflicts_with_all = ["tenant", "app", "users", "orgs", "name", "flag", "test", "client_id", "client_secret", "time"])]
    file: Option<PathBuf>,
    /// The production address the marketplace calls; the callback goes to
    /// URL/produceAPI/v2/KIND. Default: this configuration's `http.addr` and `kit.prefix`.
    #[arg(long)]
    url: Option<String>,
    /// The Kit access key to sign with. Default: the first of `kit.access_keys`.
    #[arg(long)]
    key: Option<String>,
    /// `tenantId`.
    #[arg(long, required_unless_present = "file")]
    tenant: Option<String>,
    /// `appId` (applicationSync, authSync).
    #[arg(long)]
    app: Option<String>,
    /// The tenant's `name` (tenantSync).
    #[arg(long)]
    name: Option<String>,
    /// A user of an authSync, `NAME[:role[:enabled]]` (role `user` or `admin`, enabled `true`
    /// or `false`); repeat for more. Their `orgCode` is the first --org, else `root`.
    #[arg(long = "user", value_name = "NAME[:ROLE[:ENABLED]]")]
    users: Vec<User>,
    /// A department, `CODE:NAME[:PARENT]`: the one of a singleOrgSync, the list of an
    /// allOrgSync; repeat for more.
    #[arg(long = "org", value_name = "CODE:NAME[:PARENT]")]
    orgs: Vec<Org>,
    /// `flag`: 1 add (default) or 0 delete; for authSync also 2 modify and 3 cancel.
    #[arg(long)]
    flag: Option<u8>,
    /// `testFlag=1`: the marketplace's test data.
    #[arg(long)]
    test: bool,
    /// `clientId` (applicationSync). Default: APP-client.
    #[arg(long)]
    client_id: Option<String>,
    /// The app's secret (applicationSync): encrypted with --rsa-public-key as the marketplace
    /// does, or sent as given without one.
    #[arg(long)]
    client_secret: Option<String>,
    /// The ISV's RSA public key (X.509 PEM, `BEGIN PUBLIC KEY`) that encrypts --client-secret.
    #[arg(long)]
    rsa_public_key: Option<PathBuf>,
    /// The RSA-OAEP variant of that encryption: `sha256-mgf1-sha1` (Java's default), `sha256`
    /// or `sha1`.
    #[arg(long, default_value = "sha256-mgf1-sha1", value_parser = parse_oaep)]
    oaep: OaepVariant,
    /// The change's marketplace time (`timeStamp`, UTC+8 yyyyMMddHHmmssSSS). Default: now.
    #[arg(long, value_parser = parse_time)]
    time: Option<KitTime>,
    /// How long to wait for the answer, in milliseconds (the marketplace waits 5 000).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

fn parse_kind(s: &str) -> Result<CallbackKind, String> {
    CallbackKind::ALL
        .into_iter()
        .find(|k| k.path().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let all: Vec<&str> = CallbackKind::ALL.iter().map(|k| k.path()).collect();
            format!("expected one of {}", all.join(", "))
        })
}

/// An OAEP variant by its name (`--oaep`, here and in `kitsync emulate`).
pub(crate) fn parse_oaep(s: &str) -> Result<OaepVariant, String> {
    OaepVariant::ALL
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| {
            let all: Vec<&str> = OaepVariant::ALL.iter().map(|v| v.as_str()).collect();
            format!("expected one of {}", all.join(", "))
        })
}

fn parse_time(s: &str) -> Result<KitTime, String> {
    KitTime::parse(s)
}

/// Where this configuration's ingress listens: `http.addr` (a wildcard address reached on
/// loopback) and `kit.prefix`.
pub(crate) fn local_url(settings: &Settings) -> String {
    let addr = settings.http.addr.trim();
    let addr = addr
        .strip_prefix("0.0.0.0:")
        .map(|port| format!("127.0.0.1:{port}"))
        .or_else(|| {
            addr.strip_prefix("[::]:")
                .map(|port| format!("[::1]:{port}"))
        })
        .unwrap_or_else(|| addr.to_owned());
    format!("http://{addr}{}", settings.kit.normalized_prefix())
}

/// The body to send: the file's bytes, or one built from the flags.
fn body(args: &SendArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = &args.file {
        return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    }
    let mut spec = Spec::new(args.tenant.as_deref().unwrap_or_default());
    spec.app_id.clone_from(&args.app);
    spec.name.clone_from(&args.name);
    spec.users.clone_from(&args.users);
    spec.orgs.clone_from(&args.orgs);
    spec.flag = args.flag;
    spec.test = args.test;
    spec.client_id.clone_from(&args.client_id);
    if let Some(t) = args.time {
        spec.at = t;
    }
    spec.client_secret = match (&args.client_secret, &args.rsa_public_key) {
        (Some(secret), Some(path)) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the RSA public key {}", path.display()))?;
            let enc = RsaEncryptor::from_pem(&pem)
                .with_context(|| format!("loading the RSA public key {}", path.display()))?;
            Some(enc.encrypt(secret, args.oaep)?)
        }
        (Some(secret), None) => Some(secret.clone()),
        (None, _) => None,
    };
    let v = body::build(args.kind, &spec).map_err(anyhow::Error::msg)?;
    Ok(serde_json::to_vec(&v)?)
}

/// The request as it goes out.
fn show_request(url: &str, req: &Signed) {
    println!("POST {url}");
    println!("content-type: application/json");
    println!("x-nonce: {}", req.nonce);
    println!("x-timestamp: {}", req.timestamp);
    println!("x-sign: {}", req.sign);
    println!();
    // Pretty when it is JSON; the bytes sent are the compact (or the file's own) ones.
    match serde_json::from_slice::<serde_json::Value>(&req.body) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(_) => println!("{}", String::from_utf8_lossy(&req.body)),
    }
    println!();
}

/// The access key to sign with: the one given (`flag`), or the first configured one.
///
/// # Errors
/// Neither.
pub(crate) fn access_key(
    settings: &Settings,
    given: Option<&str>,
    flag: &str,
) -> anyhow::Result<String> {
    match given {
        Some(k) => Ok(k.to_owned()),
        None => settings
            .kit
            .access_keys
            .first()
            .map(|k| k.expose_secret().to_owned())
            .with_context(|| {
                format!(
                    "no access key: give {flag}, or configure kit.access_keys \
                     (KITSYNC_KIT__ACCESS_KEYS)"
                )
            }),
    }
}

/// # Errors
/// No key, an unreadable file or key, a body the flags cannot build, no answer, or an answer
/// the marketplace would not take (anything but HTTP 200 `000000` with a verifying
/// `Body-Sign`).
pub async fn run(settings: &Settings, args: SendArgs) -> anyhow::Result<()> {
    let key = access_key(settings, args.key.as_deref(), "--key")?;
    let base = args.url.clone().unwrap_or_else(|| local_url(settings));
    let base = base
        .trim_end_matches('/')
        .trim_end_matches(&format!("/produceAPI/v2/{}", args.kind.path()))
        .to_owned();
    let market =
        Marketplace::new(&base, &key)?.with_timeout(Duration::from_millis(args.timeout_ms.max(1)));
    let body = body(&args)?;
    let req = market.sign(&body);
    let url = market.url(args.kind);
    show_request(&url, &req);
    let answer = market
        .send(args.kind, &req)
        .await
        .with_context(|| format!("POST {url}"))?;
    println!(
        "HTTP {} in {} ms",
        answer.status,
        answer.elapsed.as_millis()
    );
    println!("Body-Sign: {}", answer.body_sign.as_str());
    println!("{}", String::from_utf8_lossy(&answer.raw));
    if answer.accepted() {
        return Ok(());
    }
    let code = answer.result_code.as_deref().unwrap_or("none");
    let why = if answer.status != 200 {
        format!(
            "HTTP {} (a Kit callback is always answered 200)",
            answer.status
        )
    } else if code != "000000" {
        format!(
            "resultCode {code}: {}",
            answer.result_msg.as_deref().unwrap_or("no resultMsg")
        )
    } else {
        format!("Body-Sign {}", answer.body_sign.as_str())
    };
    anyhow::bail!("not accepted: {why}")
}
