//! The validated changes the worker applies. These are what travels on the queue, as JSON.
//!
//! Every command carries the tenant, the marketplace version of the change ([`KitTime`]: the
//! `timeStamp`, or `currentSyncTime` for authSync) and whether it is test data.
use crate::time::KitTime;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The five Kit callbacks, named as in their URL paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallbackKind {
    TenantSync,
    ApplicationSync,
    AuthSync,
    SingleOrgSync,
    AllOrgSync,
}

impl CallbackKind {
    pub const ALL: [CallbackKind; 5] = [
        CallbackKind::TenantSync,
        CallbackKind::ApplicationSync,
        CallbackKind::AuthSync,
        CallbackKind::SingleOrgSync,
        CallbackKind::AllOrgSync,
    ];

    /// The last segment of the callback's path, `/produceAPI/v2/{path}`.
    #[must_use]
    pub fn path(self) -> &'static str {
        match self {
            CallbackKind::TenantSync => "tenantSync",
            CallbackKind::ApplicationSync => "applicationSync",
            CallbackKind::AuthSync => "authSync",
            CallbackKind::SingleOrgSync => "singleOrgSync",
            CallbackKind::AllOrgSync => "allOrgSync",
        }
    }
}

impl fmt::Display for CallbackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// Upsert or delete: `flag` 1 (add) and 2 (modify) both upsert, since a modify may arrive
/// before the add it modifies; `flag` 0 deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
}

/// authSync `flag`: 1 add, 2 modify, 0 delete, 3 cancel authorisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthOp {
    Add,
    Modify,
    Delete,
    Cancel,
}

impl AuthOp {
    /// 0 and 3 both remove this app's authorisation; 1 and 2 both grant/update it.
    #[must_use]
    pub fn removes(self) -> bool {
        matches!(self, AuthOp::Delete | AuthOp::Cancel)
    }
}

/// A member's role in one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// A secret on its way to storage: after the ingress, the sealed (encrypted at rest) form.
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantChange {
    pub tenant_id: String,
    pub instance_id: Option<String>,
    pub order_id: Option<String>,
    pub tenant_code: String,
    pub name: String,
    pub domain_name: String,
    pub op: Op,
    pub test: bool,
    pub version: KitTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppChange {
    pub tenant_id: String,
    pub instance_id: Option<String>,
    pub app_id: String,
    pub client_id: String,
    /// Sealed by the ingress (see `kitsync-secrets`); the marketplace's RSA ciphertext before.
    pub client_secret: SecretText,
    /// A keyed digest of the secret, set by the ingress: the same secret gives the same digest
    /// however often it is re-encrypted and re-sealed (both use fresh randomness), so a repeat
    /// of the same change is recognised as one. Absent in messages of older releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_fp: Option<String>,
    pub op: Op,
    pub test: bool,
    pub version: KitTime,
}

/// One user of an authSync batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthUser {
    pub user_name: String,
    pub name: Option<String>,
    pub org_code: Option<String>,
    pub position: Option<String>,
    pub employee_code: Option<String>,
    pub employee_type: Option<i32>,
    pub role: Role,
    pub enabled: bool,
    pub mobile: Option<String>,
    pub email: Option<String>,
    pub work_place: Option<String>,
    pub entry_date: Option<String>,
    /// Arbitrary tenant-configured attributes, kept as received (compact JSON text).
    pub extension: Option<String>,
}

impl AuthUser {
    /// A user with only a name: no profile fields, role `user`, enabled.
    #[must_use]
    pub fn named(user_name: impl Into<String>) -> Self {
        AuthUser {
            user_name: user_name.into(),
            name: None,
            org_code: None,
            position: None,
            employee_code: None,
            employee_type: None,
            role: Role::User,
            enabled: true,
            mobile: None,
            email: None,
            work_place: None,
            entry_date: None,
            extension: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthChange {
    pub tenant_id: String,
    pub instance_id: Option<String>,
    pub app_id: String,
    pub op: AuthOp,
    pub users: Vec<AuthUser>,
    pub test: bool,
    /// `currentSyncTime`: the version of every row this batch writes.
    pub version: KitTime,
    /// `timeStamp`, kept for the journal.
    pub time_stamp: Option<KitTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrgChange {
    pub tenant_id: String,
    pub instance_id: Option<String>,
    pub org_code: String,
    pub org_name: String,
    /// `None` for a top-level department.
    pub parent_code: Option<String>,
    pub op: Op,
    pub test: bool,
    pub version: KitTime,
}

/// One department of a full snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrgInfo {
    pub org_code: String,
    pub org_name: String,
    pub parent_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FullOrgSnapshot {
    pub tenant_id: String,
    pub instance_id: Option<String>,
    pub orgs: Vec<OrgInfo>,
    pub test: bool,
    pub version: KitTime,
}

/// A validated change, ready to apply. On the queue: its fields, with `"type"` naming the
/// variant (`tenant`, `app`, `auth`, `org`, `fullOrg`) written first. Decoding reads a first
/// `"type"` and then the variant's fields straight from the input; a message with the tag
/// elsewhere (not written by kitsync) still decodes, through a buffered copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Command {
    Tenant(TenantChange),
    App(AppChange),
    Auth(AuthChange),
    Org(OrgChange),
    FullOrg(FullOrgSnapshot),
}

impl Command {
    #[must_use]
    pub fn tenant_id(&self) -> &str {
        match self {
            Command::Tenant(c) => &c.tenant_id,
            Command::App(c) => &c.tenant_id,
            Command::Auth(c) => &c.tenant_id,
            Command::Org(c) => &c.tenant_id,
            Command::FullOrg(c) => &c.tenant_id,
        }
    }

    #[must_use]
    pub fn version(&self) -> KitTime {
        match self {
            Command::Tenant(c) => c.version,
            Command::App(c) => c.version,
            Command::Auth(c) => c.version,
            Command::Org(c) => c.version,
            Command::FullOrg(c) => c.version,
        }
    }

    #[must_use]
    pub fn is_test(&self) -> bool {
        match self {
            Command::Tenant(c) => c.test,
            Command::App(c) => c.test,
            Command::Auth(c) => c.test,
            Command::Org(c) => c.test,
            Command::FullOrg(c) => c.test,
        }
    }

    #[must_use]
    pub fn kind(&self) -> CallbackKind {
        match self {
            Command::Tenant(_) => CallbackKind::TenantSync,
            Command::App(_) => CallbackKind::ApplicationSync,
            Command::Auth(_) => CallbackKind::AuthSync,
            Command::Org(_) => CallbackKind::SingleOrgSync,
            Command::FullOrg(_) => CallbackKind::AllOrgSync,
        }
    }

    /// The instance id the change names, when it names one (empty ones are `None`).
    #[must_use]
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            Command::Tenant(c) => c.instance_id.as_deref(),
            Command::App(c) => c.instance_id.as_deref(),
            Command::Auth(c) => c.instance_id.as_deref(),
            Command::Org(c) => c.instance_id.as_deref(),
            Command::FullOrg(c) => c.instance_id.as_deref(),
        }
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(tag_first::CommandVisitor)
    }
}

/// Decoding a [`Command`] without buffering it: serde's derived decoder for an internally
/// tagged enum copies every message into an intermediate tree before it can look at the tag,
/// which was a fifth of the worker's CPU on large authSync messages.
mod tag_first {
    use super::{AppChange, AuthChange, Command, FullOrgSnapshot, OrgChange, TenantChange};
    use serde::de::value::MapAccessDeserializer;
    use serde::de::{self, Deserialize, MapAccess, Visitor};
    use std::fmt;

