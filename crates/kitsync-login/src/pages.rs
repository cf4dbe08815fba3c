//! The pages a browser may see from kitsync during a login: an error that says what went wrong
//! and what to do, and the page after a logout. No script, no external resource; the one
//! style sheet is admitted by its hash.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use kitsync_domain::html::escape;
use sha2::{Digest as _, Sha256};
use std::sync::LazyLock;

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}h1{font-size:1.4rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{color:#666}code{background:#f3f3f3;padding:0 .25rem}";

static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// An error page: a title, what happened, and the facts that identify the case (tenant, app,
/// user), all escaped.
pub(crate) struct ErrorPage {
    pub status: StatusCode,
    /// A stable code for logs and tests (`not_authorized`, `kit_unavailable`, …).
    pub code: &'static str,
    pub title: String,
    pub message: String,
    pub facts: Vec<(&'static str, String)>,
}

impl ErrorPage {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        title: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title: title.into(),
            message: message.into(),
            facts: Vec::new(),
        }
    }

    /// A 400 page: the request itself is wrong.
    pub(crate) fn bad_request(
        code: &'static str,
        title: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, title, message)
    }

    pub(crate) fn fact(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.facts.push((name, value.into()));
        self
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        let mut facts = String::new();
        for (k, v) in &self.facts {
            facts.push_str(&format!(
                "<dt>{}</dt><dd><code>{}</code></dd>",
                escape(k),
                escape(v)
            ));
        }
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title>\
             <style>{STYLE}</style></head><body data-error=\"{code}\"><h1>{title}</h1><p>{message}</p>\
             <dl>{facts}<dt>error</dt><dd><code>{code}</code></dd></dl></body></html>",
            title = escape(&self.title),
            message = escape(&self.message),
            code = self.code,
        );
        html(self.status, body)
    }
}

pub(crate) fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    resp
}

/// After `/oidc/logout` when no app asked to get the browser back.
pub(crate) fn logged_out() -> Response {
    html(
        StatusCode::OK,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed out</title>\
             <style>{STYLE}</style></head><body><h1>Signed out</h1><p>You are signed out of the \
             application and of your enterprise account.</p></body></html>"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_escape_what_they_repeat() {
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
