//! Directory reads (the shapes README.md documents).
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::page::{Keyed, Page, PageQuery};
use crate::ApiState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use kitsync_domain::Scope;
use kitsync_store::{MemberApp, MemberFilter, MemberView};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// The value of an enumerated query parameter: one of `T`'s serde names, which are also the
/// values its schema lists (so what is documented is what is accepted).
pub(crate) fn choice<T: DeserializeOwned>(raw: &str) -> Option<T> {
    use serde::de::value::{Error, StrDeserializer};
    T::deserialize(StrDeserializer::<Error>::new(raw)).ok()
}

/// `?includeTest=true` shows test tenants' data (hidden otherwise).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct TestFilter {
    /// `true` shows test tenants (`testFlag=1`) and their data; without it they are hidden
    /// (a test tenant is 404).
    #[serde(default)]
    #[param(value_type = bool)]
    include_test: Option<String>,
}

impl TestFilter {
    /// # Errors
    /// 400 naming `includeTest` unless it is `true` or `false`.
    pub fn include_test(&self) -> Result<bool, ApiError> {
        match self.include_test.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::bad_param(
                "includeTest",
                format!("must be `true` or `false`, got `{other}`"),
            )),
        }
    }
}

/// A tenant: an enterprise that bought the ISV's product on the marketplace.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantBody {
    tenant_id: String,
    tenant_code: String,
    name: String,
    #[schema(required = true)]
    domain_name: Option<String>,
    /// A test tenant (`testFlag=1`), shown only with `includeTest=true`.
    test: bool,
    /// Its marketplace instances (one per purchase), in id order.
    instance_ids: Vec<String>,
}

/// `GET /api/v1/tenants/{tenantId}`.
///
/// # Errors
/// 401/403 per [`Caller`]; 404 for an unknown or deleted tenant, or a test tenant without
/// `includeTest=true`.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenantId}",
    operation_id = "getTenant",
    tag = "directory",
    summary = "One tenant and its instance ids",
    description = "Scope `directory:read`; a tenant-bound token only for its own tenant.",
    params(TenantPath, TestFilter),
    responses(
        (status = 200, description = "The tenant.", body = TenantBody),
        crate::openapi::TenantReadErrors,
    ),
    security(("bearer" = ["directory:read"])),
)]
pub async fn tenant(
    TenantRead(state, tenant_id, filter): TenantRead<TestFilter>,
) -> Result<Json<TenantBody>, ApiError> {
    let include_test = filter.include_test()?;
    let found = state.store.tenant(&tenant_id).await?;
    match found {
        Some(t) if include_test || !t.test => Ok(Json(t.into())),
        _ => Err(ApiError::NotFound(format!("tenant {tenant_id} not found"))),
    }
}

/// `GET /api/v1/tenants`: every live tenant the token may see (a tenant-bound token: its own).
///
/// # Errors
/// 401/403 per [`Caller`]; 400 for a bad cursor, limit or `includeTest`.
#[utoipa::path(
    get,
    path = "/api/v1/tenants",
    operation_id = "listTenants",
    tag = "directory",
    summary = "Live tenants, by tenant id",
    description = "Scope `directory:read`. A tenant-bound token sees its own tenant only. \
                   `q` searches ids and names.",
    params(TenantSearch, TestFilter, PageQuery),
    responses(
        (status = 200, description = "A page of tenants.", body = Page<TenantBody>),
        crate::openapi::ReadErrors,
    ),
    security(("bearer" = ["directory:read"])),
)]
pub async fn tenants(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<TenantListQuery>,
) -> Result<Json<Page<TenantBody>>, ApiError> {
    let include_test = q.list.test.include_test()?;
    let limit = q.list.page.limit()?;
    let after = q.list.page.after(TenantBody::KIND)?;
    let search = q.search.q()?;
    let rows = match caller.0.tenant_id.clone() {
        Some(bound) => {
            caller.require(Scope::DirectoryRead, Some(&bound))?;
            let own = state.store.tenant(&bound).await?;
            own.into_iter()
                .filter(|t| include_test || !t.test)
                .filter(|t| after.as_deref().is_none_or(|a| t.tenant_id.as_str() > a))
                .filter(|t| {
                    search.is_none_or(|s| contains(&t.tenant_id, s) || contains(&t.name, s))
                })
                .collect()
        }
        None => {
            caller.require(Scope::DirectoryRead, None)?;
            state
                .store
                .tenants(after.as_deref(), limit + 1, include_test, search)
                .await?
        }
    };
    let items = rows.into_iter().map(TenantBody::from).collect();
    Ok(Json(Page::keyed(items, limit)))
}

