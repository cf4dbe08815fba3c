//! Cursor pagination shared by every list endpoint: `?cursor=&limit=` in, `{"items",
//! "nextCursor"}` out. Cursors are keyset positions (the last key returned), opaque to
//! clients (base64url), so a page is stable while others write: nothing that existed
//! throughout is skipped or repeated.
use crate::error::ApiError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;

/// `?cursor=&limit=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Where the page starts: the previous page's `nextCursor`, unchanged (absent: the first
    /// page).
    #[serde(default)]
    #[param(value_type = String)]
    pub cursor: Option<String>,
    /// Items per page, from 1 to 1000 (default 100).
    #[serde(default)]
    #[param(value_type = u64, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

impl PageQuery {
    /// The page size asked for (default 100, at most 1 000).
    ///
    /// # Errors
    /// 400 naming `limit` when it is not a whole number from 1 to 1 000.
    pub fn limit(&self) -> Result<u64, ApiError> {
        match self.limit.as_deref() {
            None | Some("") => Ok(DEFAULT_LIMIT),
            Some(raw) => raw
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_param(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}, got `{raw}`"),
                    )
                }),
        }
    }

    /// The key after which the page starts, for cursors of `kind`.
    ///
    /// # Errors
    /// 400 naming `cursor` when it was not issued by this endpoint.
    pub fn after(&self, kind: &str) -> Result<Option<String>, ApiError> {
        let Some(raw) = self.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let bad = || {
            ApiError::bad_param(
                "cursor",
                "is not a cursor of this list (pass back `nextCursor` unchanged)",
            )
        };
        let bytes = B64URL.decode(raw).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let key = text
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix(':'))
            .ok_or_else(bad)?;
        Ok(Some(key.to_owned()))
    }
}

/// The cursor that [`PageQuery::after`] reads back as `key`, for lists of `kind`.
#[must_use]
pub fn cursor(kind: &str, key: &str) -> String {
    B64URL.encode(format!("{kind}:{key}"))
}

/// `{"items": […], "nextCursor": …}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass it as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` rows fetched: the extra row only says there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: u64, kind: &str, key: impl Fn(&T) -> &str) -> Self {
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_cursor = if more {
            rows.last().map(|last| cursor(kind, key(last)))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// An item of a keyset list: its list's cursor kind and the key the list is ordered by.
pub trait Keyed {
    /// The cursor's kind (`tenant`, `dept`, …): a cursor of one list is refused by another.
    const KIND: &'static str;

    /// The key the list is ordered by; a cursor names the last one read.
    fn key(&self) -> &str;
}

impl<T: Keyed> Page<T> {
    /// [`Page::from_rows`] for [`Keyed`] items.
    pub fn keyed(rows: Vec<T>, limit: u64) -> Self {
        Self::from_rows(rows, limit, T::KIND, T::key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_limits_are_checked() {
        let page = Page::from_rows(vec!["a", "b", "c"], 2, "dept", |s| s);
        assert_eq!(page.items, vec!["a", "b"]);
        let q = PageQuery {
            cursor: page.next_cursor,
            limit: Some("2".into()),
        };
        assert_eq!(q.after("dept").unwrap().as_deref(), Some("b"));
        assert!(q.after("member").is_err(), "a cursor of another list");
        assert_eq!(q.limit().unwrap(), 2);
        assert!(Page::from_rows(vec!["a"], 2, "dept", |s| s)
            .next_cursor
            .is_none());
        for bad in ["0", "1001", "ten", "-1"] {
            let q = PageQuery {
                cursor: None,
                limit: Some(bad.into()),
            };
            let e = q.limit().unwrap_err().to_string();
            assert!(e.starts_with("limit:"), "{e}");
        }
        let q = PageQuery {
            cursor: Some("%%%".into()),
            limit: None,
        };
        assert!(q
            .after("dept")
            .unwrap_err()
            .to_string()
            .starts_with("cursor:"));
    }
}
