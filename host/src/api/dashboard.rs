//! The dashboard: one page and its script and style, embedded in the
//! binary so that it works offline. They are served without the token;
//! every data request the page makes carries it.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../assets/dashboard/app.css");

/// The page refuses to be framed and loads nothing from elsewhere.
const HEADERS: [(header::HeaderName, &str); 3] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-cache"),
];

pub(crate) async fn index() -> impl IntoResponse {
    (
        HEADERS,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX,
    )
}

pub(crate) async fn script() -> impl IntoResponse {
    (
        HEADERS,
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

pub(crate) async fn style() -> impl IntoResponse {
    (
        HEADERS,
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE,
    )
}