impl Keyed for TenantBody {
    const KIND: &'static str = "tenant";

    fn key(&self) -> &str {
        &self.tenant_id
    }
}

impl From<kitsync_store::TenantView> for TenantBody {
    fn from(t: kitsync_store::TenantView) -> Self {
        TenantBody {
            tenant_id: t.tenant_id,
            tenant_code: t.tenant_code,
            name: t.name,
            domain_name: t.domain_name,
            test: t.test,
            instance_ids: t.instance_ids,
        }
    }
}

/// 404 unless the tenant is live (and not test data, unless asked for).
async fn visible_tenant(
    state: &ApiState,
    tenant_id: &str,
    include_test: bool,
) -> Result<(), ApiError> {
    if state.store.tenant_visible(tenant_id, include_test).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("tenant {tenant_id} not found")))
    }
}

/// The `{tenantId}` of a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: the handlers read it through [`TenantRead`]
pub struct TenantPath {
    /// The Kit `tenantId`.
    #[param(rename = "tenantId")]
    tenant_id: String,
}

/// A read of one tenant's directory: the state, the path (which starts with the tenant) and
/// the query, from a caller that holds `directory:read` for that tenant.
pub struct TenantRead<Q, P = String>(Arc<ApiState>, P, Q);

impl<Q, P> FromRequestParts<Arc<ApiState>> for TenantRead<Q, P>
where
    Q: DeserializeOwned + Send,
    P: crate::extract::TenantPath,
{
    /// 401/403 per [`Caller`], or 400 for the path or the query.
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Path(path) = Path::<P>::from_request_parts(parts, state).await?;
        let Query(query) = Query::<Q>::from_request_parts(parts, state).await?;
        caller.require(Scope::DirectoryRead, Some(path.tenant()))?;
        Ok(TenantRead(state.clone(), path, query))
    }
}

/// `?view=`: departments as a flat list or nested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DepartmentView {
    List,
    Tree,
}

/// `?view=list|tree`, `?includeTest=`, `?cursor=&limit=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DepartmentQuery {
    /// `list` (the default): pages of departments in `orgCode` order, each naming its
    /// parent. `tree`: one page holding every root with its subtree (`cursor` and `limit`
    /// do not apply).
    #[serde(default)]
    #[param(inline, value_type = DepartmentView)]
    view: Option<String>,
    /// One level of the tree, for expanding it lazily: the departments whose parent is this
    /// `orgCode` (empty: the roots, orphans included), each with `memberCount` and
    /// `childCount`. Pages like the list (`view=tree` does not apply).
    #[serde(default)]
    #[param(value_type = String, max_length = 64)]
    parent: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    list: ListQuery,
}

/// A department of the flat list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DepartmentItem {
    org_code: String,
    org_name: String,
    /// `null` at the root.
    #[schema(required = true)]
    parent_code: Option<String>,
    /// With `parent`: its members that some app authorises (not those of the departments
    /// under it).
    #[serde(skip_serializing_if = "Option::is_none")]
    member_count: Option<u64>,
    /// With `parent`: the departments whose parent it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    child_count: Option<u64>,
}

impl Keyed for DepartmentItem {
    const KIND: &'static str = "dept";

    fn key(&self) -> &str {
        &self.org_code
    }
}

/// A department of the tree, with its children.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DepartmentNode {
    org_code: String,
    org_name: String,
    /// Shown at the root although it names a parent: that parent is unknown (or the
    /// parents form a cycle).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    orphan: bool,
    #[schema(no_recursion)]
    children: Vec<DepartmentNode>,
}

/// `view=list`: a page of departments; `view=tree`: every root with its subtree.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum DepartmentsBody {
    List(Page<DepartmentItem>),
    Tree(Page<DepartmentNode>),
}

// The schema is `anyOf` the two pages, not the `oneOf` an untagged enum derives: an empty
// page is both. The pages are named here as the `#[utoipa::path]` macro names the other
// generic pages (`Page_AppItem`, …).
const LIST_PAGE: &str = "Page_DepartmentItem";
const TREE_PAGE: &str = "Page_DepartmentNode";

impl utoipa::PartialSchema for DepartmentsBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, Ref};
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(LIST_PAGE))
            .item(Ref::from_schema_name(TREE_PAGE))
            .description(Some(
                "`view=list`: a page of departments; `view=tree`: every root with its subtree.",
            ))
            .into()
    }
}

