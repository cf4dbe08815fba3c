//! Reading a kitsync's directory API and comparing it with the marketplace's truth.
//!
//! Every list is read to its end (`nextCursor`), with `includeTest=true` so test tenants are
//! compared too. What differs is described row by row, a bounded number of rows per tenant.
use super::world::TenantTruth;
use crate::{http_base, https_client, HttpClient, SendError};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use kitsync_domain::error::error_chain;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// At most this many differences are named per tenant.
const MAX_NAMED: usize = 8;

/// A directory API and the bearer token to read it (`directory:read`).
pub struct Directory {
    base: String,
    token: String,
    client: HttpClient,
}

impl Directory {
    /// # Errors
    /// `base` is not an http(s) URL.
    pub fn new(base: &str, token: &str) -> Result<Self, SendError> {
        Ok(Self {
            base: http_base(base)?,
            token: token.to_owned(),
            client: https_client()?,
        })
    }

    async fn get(&self, path: &str) -> Result<(u16, Value), String> {
        let req = hyper::Request::get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let res = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| format!("GET {path}: no answer within 10 s"))?
            .map_err(|e| format!("GET {path}: {}", error_chain(&e)))?;
        let status = res.status().as_u16();
        let raw = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {path}: {}", error_chain(&e)))?
            .to_bytes();
        let v = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        if status == 401 || status == 403 {
            return Err(format!(
                "GET {path}: {status} {v} (the token needs directory:read)"
            ));
        }
        Ok((status, v))
    }

    /// Every item of a list, following `nextCursor`.
    async fn list(&self, path: &str) -> Result<Option<Vec<Value>>, String> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let mut url = format!("{path}{sep}includeTest=true&limit=1000");
            if let Some(c) = &cursor {
                url.push_str("&cursor=");
                url.push_str(c);
            }
            let (status, v) = self.get(&url).await?;
            if status == 404 {
                return Ok(None);
            }
            if status != 200 {
                return Err(format!("GET {url}: {status} {v}"));
            }
            items.extend(v["items"].as_array().cloned().unwrap_or_default());
            match v["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(Some(items)),
            }
        }
    }

    /// What the directory says about `tenant`, in the truth's terms.
    ///
    /// # Errors
    /// The API could not be read.
    pub async fn read(&self, tenant: &str, apps: &[String]) -> Result<TenantTruth, String> {
        let t = enc(tenant);
        let (status, v) = self
            .get(&format!("/api/v1/tenants/{t}?includeTest=true"))
            .await?;
        if status == 404 {
            return Ok(TenantTruth {
                deleted: true,
                ..TenantTruth::default()
            });
        }
        if status != 200 {
            return Err(format!("GET /api/v1/tenants/{t}: {status} {v}"));
        }
        let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let mut out = TenantTruth {
            name: text(&v, "name"),
            test: v["test"].as_bool().unwrap_or(false),
            ..TenantTruth::default()
        };
        for d in self
            .list(&format!("/api/v1/tenants/{t}/departments"))
            .await?
            .unwrap_or_default()
        {
            out.departments.insert(
                text(&d, "orgCode"),
                (
                    text(&d, "orgName"),
                    d["parentCode"].as_str().map(str::to_owned),
                ),
            );
        }
        for a in self
            .list(&format!("/api/v1/tenants/{t}/apps"))
            .await?
            .unwrap_or_default()
        {
            out.apps.insert(text(&a, "appId"), text(&a, "clientId"));
        }
        // The apps the truth has, and any the directory still shows.
        let mut names: Vec<String> = apps.to_vec();
        names.extend(out.apps.keys().cloned());
        names.sort();
        names.dedup();
        for app in names {
            let Some(rows) = self
                .list(&format!(
                    "/api/v1/tenants/{t}/apps/{}/authorizations",
                    enc(&app)
                ))
                .await?
            else {
                continue;
            };
            for r in rows {
                out.authorizations.insert(
                    (app.clone(), text(&r, "userName")),
                    (text(&r, "role"), r["enabled"].as_bool().unwrap_or(false)),
                );
            }
        }
        Ok(out)
    }
}

/// Percent-encodes a path segment.
pub(crate) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What differs between the truth and what the directory shows, row by row (empty: equal).
#[must_use]
pub fn differences(tenant: &str, want: &TenantTruth, got: &TenantTruth) -> Vec<String> {
    let mut out = Vec::new();
    if want.deleted || got.deleted {
        if want.deleted != got.deleted {
            out.push(format!(
                "{tenant}: {}",
                if want.deleted {
                    "should be deleted (404), but is listed"
                } else {
                    "is missing (404)"
                }
            ));
        }
        return out;
    }
    if want.name != got.name {
        out.push(format!(
            "{tenant}: name {:?}, expected {:?}",
            got.name, want.name
        ));
    }
    if want.test != got.test {
        out.push(format!(
            "{tenant}: test {}, expected {}",
            got.test, want.test
        ));
    }
    diff_maps(
        &mut out,
        tenant,
        "department",
        &want.departments,
        &got.departments,
    );
    diff_maps(&mut out, tenant, "app", &want.apps, &got.apps);
    diff_maps(
        &mut out,
        tenant,
        "authorisation",
        &want.authorizations,
        &got.authorizations,
    );
    if out.len() > MAX_NAMED {
        let more = out.len() - MAX_NAMED;
        out.truncate(MAX_NAMED);
        out.push(format!("{tenant}: … and {more} more differences"));
    }
    out
}

fn diff_maps<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    out: &mut Vec<String>,
    tenant: &str,
    what: &str,
    want: &BTreeMap<K, V>,
    got: &BTreeMap<K, V>,
) {
    for (k, v) in want {
        match got.get(k) {
            None => out.push(format!("{tenant}: {what} {k:?} missing (expected {v:?})")),
            Some(g) if g != v => {
                out.push(format!("{tenant}: {what} {k:?} is {g:?}, expected {v:?}"))
            }
            Some(_) => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            out.push(format!(
                "{tenant}: {what} {k:?} = {v:?} should not be there"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_rows() {
        let mut want = TenantTruth {
            name: "A".into(),
            ..TenantTruth::default()
        };
        want.departments.insert("d1".into(), ("One".into(), None));
        want.authorizations
            .insert(("app".into(), "u1".into()), ("user".into(), true));
        let mut got = want.clone();
        assert!(differences("t", &want, &got).is_empty());
        got.departments.clear();
        got.authorizations
            .insert(("app".into(), "u1".into()), ("admin".into(), true));
        got.departments.insert("d9".into(), ("Nine".into(), None));
        let d = differences("t", &want, &got);
        assert_eq!(d.len(), 3, "{d:#?}");
        assert!(d.iter().any(|l| l.contains("\"d1\" missing")));
        assert!(d
            .iter()
            .any(|l| l.contains("\"d9\"") && l.contains("should not be there")));
        assert!(d.iter().any(|l| l.contains("u1") && l.contains("admin")));
        let deleted = TenantTruth {
            deleted: true,
            ..TenantTruth::default()
        };
        assert_eq!(differences("t", &deleted, &got).len(), 1);
        assert!(enc("a b/c").contains("%20") && enc("a b/c").contains("%2F"));
    }
}
