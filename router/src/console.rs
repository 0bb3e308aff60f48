//! The operator console at `/console`: three small hand-written static files compiled into the
//! binary (no CDN, no build step, works with no external network). The files hold no data: every
//! figure comes from the admin and KPI APIs, which demand the admin token (see README.md, "Console and KPIs").

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::http::{ApiError, Body};

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// Only same-origin scripts, styles and calls: the page can reach nothing but this server.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Serves `/console` and its assets. The admin API must be enabled (an `[admin] token`): without it
/// the console could show nothing.
pub fn route(
    app: &App,
    request: &Request<Incoming>,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Err(ApiError::method_not_allowed("GET"));
    }
    if app.runtime().config.admin.token.is_none() {
        return Err(ApiError::not_found(
            "the console needs the admin API: set [admin] token",
        ));
    }
    let (body, content_type) = match path {
        "/console" | "/console/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/console/console.js" => (CONSOLE_JS, "text/javascript; charset=utf-8"),
        "/console/console.css" => (CONSOLE_CSS, "text/css; charset=utf-8"),
        _ => return Err(ApiError::not_found(format!("no console file at {path}"))),
    };
    let mut response = Response::new(Body::new(bytes::Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Ok(response)
}