impl ToSchema for DepartmentsBody {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.extend([
            (LIST_PAGE.to_owned(), Page::<DepartmentItem>::schema()),
            (TREE_PAGE.to_owned(), Page::<DepartmentNode>::schema()),
            (
                DepartmentItem::name().into_owned(),
                DepartmentItem::schema(),
            ),
            (
                DepartmentNode::name().into_owned(),
                DepartmentNode::schema(),
            ),
        ]);
        <Page<DepartmentItem> as ToSchema>::schemas(schemas);
        <Page<DepartmentNode> as ToSchema>::schemas(schemas);
    }
}

/// `GET /api/v1/tenants/{tenantId}/departments` (`?view=tree` for the nested form, which is
/// one page holding every root).
///
/// # Errors
/// 401/403 per [`Caller`]; 404 for an unknown tenant; 400 naming `view`, `limit`, `cursor`
/// or `includeTest`.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenantId}/departments",
    operation_id = "listDepartments",
    tag = "directory",
    summary = "The tenant's departments, flat or nested",
    description = "Scope `directory:read`. In the tree, a department whose parent is unknown \
                   (or in a parent cycle) is at the root with `orphan: true`.",
    params(TenantPath, DepartmentQuery, TestFilter, PageQuery),
    responses(
        (status = 200, description = "Departments (`view=list`: a page; `view=tree`: every \
                                      root, `nextCursor` null).", body = DepartmentsBody),
        crate::openapi::TenantReadErrors,
    ),
    security(("bearer" = ["directory:read"])),
)]
pub async fn departments(
    TenantRead(state, tenant_id, q): TenantRead<DepartmentQuery>,
) -> Result<Json<DepartmentsBody>, ApiError> {
    let include_test = q.list.test.include_test()?;
    let tree = match q.view.as_deref() {
        None | Some("") => false,
        Some(raw) => match choice(raw) {
            Some(DepartmentView::List) => false,
            Some(DepartmentView::Tree) => true,
            None => {
                return Err(ApiError::bad_param(
                    "view",
                    format!("must be `list` or `tree`, got `{raw}`"),
                ))
            }
        },
    };
    let limit = q.list.page.limit()?;
    let after = q.list.page.after(DepartmentItem::KIND)?;
    if let Some(parent) = q.parent.as_deref() {
        if tree {
            return Err(ApiError::bad_param(
                "parent",
                "one level of the tree is a list: leave out `view=tree`",
            ));
        }
        if parent.chars().count() > 64 {
            return Err(ApiError::bad_param(
                "parent",
                "an orgCode is at most 64 characters",
            ));
        }
    }
    visible_tenant(&state, &tenant_id, include_test).await?;
    if let Some(parent) = q.parent.as_deref() {
        let level = if parent.is_empty() {
            kitsync_store::Level::Roots
        } else {
            kitsync_store::Level::ChildrenOf(parent)
        };
        let rows = state
            .store
            .department_level(&tenant_id, level, after.as_deref(), limit + 1, include_test)
            .await?;
        let items = rows
            .into_iter()
            .map(|d| DepartmentItem {
                org_code: d.org_code,
                org_name: d.org_name,
                parent_code: d.parent_code,
                member_count: Some(d.member_count),
                child_count: Some(d.child_count),
            })
            .collect();
        return Ok(Json(DepartmentsBody::List(Page::keyed(items, limit))));
    }
    if tree {
        let all = state
            .store
            .departments(&tenant_id, None, None, include_test)
            .await?;
        return Ok(Json(DepartmentsBody::Tree(Page {
            items: build_tree(all),
            next_cursor: None,
        })));
    }
    let rows = state
        .store
        .departments(&tenant_id, after.as_deref(), Some(limit + 1), include_test)
        .await?;
    let items = rows
        .into_iter()
        .map(|d| DepartmentItem {
            org_code: d.org_code,
            org_name: d.org_name,
            parent_code: d.parent_code.filter(|p| !p.is_empty()),
            member_count: None,
            child_count: None,
        })
        .collect();
    Ok(Json(DepartmentsBody::List(Page::keyed(items, limit))))
}

/// Deeper than this, a subtree continues at the root (flagged as an orphan): a chain of
/// parents is the marketplace's to choose, and the JSON must stay shallow enough to write.
pub const MAX_TREE_DEPTH: usize = 128;