    /// The variant names, as serialised.
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    enum Tag {
        Tenant,
        App,
        Auth,
        Org,
        FullOrg,
    }

    /// A map key: `"type"` or another (kept for the buffered path).
    enum Key {
        Type,
        Other(String),
    }

    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Key;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a field name")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                    Ok(if v == "type" {
                        Key::Type
                    } else {
                        Key::Other(v.to_owned())
                    })
                }
            }
            d.deserialize_identifier(V)
        }
    }

    pub(super) struct CommandVisitor;

    impl<'de> Visitor<'de> for CommandVisitor {
        type Value = Command;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a command: an object with a \"type\"")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Command, A::Error> {
            let first = map.next_key::<Key>()?;
            if let Some(Key::Type) = first {
                let tag: Tag = map.next_value()?;
                return variant(tag, MapAccessDeserializer::new(map));
            }
            // The tag is elsewhere: buffer the fields, then decode them.
            let mut fields = serde_json::Map::new();
            let mut tag = None;
            let mut key = first;
            while let Some(k) = key {
                match k {
                    Key::Type => tag = Some(map.next_value::<serde_json::Value>()?),
                    Key::Other(name) => {
                        fields.insert(name, map.next_value()?);
                    }
                }
                key = map.next_key()?;
            }
            let tag = tag.ok_or_else(|| de::Error::missing_field("type"))?;
            let tag = Tag::deserialize(tag).map_err(de::Error::custom)?;
            variant(tag, serde_json::Value::Object(fields)).map_err(de::Error::custom)
        }
    }

    /// Decodes the fields of the variant `tag` from `rest`.
    fn variant<'de, D: serde::Deserializer<'de>>(tag: Tag, rest: D) -> Result<Command, D::Error> {
        Ok(match tag {
            Tag::Tenant => Command::Tenant(TenantChange::deserialize(rest)?),
            Tag::App => Command::App(AppChange::deserialize(rest)?),
            Tag::Auth => Command::Auth(AuthChange::deserialize(rest)?),
            Tag::Org => Command::Org(OrgChange::deserialize(rest)?),
            Tag::FullOrg => Command::FullOrg(FullOrgSnapshot::deserialize(rest)?),
        })
    }
}

/// The queue message: one accepted callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedCallback {
    /// Unique per accepted request (also the queue's message id).
    pub message_id: String,
    /// When the ingress accepted it (Unix ms).
    pub received_at_ms: i64,
    /// The replay key it was accepted with, for the worker's ledger. Absent in messages
    /// queued by releases whose ingress kept the ledger itself, and in tests' hand-made ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayStamp>,
    pub command: Command,
}

/// A replay key: the 32-byte HMAC-SHA256 `x-sign` that verified the callback.
pub type ReplayKey = [u8; 32];

/// The key a callback was accepted with and until when a replay of it could be accepted.
///
/// The key is the verified MAC, which covers the access key, the nonce, the timestamp and
/// the body: a replay has the same key however its headers are rewritten, and an authentic
/// new request never collides with an old one. `expires_at_ms` is the *signed* timestamp
/// plus the acceptance window: after it, a replay is refused as stale before any ledger is
/// asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayStamp {
    #[serde(with = "hex_key")]
    pub key: ReplayKey,
    pub expires_at_ms: i64,
}

/// A [`ReplayKey`] as 64 lowercase hex digits in the queued JSON.
mod hex_key {
    use super::ReplayKey;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(key: &ReplayKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(key))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ReplayKey, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.as_bytes(), &mut key)
            .map_err(|e| D::Error::custom(format!("replay key: {e} (want 64 hex digits)")))?;
        Ok(key)
    }
}

impl QueuedCallback {
    /// # Errors
    /// Only if serialisation fails, which it cannot for these types.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// # Errors
    /// The bytes are not a `QueuedCallback` (a poison message).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
