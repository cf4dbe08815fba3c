//! The SCIM discovery documents (RFC 7643 §5–§7, RFC 7644 §4): `ServiceProviderConfig`,
//! `ResourceTypes` and `Schemas`, describing exactly what this server does — Users read-only
//! (every attribute `readOnly`: the marketplace owns them), Groups full CRUD.
use serde_json::{json, Map, Value};

pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const SPC: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
pub const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Most resources a list returns at once (`filter.maxResults`); larger `count`s are clamped.
pub const MAX_RESULTS: u64 = 1000;

/// One attribute definition.
struct Attr {
    name: &'static str,
    kind: &'static str,
    multi: bool,
    required: bool,
    case_exact: bool,
    mutability: &'static str,
    returned: &'static str,
    uniqueness: &'static str,
    description: &'static str,
    subs: Vec<Attr>,
    reference_types: &'static [&'static str],
    canonical: &'static [&'static str],
}

fn attr(name: &'static str, kind: &'static str, mutability: &'static str) -> Attr {
    Attr {
        name,
        kind,
        multi: false,
        required: false,
        case_exact: false,
        mutability,
        returned: "default",
        uniqueness: "none",
        description: "",
        subs: Vec::new(),
        reference_types: &[],
        canonical: &[],
    }
}

impl Attr {
    fn multi(mut self) -> Self {
        self.multi = true;
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    fn canonical(mut self, c: &'static [&'static str]) -> Self {
        self.canonical = c;
        self
    }
    fn unique(mut self, u: &'static str) -> Self {
        self.uniqueness = u;
        self
    }
    fn about(mut self, d: &'static str) -> Self {
        self.description = d;
        self
    }
    fn refs(mut self, r: &'static [&'static str]) -> Self {
        self.reference_types = r;
        self
    }
    fn subs(mut self, s: Vec<Attr>) -> Self {
        self.subs = s;
        self
    }

    fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("name".into(), json!(self.name));
        o.insert("type".into(), json!(self.kind));
        o.insert("multiValued".into(), json!(self.multi));
        o.insert("description".into(), json!(self.description));
        o.insert("required".into(), json!(self.required));
        if self.kind == "string" || self.kind == "reference" {
            o.insert("caseExact".into(), json!(self.case_exact));
        }
        o.insert("mutability".into(), json!(self.mutability));
        o.insert("returned".into(), json!(self.returned));
        o.insert("uniqueness".into(), json!(self.uniqueness));
        if !self.canonical.is_empty() {
            o.insert("canonicalValues".into(), json!(self.canonical));
        }
        if !self.reference_types.is_empty() {
            o.insert("referenceTypes".into(), json!(self.reference_types));
        }
        if !self.subs.is_empty() {
            o.insert(
                "subAttributes".into(),
                Value::Array(self.subs.iter().map(Attr::to_json).collect()),
            );
        }
        Value::Object(o)
    }
}

const RO: &str = "readOnly";
const RW: &str = "readWrite";

/// A multi-valued `{value, type, primary}` attribute of a User (`emails`, `phoneNumbers`).
fn typed_values(name: &'static str, about: &'static str, kind: &'static [&'static str]) -> Attr {
    attr(name, "complex", RO).multi().about(about).subs(vec![
        attr("value", "string", RO),
        attr("type", "string", RO).canonical(kind),
        attr("primary", "boolean", RO),
    ])
}

fn user_attrs() -> Vec<Attr> {
    vec![
        attr("userName", "string", RO)
            .required()
            .exact()
            .unique("server")
            .about("The Kit userName: the member's key in its tenant; also the resource id."),
        attr("name", "complex", RO)
            .about("The member's name.")
            .subs(vec![attr("formatted", "string", RO).about("The Kit name.")]),
        attr("displayName", "string", RO).about("The Kit name."),
        attr("title", "string", RO).about("The Kit position."),
        attr("active", "boolean", RO)
            .about("True while at least one app's authorisation of the member is enabled."),
        typed_values("emails", "The Kit email.", &["work"]),
        typed_values("phoneNumbers", "The Kit mobile.", &["mobile"]),
        attr("groups", "complex", RO)
            .multi()
            .about("The per-app role groups and ISV groups the member is in.")
            .subs(vec![
                attr("value", "string", RO).exact(),
                attr("$ref", "reference", RO).exact().refs(&["Group"]),
                attr("display", "string", RO),
                attr("type", "string", RO),
            ]),
    ]
}

fn enterprise_attrs() -> Vec<Attr> {
    vec![
        attr("employeeNumber", "string", RO).about("The Kit employeeCode."),
        attr("department", "string", RO)
            .exact()
            .about("The Kit orgCode of the member's department."),
    ]
}

fn group_attrs() -> Vec<Attr> {
    vec![
        attr("displayName", "string", RW)
            .required()
            .unique("server")
            .about("Unique among the tenant's ISV groups."),
        attr("members", "complex", RW)
            .multi()
            .about("Users (by userName) and nested groups, as written, in order.")
            .subs(vec![
                attr("value", "string", "immutable").exact(),
                attr("$ref", "reference", "immutable")
                    .exact()
                    .refs(&["User", "Group"]),
                attr("display", "string", RO),
                attr("type", "string", "immutable")
                    .canonical(&["User", "Group"])
                    .about("\"User\" (a userName) or \"Group\" (a nested ISV group's id)."),
            ]),
    ]
}

/// Whether the lowercased `attr[.sub]` key of a User compares strings exactly.
#[must_use]
pub fn user_case_exact(key: &str) -> bool {
    matches!(
        key,
        "id" | "username" | "department" | "groups.value" | "groups.$ref"
    )
}

/// Whether the lowercased `attr[.sub]` key of a Group compares strings exactly.
#[must_use]
pub fn group_case_exact(key: &str) -> bool {
    matches!(
        key,
        "id" | "externalid" | "members" | "members.value" | "members.$ref"
    )
}

fn schema_doc(base: &str, id: &str, name: &str, about: &str, attrs: &[Attr]) -> Value {
    json!({
        "schemas": [SCHEMA],
        "id": id,
        "name": name,
        "description": about,
        "attributes": attrs.iter().map(Attr::to_json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    })
}

/// Every schema this server knows, in `/Schemas` order.
#[must_use]
pub fn schemas(base: &str) -> Vec<Value> {
    vec![
        schema_doc(
            base,
            USER,
            "User",
            "A member of the tenant that at least one app authorises (read-only).",
            &user_attrs(),
        ),
        schema_doc(
            base,
            ENTERPRISE,
            "EnterpriseUser",
            "Enterprise User",
            &enterprise_attrs(),
        ),
        schema_doc(
            base,
            GROUP,
            "Group",
            "A per-app role group (read-only, id `{appId}:{role}`) or a group the ISV manages.",
            &group_attrs(),
        ),
    ]
}

/// `/ResourceTypes`.
#[must_use]
pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": [RESOURCE_TYPE],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "Members of the tenant (read-only: the marketplace owns them)",
            "schema": USER,
            "schemaExtensions": [{"schema": ENTERPRISE, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
        }),
        json!({
            "schemas": [RESOURCE_TYPE],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Per-app role groups (read-only) and the ISV's own groups",
            "schema": GROUP,
            "schemaExtensions": [],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")},
        }),
    ]
}

/// `/ServiceProviderConfig`.
#[must_use]
pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": [SPC],
        "documentationUri": "https://github.com/kitsync/kitsync#scim-20",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A kitsync API token (`kitsync token create --scope directory:read`; \
                            group writes need directory:write)",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        },
    })
}