/// Nests departments (in `org_code` order) under their parents. A department whose parent is
/// unknown is an orphan at the root; so is the first department (in `org_code` order) of a
/// parent cycle, and a subtree deeper than [`MAX_TREE_DEPTH`]: nothing disappears from the
/// tree. Iterative, whatever the depth.
fn build_tree(all: Vec<kitsync_store::DepartmentState>) -> Vec<DepartmentNode> {
    let n = all.len();
    let index: HashMap<&str, usize> = all
        .iter()
        .enumerate()
        .map(|(i, d)| (d.org_code.as_str(), i))
        .collect();
    let mut kids: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut pending: VecDeque<(usize, bool)> = VecDeque::new();
    for (i, d) in all.iter().enumerate() {
        let parent = d
            .parent_code
            .as_deref()
            .filter(|p| !p.is_empty() && *p != d.org_code);
        match parent.map(|p| index.get(p)) {
            None => pending.push_back((i, false)),
            Some(None) => pending.push_back((i, true)),
            Some(Some(&p)) => kids[p].push(i),
        }
    }
    // Place every department once: depth-first from each root, in order.
    let mut placed = vec![false; n];
    let mut parent_of: Vec<Option<usize>> = vec![None; n];
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut roots: Vec<(usize, bool)> = Vec::new();
    let mut next_unplaced = 0;
    loop {
        let (root, orphan) = match pending.pop_front() {
            Some(r) => r,
            None => {
                // Only departments in parent cycles are left.
                while next_unplaced < n && placed[next_unplaced] {
                    next_unplaced += 1;
                }
                if next_unplaced == n {
                    break;
                }
                (next_unplaced, true)
            }
        };
        if placed[root] {
            continue;
        }
        placed[root] = true;
        roots.push((root, orphan));
        order.push(root);
        let mut stack = vec![(root, 1_usize)];
        while let Some((u, depth)) = stack.pop() {
            for &c in kids[u].iter().rev() {
                if placed[c] {
                    continue;
                }
                if depth >= MAX_TREE_DEPTH {
                    pending.push_back((c, true));
                    continue;
                }
                placed[c] = true;
                parent_of[c] = Some(u);
                order.push(c);
                stack.push((c, depth + 1));
            }
        }
    }
    // Build bottom-up: every department comes after its parent in `order`, and siblings in
    // reverse, so attaching in reverse order keeps them in `org_code` order.
    let mut nodes: Vec<Option<DepartmentNode>> = all
        .into_iter()
        .map(|d| {
            Some(DepartmentNode {
                org_code: d.org_code,
                org_name: d.org_name,
                orphan: false,
                children: Vec::new(),
            })
        })
        .collect();
    for &u in order.iter().rev() {
        if let Some(p) = parent_of[u] {
            if let Some(node) = nodes[u].take() {
                if let Some(parent) = nodes[p].as_mut() {
                    parent.children.push(node);
                }
            }
        }
    }
    roots
        .into_iter()
        .filter_map(|(r, orphan)| {
            nodes[r].take().map(|mut node| {
                node.orphan = orphan;
                node
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kitsync_store::DepartmentState;

    fn d(code: &str, parent: Option<&str>) -> DepartmentState {
        DepartmentState {
            org_code: code.into(),
            org_name: format!("Dept {code}"),
            parent_code: parent.map(Into::into),
            test: false,
            version: 1,
        }
    }

    fn shape(nodes: &[DepartmentNode]) -> String {
        nodes
            .iter()
            .map(|n| {
                let mark = if n.orphan { "!" } else { "" };
                if n.children.is_empty() {
                    format!("{mark}{}", n.org_code)
                } else {
                    format!("{mark}{}({})", n.org_code, shape(&n.children))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn nests_in_order_with_orphans_and_cycles_at_the_root() {
        let all = vec![
            d("a", None),
            d("b", Some("a")),
            d("c", Some("a")),
            d("d", Some("b")),
            d("e", Some("gone")),
            d("f", Some("g")),
            d("g", Some("f")),
            d("h", Some("h")),
        ];
        assert_eq!(shape(&build_tree(all)), "a(b(d) c) !e h !f(g)");
    }

    #[test]
    fn a_very_deep_chain_neither_overflows_nor_loses_departments() {
        let n = 20_000;
        let all: Vec<_> = (0..n)
            .map(|i| {
                let code = format!("{i:05}");
                let parent = (i > 0).then(|| format!("{:05}", i - 1));
                d(&code, parent.as_deref())
            })
            .collect();
        let tree = build_tree(all);
        fn count(nodes: &[DepartmentNode], depth: usize, max: &mut usize) -> usize {
            if !nodes.is_empty() {
                *max = (*max).max(depth);
            }
            nodes
                .iter()
                .map(|n| 1 + count(&n.children, depth + 1, max))
                .sum()
        }
        let mut max = 0;
        assert_eq!(count(&tree, 1, &mut max), n);
        assert!(max <= MAX_TREE_DEPTH, "depth {max}");
        assert!(tree.len() > 1 && tree[1..].iter().all(|r| r.orphan));
        assert!(serde_json::to_string(&tree).is_ok());
    }
}

/// An authorisation's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    User,
    Admin,
}

impl MemberRole {
    fn as_str(self) -> &'static str {
        match self {
            MemberRole::User => "user",
            MemberRole::Admin => "admin",
        }
    }
}

/// `?orgCode=&appId=&role=&enabled=&q=&includeTest=&cursor=&limit=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct MemberQuery {
    /// Only members of this department (`orgCode`).
    #[serde(default)]
    #[param(value_type = String)]
    org_code: Option<String>,
    /// Only members this app authorises.
    #[serde(default)]
    #[param(value_type = String)]
    app_id: Option<String>,
    /// Only members with an authorisation of this role.
    #[serde(default)]
    #[param(inline, value_type = MemberRole)]
    role: Option<String>,
    /// Only members with an enabled (`true`) or disabled (`false`) authorisation.
    #[serde(default)]
    #[param(value_type = bool)]
    enabled: Option<String>,
    /// A prefix of `userName` or `name` (at most 64 characters).
    #[serde(default)]
    #[param(value_type = String, max_length = 64)]
    q: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    list: ListQuery,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

impl MemberQuery {
    fn filter(self) -> Result<(MemberFilter, PageQuery), ApiError> {
        let role = match non_empty(self.role) {
            None => None,
            Some(raw) => match choice::<MemberRole>(&raw) {
                Some(r) => Some(r.as_str().to_owned()),
                None => {
                    return Err(ApiError::bad_param(
                        "role",
                        format!("must be `user` or `admin`, got `{raw}`"),
                    ))
                }
            },
        };
        let enabled = match self.enabled.as_deref() {
            None | Some("") => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ApiError::bad_param(
                    "enabled",
                    format!("must be `true` or `false`, got `{other}`"),
                ))
            }
        };
        let q = non_empty(self.q);
        if q.as_ref().is_some_and(|q| q.chars().count() > 64) {
            return Err(ApiError::bad_param("q", "is longer than 64 characters"));
        }
        Ok((
            MemberFilter {
                org_code: non_empty(self.org_code),
                app_id: non_empty(self.app_id),
                role,
                enabled,
                prefix: q,
                include_test: self.list.test.include_test()?,
            },
            self.list.page,
        ))
    }
}

/// A member as the directory shows it: the newest profile any app's authorisation carried,
/// and every app that authorises it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberBody {
    user_name: String,
    #[schema(required = true)]
    name: Option<String>,
    /// Its department.
    #[schema(required = true)]
    org_code: Option<String>,
    #[schema(required = true)]
    position: Option<String>,
    #[schema(required = true)]
    employee_code: Option<String>,
    #[schema(required = true)]
    employee_type: Option<i32>,
    #[schema(required = true)]
    email: Option<String>,
    #[schema(required = true)]
    mobile: Option<String>,
    #[schema(required = true)]
    work_place: Option<String>,
    /// The Kit's `extension`, as it arrived.
    #[schema(required = true)]
    extension: Option<String>,
    /// Every app that authorises it, by app id (never empty).
    apps: Vec<MemberAppItem>,
}

impl Keyed for MemberBody {
    const KIND: &'static str = "member";

    fn key(&self) -> &str {
        &self.user_name
    }
}

/// One app's authorisation of a member.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberAppItem {
    app_id: String,
    #[schema(inline, value_type = MemberRole)]
    role: String,
    enabled: bool,
}

impl From<MemberApp> for MemberAppItem {
    fn from(a: MemberApp) -> Self {
        MemberAppItem {
            app_id: a.app_id,
            role: a.role,
            enabled: a.enabled,
        }
    }
}

impl From<MemberView> for MemberBody {
    fn from(v: MemberView) -> Self {
        let p = v.profile;
        MemberBody {
            user_name: p.user_name,
            name: p.name,
            org_code: p.org_code,
            position: p.position,
            employee_code: p.employee_code,
            employee_type: p.employee_type,
            email: p.email,
            mobile: p.mobile,
            work_place: p.work_place,
            extension: p.extension,
            apps: v.apps.into_iter().map(MemberAppItem::from).collect(),
        }
    }
}

/// `GET /api/v1/tenants/{tenantId}/members`: the members at least one app authorises.
///
/// # Errors
/// 401/403 per [`Caller`]; 404 for an unknown tenant; 400 naming `role`, `enabled`, `q`,
/// `limit`, `cursor` or `includeTest`.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenantId}/members",
    operation_id = "listMembers",
    tag = "directory",
    summary = "Members some app authorises, by userName, each with its apps",
    description = "Scope `directory:read`. The filters combine (and); `role` and `enabled` \
                   select members with one authorisation matching both (and `appId`, when \
                   given).",
    params(TenantPath, MemberQuery, TestFilter, PageQuery),
    responses(
        (status = 200, description = "A page of members.", body = Page<MemberBody>),
        crate::openapi::TenantReadErrors,
    ),
    security(("bearer" = ["directory:read"])),
)]
pub async fn members(
    TenantRead(state, tenant_id, q): TenantRead<MemberQuery>,
) -> Result<Json<Page<MemberBody>>, ApiError> {
    let (filter, page) = q.filter()?;
    let limit = page.limit()?;
    let after = page.after(MemberBody::KIND)?;
    visible_tenant(&state, &tenant_id, filter.include_test).await?;
    let rows = state
        .store
        .members(&tenant_id, &filter, after.as_deref(), limit + 1)
        .await?;
    let items = rows.into_iter().map(MemberBody::from).collect();
    Ok(Json(Page::keyed(items, limit)))
}

