//! Valid callback bodies from a few facts, with the marketplace's field names and forms:
//! `flag`/`testFlag` as numbers, `enable` as the string `"true"`/`"false"`, times as UTC+8
//! `yyyyMMddHHmmssSSS`, `orgInfoList` as an array.
use kitsync_domain::{CallbackKind, KitTime};
use serde_json::{json, Map, Value};

/// A user of an `authSync`: `NAME[:role[:enabled]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub user_name: String,
    /// `user` or `admin`.
    pub role: String,
    pub enabled: bool,
}

impl std::str::FromStr for User {
    type Err = String;

    /// `alice`, `alice:admin`, `alice:user:false`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        let user_name = parts.next().unwrap_or_default().trim().to_owned();
        if user_name.is_empty() {
            return Err(format!(
                "`{s}`: the user name is empty (NAME[:role[:enabled]])"
            ));
        }
        let role = match parts.next().map(str::trim) {
            None | Some("") => "user",
            Some(r) => r,
        }
        .to_owned();
        if role != "user" && role != "admin" {
            return Err(format!(
                "`{s}`: the role must be `user` or `admin`, got `{role}`"
            ));
        }
        let enabled = match parts.next().map(str::trim) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(format!(
                    "`{s}`: enabled must be `true` or `false`, got `{other}`"
                ))
            }
        };
        if parts.next().is_some() {
            return Err(format!("`{s}`: expected NAME[:role[:enabled]]"));
        }
        Ok(User {
            user_name,
            role,
            enabled,
        })
    }
}

/// A department: `CODE:NAME[:PARENT]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Org {
    pub code: String,
    pub name: String,
    pub parent: Option<String>,
}

impl std::str::FromStr for Org {
    type Err = String;

    /// `sales:Sales`, `eu:Europe:sales`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ':').map(str::trim);
        let code = parts.next().unwrap_or_default().to_owned();
        let name = parts.next().unwrap_or_default().to_owned();
        if code.is_empty() || name.is_empty() {
            return Err(format!("`{s}`: expected CODE:NAME[:PARENT]"));
        }
        let parent = parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
        Ok(Org { code, name, parent })
    }
}

/// What a body is built from; unset facts get plausible values derived from the ids.
#[derive(Clone, Debug)]
pub struct Spec {
    pub tenant_id: String,
    pub app_id: Option<String>,
    /// The tenant's display name.
    pub name: Option<String>,
    pub domain_name: Option<String>,
    pub client_id: Option<String>,
    /// As it is to be sent: already encrypted, as the marketplace sends it.
    pub client_secret: Option<String>,
    pub users: Vec<User>,
    pub orgs: Vec<Org>,
    /// `flag`: 1 add (the default), 0 delete; authSync also 2 modify, 3 cancel.
    pub flag: Option<u8>,
    pub test: bool,
    /// `timeStamp` (and `currentSyncTime`): the change's marketplace time.
    pub at: KitTime,
}

impl Spec {
    /// A spec for `tenant_id`, everything else unset, stamped now.
    #[must_use]
    pub fn new(tenant_id: &str) -> Self {
        Spec {
            tenant_id: tenant_id.to_owned(),
            app_id: None,
            name: None,
            domain_name: None,
            client_id: None,
            client_secret: None,
            users: Vec::new(),
            orgs: Vec::new(),
            flag: None,
            test: false,
            at: KitTime::from_millis(chrono::Utc::now().timestamp_millis()),
        }
    }

    fn app(&self, kind: CallbackKind) -> Result<&str, String> {
        self.app_id
            .as_deref()
            .ok_or_else(|| format!("{kind} needs an app (--app)"))
    }
}

/// The `domainName` a tenantSync carries unless one is given.
#[must_use]
pub fn default_domain_name(tenant_id: &str) -> String {
    format!("https://{tenant_id}.tenant.example.com")
}

