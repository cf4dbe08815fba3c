//! The dashboard (`GET /dashboard`): one self-contained HTML page — inline CSS
//! and vanilla JavaScript, no build step, no third-party origin — compiled into the binary.
//!
//! The page itself needs no token: it asks for a `stats:read` token (or reads one from the
//! URL fragment, `#token=…&preset=7d`, which the browser never sends to a server), keeps it in
//! `sessionStorage` and reads the statistics API ([`crate::stats`]) with
//! `Authorization: Bearer`. The Content-Security-Policy admits exactly the page's one inline
//! script and one inline style (by their SHA-256) and requests to this origin, nothing else.
use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::sync::LazyLock;

/// The page, as served.
pub const PAGE: &str = include_str!("dashboard.html");

static CSP: LazyLock<String> = LazyLock::new(|| content_security_policy(PAGE));

/// `'sha256-…'` of the body of every `<tag>…</tag>` element of `page` (written without
/// attributes), as a CSP source expression.
fn inline_hashes(page: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut hashes = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else { break };
        let digest = Sha256::digest(&body.as_bytes()[..end]);
        hashes.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &body[end + close.len()..];
    }
    hashes
}

/// The policy for `page`: its inline script and style by hash, `fetch` to this origin only,
/// no plugins, frames, forms posted elsewhere or `<base>` rewrites.
#[must_use]
pub fn content_security_policy(page: &str) -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        inline_hashes(page, "script").join(" "),
        inline_hashes(page, "style").join(" "),
    )
}

/// `GET /dashboard`: the page, never cached (a new binary may serve a new page).
pub async fn page() -> impl IntoResponse {
    embedded(PAGE, &CSP)
}

/// An embedded page (`page`, with its `csp`): never cached, never sniffed, no referrer.
pub(crate) fn embedded(page: &'static str, csp: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        page,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_policy_names_the_pages_inline_script_and_style() {
        for page in [PAGE, crate::console::PAGE] {
            let csp = content_security_policy(page);
            let script = inline_hashes(page, "script");
            let style = inline_hashes(page, "style");
            assert_eq!((script.len(), style.len()), (1, 1), "one of each: {csp}");
            assert!(csp.contains(&format!("script-src {};", script[0])), "{csp}");
            assert!(csp.contains(&format!("style-src {};", style[0])), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
            // Nothing loaded from elsewhere (the SVG namespace URI is a name, not a load).
            for load in ["src=", "href=\"http", "href=\"//", "@import", "url("] {
                assert!(!page.contains(load), "{load}");
            }
        }
    }

    #[test]
    fn hashes_are_of_the_exact_element_body() {
        let page = "<p><script>a()</script><script>b()</script>";
        let expected: Vec<String> = ["a()", "b()"]
            .iter()
            .map(|s| {
                format!(
                    "'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s))
                )
            })
            .collect();
        assert_eq!(inline_hashes(page, "script"), expected);
        assert!(inline_hashes("<script>unterminated", "script").is_empty());
    }
}