/// `GET /api/v1/tenants/{tenantId}/members/{userName}`.
///
/// # Errors
/// 401/403 per [`Caller`]; 404 for an unknown tenant, or a member no app authorises.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenantId}/members/{userName}",
    operation_id = "getMember",
    tag = "directory",
    summary = "One member with its apps",
    description = "Scope `directory:read`. 404 also for a member no app authorises.",
    params(
        TenantPath,
        ("userName" = String, Path, description = "The member's Kit `userName`."),
        TestFilter,
    ),
    responses(
        (status = 200, description = "The member.", body = MemberBody),
        crate::openapi::TenantReadErrors,
    ),
    security(("bearer" = ["directory:read"])),
)]
pub async fn member(
    TenantRead(state, (tenant_id, user_name), filter): TenantRead<TestFilter, (String, String)>,
) -> Result<Json<MemberBody>, ApiError> {
    let include_test = filter.include_test()?;
    visible_tenant(&state, &tenant_id, include_test).await?;
    match state
        .store
        .member(&tenant_id, &user_name, include_test)
        .await?
    {
        Some(m) => Ok(Json(m.into())),
        None => Err(ApiError::NotFound(format!(
            "member {user_name} not found in tenant {tenant_id} (or no app authorises it)"
        ))),
    }
}