/// The body of `kind` for `spec`.
///
/// # Errors
/// A fact `kind` needs is missing or does not fit it, named by the flag that gives it.
pub fn build(kind: CallbackKind, spec: &Spec) -> Result<Value, String> {
    let t = spec.tenant_id.as_str();
    let ts = spec.at.to_kit_string();
    let flag = spec.flag.unwrap_or(1);
    let allowed: &[u8] = match kind {
        CallbackKind::AuthSync => &[0, 1, 2, 3],
        _ => &[0, 1],
    };
    if !allowed.contains(&flag) {
        return Err(format!(
            "{kind}: --flag must be one of {allowed:?}, got {flag}"
        ));
    }
    let mut body = Map::new();
    body.insert("instanceId".into(), json!(format!("inst-{t}")));
    body.insert("tenantId".into(), json!(t));
    let fields = match kind {
        CallbackKind::TenantSync => json!({
            "orderId": format!("order-{t}"),
            "tenantCode": format!("code-{t}"),
            "name": spec.name.clone().unwrap_or_else(|| format!("Tenant {t}")),
            "domainName": spec.domain_name.clone()
                .unwrap_or_else(|| default_domain_name(t)),
        }),
        CallbackKind::ApplicationSync => {
            let app = spec.app(kind)?;
            let secret = match (&spec.client_secret, flag) {
                (Some(s), _) => s.clone(),
                (None, 0) => String::new(),
                (None, _) => {
                    return Err(format!(
                        "{kind} needs the app's secret (--client-secret, encrypted with \
                         --rsa-public-key as the marketplace does)"
                    ))
                }
            };
            json!({
                "appId": app,
                "clientId": spec.client_id.clone().unwrap_or_else(|| format!("{app}-client")),
                "clientSecret": secret,
            })
        }
        CallbackKind::AuthSync => {
            let app = spec.app(kind)?;
            if spec.users.is_empty() {
                return Err(format!(
                    "{kind} needs at least one --user NAME[:role[:enabled]]"
                ));
            }
            let org = spec.orgs.first().map_or("root", |o| o.code.as_str());
            let users: Vec<Value> = spec
                .users
                .iter()
                .map(|u| {
                    json!({
                        "userName": u.user_name,
                        "name": u.user_name,
                        "orgCode": org,
                        "role": u.role,
                        "enable": if u.enabled { "true" } else { "false" },
                    })
                })
                .collect();
            json!({ "appId": app, "currentSyncTime": ts, "userList": users })
        }
        CallbackKind::SingleOrgSync => {
            let [o] = spec.orgs.as_slice() else {
                return Err(format!(
                    "{kind} changes one department: give exactly one --org CODE:NAME[:PARENT]"
                ));
            };
            let mut v = json!({ "orgCode": o.code, "orgName": o.name });
            if let Some(p) = &o.parent {
                v["parentCode"] = json!(p);
            }
            v
        }
        CallbackKind::AllOrgSync => {
            let list: Vec<Value> = spec
                .orgs
                .iter()
                .map(|o| {
                    let mut v = json!({ "orgCode": o.code, "orgName": o.name });
                    if let Some(p) = &o.parent {
                        v["parentCode"] = json!(p);
                    }
                    v
                })
                .collect();
            json!({ "orgInfoList": list })
        }
    };
    if let Value::Object(f) = fields {
        body.extend(f);
    }
    if kind != CallbackKind::AllOrgSync {
        body.insert("flag".into(), json!(flag));
    }
    body.insert("testFlag".into(), json!(u8::from(spec.test)));
    body.insert("timeStamp".into(), json!(ts));
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn spec() -> Spec {
        let mut s = Spec::new("t1");
        s.at = KitTime::parse("20261203120000000").unwrap();
        s
    }

    #[test]
    fn users_and_orgs_from_flags() {
        assert_eq!(
            "alice".parse::<User>().unwrap(),
            User {
                user_name: "alice".into(),
                role: "user".into(),
                enabled: true
            }
        );
        let bob: User = "bob:admin:false".parse().unwrap();
        assert_eq!((bob.role.as_str(), bob.enabled), ("admin", false));
        assert!("bob:boss".parse::<User>().unwrap_err().contains("role"));
        let carol: User = "carol::false".parse().unwrap();
        assert_eq!((carol.role.as_str(), carol.enabled), ("user", false));
        assert!("bob:user:maybe"
            .parse::<User>()
            .unwrap_err()
            .contains("enabled"));
        assert!(":admin".parse::<User>().is_err());
        let eu: Org = "eu:Europe:sales".parse().unwrap();
        assert_eq!(eu.parent.as_deref(), Some("sales"));
        assert!("eu".parse::<Org>().is_err());
    }

    #[test]
    fn every_built_body_parses_as_what_it_says() {
        let mut s = spec();
        s.app_id = Some("a1".into());
        s.client_secret = Some("c2VjcmV0".into());
        s.users = vec!["alice".parse().unwrap(), "bob:admin:false".parse().unwrap()];
        s.orgs = vec!["sales:Sales".parse().unwrap()];
        for kind in CallbackKind::ALL {
            let body = build(kind, &s).unwrap().to_string();
            let cmd = kitsync_domain::parse::parse(kind, body.as_bytes())
                .unwrap_or_else(|e| panic!("{kind}: {e}: {body}"));
            assert_eq!(cmd.tenant_id(), "t1", "{kind}");
        }
        let auth = build(CallbackKind::AuthSync, &s).unwrap();
        assert_eq!(auth["currentSyncTime"], "20261203120000000");
        assert_eq!(auth["userList"][1]["enable"], "false");
        assert_eq!(auth["userList"][0]["orgCode"], "sales");
    }

    #[test]
    fn missing_facts_are_named_by_their_flag() {
        let s = spec();
        assert!(build(CallbackKind::AuthSync, &s)
            .unwrap_err()
            .contains("--app"));
        let mut s = spec();
        s.app_id = Some("a".into());
        assert!(build(CallbackKind::AuthSync, &s)
            .unwrap_err()
            .contains("--user"));
        assert!(build(CallbackKind::ApplicationSync, &s)
            .unwrap_err()
            .contains("--client-secret"));
        assert!(build(CallbackKind::SingleOrgSync, &s)
            .unwrap_err()
            .contains("--org"));
        s.flag = Some(2);
        assert!(build(CallbackKind::TenantSync, &s)
            .unwrap_err()
            .contains("--flag"));
    }
}
