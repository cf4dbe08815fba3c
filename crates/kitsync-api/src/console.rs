//! The console (`GET /console`): one self-contained HTML page, like the dashboard — inline CSS
//! and vanilla JavaScript, no build step, no third-party origin, CSP by hash — to browse the
//! directory and operate kitsync from a browser.
//!
//! Signed in with an `admin` token it operates: held plans (with what they would delete,
//! approve or reject), dead letters (body, replay one or all), webhook endpoints (deliveries,
//! retry, disable, enable), each change confirmed first. With a `directory:read` token it only
//! looks: the administration tabs and every action button are absent, and `/admin/v1` would
//! refuse them anyway. The directory loads lazily: tenants a page at a time, one level of
//! departments per expansion (`?parent=`, with counts), a department's members through the
//! API's cursor, and a member's recent changes.
use axum::response::IntoResponse;
use std::sync::LazyLock;

/// The page, as served.
pub const PAGE: &str = include_str!("console.html");

static CSP: LazyLock<String> = LazyLock::new(|| crate::dashboard::content_security_policy(PAGE));

/// `GET /console`: the page, never cached.
pub async fn page() -> impl IntoResponse {
    crate::dashboard::embedded(PAGE, &CSP)
}