/// `GET /api/v1/tenants/{tenantId}/members/{userName}/changes`: the member's changes from
/// the change feed, newest first.
///
/// # Errors
/// 401/403 per [`Caller`]; 404 for an unknown tenant; 400 for a bad cursor or limit.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenantId}/members/{userName}/changes",
    operation_id = "listMemberChanges",
    tag = "directory",
    summary = "A member's changes from the change feed, newest first",
    description = "Scope `directory:read`. The `member.*` events of this user in this tenant \
                   (authorised, modified, deauthorized, removed), as `/api/v1/events` serves \
                   them; a member no app authorises any more still has its history.",
    params(
        TenantPath,
        ("userName" = String, Path, description = "The member's Kit `userName`."),
        TestFilter,
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page of events, newest first.", body = Page<kitsync_store::ChangeEvent>),
        crate::openapi::TenantReadErrors,
    ),
    security(("bearer" = ["directory:read"])),
)]
pub async fn member_changes(
    TenantRead(state, (tenant_id, user_name), q): TenantRead<ListQuery, (String, String)>,
) -> Result<Json<Page<kitsync_store::ChangeEvent>>, ApiError> {
    let include_test = q.test.include_test()?;
    let limit = q.page.limit()?;
    let before = crate::admin::before(&q.page, "change")?;
    visible_tenant(&state, &tenant_id, include_test).await?;
    let rows = state
        .store
        .member_history(&tenant_id, &user_name, before, limit + 1)
        .await?;
    Ok(Json(crate::admin::newest_first(
        rows,
        limit,
        "change",
        |e: &kitsync_store::ChangeEvent| e.journal_id,
    )))
}

/// `?q=`: a search of the tenant list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantSearch {
    /// Only tenants whose `tenantId` or name contains this text (ASCII case ignored; 1–64
    /// characters).
    #[serde(default)]
    #[param(value_type = String, max_length = 64)]
    q: Option<String>,
}

impl TenantSearch {
    /// # Errors
    /// 400 naming `q` when it is longer than 64 characters.
    fn q(&self) -> Result<Option<&str>, ApiError> {
        match self.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            Some(q) if q.chars().count() > 64 => {
                Err(ApiError::bad_param("q", "at most 64 characters"))
            }
            other => Ok(other),
        }
    }
}

/// Whether `text` contains `part`, ASCII case ignored (as the store's search).
fn contains(text: &str, part: &str) -> bool {
    text.to_lowercase().contains(&part.to_lowercase())
}

/// `GET /api/v1/tenants`'s query.
#[derive(Debug, Default, Deserialize)]
pub struct TenantListQuery {
    #[serde(flatten)]
    search: TenantSearch,
    #[serde(flatten)]
    list: ListQuery,
}

/// `?includeTest=&cursor=&limit=`.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(flatten)]
    test: TestFilter,
    #[serde(flatten)]
    page: PageQuery,
}

/// What a tenant's list page reads, once [`ListQuery::open`] checked it.
struct Listing {
    include_test: bool,
    limit: u64,
    after: Option<String>,
}

impl ListQuery {
    /// A tenant list's common opening once [`TenantRead`] admitted the caller: the test
    /// filter, the limit and the cursor (of `T`'s list) are valid, and the tenant is visible
    /// with that filter.
    async fn open<T: Keyed>(&self, state: &ApiState, tenant_id: &str) -> Result<Listing, ApiError> {
        let include_test = self.test.include_test()?;
        let limit = self.page.limit()?;
        let after = self.page.after(T::KIND)?;
        visible_tenant(state, tenant_id, include_test).await?;
        Ok(Listing {
            include_test,
            limit,
            after,
        })
    }
}

/// An app of the tenant (never its client secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppItem {
    app_id: String,
    client_id: String,
}

impl Keyed for AppItem {
    const KIND: &'static str = "app";

    fn key(&self) -> &str {
        &self.app_id
    }
}

/// `GET /api/v1/tenants/{tenantId}/apps`: never the client secret.
///
/// # Errors
/// 401/403 per [`Caller`]; 404 for an unknown tenant; 400 naming a bad parameter.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenantId}/apps",
    operation_id = "listApps",
    tag = "directory",
    summary = "The tenant's apps and their clientId, by app id",
    description = "Scope `directory:read`. The client secret is never served over HTTP.",
    params(TenantPath, TestFilter, PageQuery),
    responses(
        (status = 200, description = "A page of apps.", body = Page<AppItem>),
        crate::openapi::TenantReadErrors,
    ),
    security(("bearer" = ["directory:read"])),
)]
pub async fn apps(
    TenantRead(state, tenant_id, q): TenantRead<ListQuery>,
) -> Result<Json<Page<AppItem>>, ApiError> {
    let list = q.open::<AppItem>(&state, &tenant_id).await?;
    let rows = state
        .store
        .apps(
            &tenant_id,
            list.after.as_deref(),
            list.limit + 1,
            list.include_test,
        )
        .await?;
    let items = rows
        .into_iter()
        .map(|a| AppItem {
            app_id: a.app_id,
            client_id: a.client_id,
        })
        .collect();
    Ok(Json(Page::keyed(items, list.limit)))
}

/// An app's authorisation of a member.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationItem {
    user_name: String,
    #[schema(inline, value_type = MemberRole)]
    role: String,
    enabled: bool,
}

impl Keyed for AuthorizationItem {
    const KIND: &'static str = "auth";

    fn key(&self) -> &str {
        &self.user_name
    }
}

/// `GET /api/v1/tenants/{tenantId}/apps/{appId}/authorizations`.
///
/// # Errors
/// 401/403 per [`Caller`]; 404 for an unknown tenant or app; 400 naming a bad parameter.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenantId}/apps/{appId}/authorizations",
    operation_id = "listAuthorizations",
    tag = "directory",
    summary = "Who the app authorises, with role and enabled flag, by userName",
    description = "Scope `directory:read`. 404 when neither the app nor any authorisation \
                   of it is known.",
    params(
        TenantPath,
        ("appId" = String, Path, description = "The Kit `appId`."),
        TestFilter,
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page of authorisations.", body = Page<AuthorizationItem>),
        crate::openapi::TenantReadErrors,
    ),
    security(("bearer" = ["directory:read"])),
)]
pub async fn authorizations(
    TenantRead(state, (tenant_id, app_id), q): TenantRead<ListQuery, (String, String)>,
) -> Result<Json<Page<AuthorizationItem>>, ApiError> {
    let Listing {
        include_test,
        limit,
        after,
    } = q.open::<AuthorizationItem>(&state, &tenant_id).await?;
    let rows = state
        .store
        .authorizations(
            &tenant_id,
            &app_id,
            after.as_deref(),
            limit + 1,
            include_test,
        )
        .await?;
    // Authorisations may arrive before their applicationSync (no ordering): the app is
    // unknown only when neither exists. Tenants have a handful of apps.
    if rows.is_empty() && after.is_none() {
        let app_known = state
            .store
            .apps(&tenant_id, None, 10_000, include_test)
            .await?
            .iter()
            .any(|a| a.app_id == app_id);
        if !app_known {
            return Err(ApiError::NotFound(format!(
                "app {app_id} not found in tenant {tenant_id}"
            )));
        }
    }
    let items = rows
        .into_iter()
        .map(|a| AuthorizationItem {
            user_name: a.user_name,
            role: a.role,
            enabled: a.enabled,
        })
        .collect();
    Ok(Json(Page::keyed(items, limit)))
}

/// A group: a per-app role group (`{appId}:{role}`, derived from the authorisations) or a
/// group created through SCIM.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupItem {
    group_id: String,
    display_name: String,
    /// The `userName`s of its user members, in the group's order (nested groups left out).
    members: Vec<String>,
}

impl Keyed for GroupItem {
    const KIND: &'static str = "group";

    fn key(&self) -> &str {
        &self.group_id
    }
}

impl From<kitsync_store::DerivedGroup> for GroupItem {
    fn from(g: kitsync_store::DerivedGroup) -> Self {
        GroupItem {
            group_id: g.group_id,
            display_name: g.display_name,
            members: g.members,
        }
    }
}

impl From<kitsync_store::IsvGroup> for GroupItem {
    fn from(g: kitsync_store::IsvGroup) -> Self {
        GroupItem {
            group_id: g.group_id,
            display_name: g.display_name,
            members: g
                .members
                .into_iter()
                .filter(kitsync_store::GroupMember::is_user)
                .map(|m| m.value)
                .collect(),
        }
    }
}

/// `GET /api/v1/tenants/{tenantId}/groups`: the per-app role groups derived from the
/// authorisations (`{appId}:{role}`, read-only) and the groups the ISV created through SCIM,
/// by id.
///
/// # Errors
/// 401/403 per [`Caller`]; 404 for an unknown tenant; 400 naming a bad parameter.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenantId}/groups",
    operation_id = "listGroups",
    tag = "directory",
    summary = "Role groups and SCIM groups, with their members, by group id",
    description = "Scope `directory:read`.",
    params(TenantPath, TestFilter, PageQuery),
    responses(
        (status = 200, description = "A page of groups.", body = Page<GroupItem>),
        crate::openapi::TenantReadErrors,
    ),
    security(("bearer" = ["directory:read"])),
)]
pub async fn groups(
    TenantRead(state, tenant_id, q): TenantRead<ListQuery>,
) -> Result<Json<Page<GroupItem>>, ApiError> {
    // Groups have no test flag of their own: the filter only decides the tenant's visibility.
    let Listing { limit, after, .. } = q.open::<GroupItem>(&state, &tenant_id).await?;
    let mut all: Vec<GroupItem> = state
        .store
        .derived_groups(&tenant_id)
        .await?
        .into_iter()
        .map(GroupItem::from)
        .chain(
            state
                .store
                .isv_groups(&tenant_id)
                .await?
                .into_iter()
                .map(GroupItem::from),
        )
        .filter(|g| after.as_deref().is_none_or(|a| g.group_id.as_str() > a))
        .collect();
    all.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    all.truncate(usize::try_from(limit + 1).unwrap_or(usize::MAX));
    Ok(Json(Page::keyed(all, limit)))
}
