//! CORS for browser SDKs: preflight answers for the ingest endpoints and the allow-origin header on
//! their responses, for the origins in `[server.cors] allowed_origins`.

use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use switchyard_config::CorsConfig;

use crate::http::Body;

fn allowed(config: &CorsConfig, origin: &HeaderValue) -> Option<HeaderValue> {
    let text = origin.to_str().ok()?;
    if config.allowed_origins.iter().any(|allowed| allowed == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    config
        .allowed_origins
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(text))
        .then(|| origin.clone())
}

/// Adds the CORS headers to a response for an allowed origin.
pub fn decorate(config: &CorsConfig, origin: &HeaderValue, headers: &mut HeaderMap) {
    if let Some(value) = allowed(config, origin) {
        headers.insert("access-control-allow-origin", value);
        headers.insert("vary", HeaderValue::from_static("Origin"));
        headers.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("x-request-id, x-switchyard-server-time, retry-after"),
        );
    }
}

/// The answer to an `OPTIONS` preflight: 204 with the allowed methods and headers for an allowed
/// origin, 403 for any other.
pub fn preflight(config: &CorsConfig, request: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::default());
    let Some(origin) = request.get(hyper::header::ORIGIN) else {
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
            .headers_mut()
            .insert("allow", HeaderValue::from_static("POST, OPTIONS"));
        return response;
    };
    if allowed(config, origin).is_none() {
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    }
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, OPTIONS"),
    );
    let requested = request
        .get("access-control-request-headers")
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_static("content-type, authorization, content-encoding")
        });
    headers.insert("access-control-allow-headers", requested);
    headers.insert(
        "access-control-max-age",
        HeaderValue::from(config.max_age_secs),
    );
    if let Some(value) = allowed(config, origin) {
        if value != "*" {
            headers.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
        headers.insert("access-control-allow-origin", value);
        headers.insert("vary", HeaderValue::from_static("Origin"));
    }
    response
}

/// Whether a request to an operator endpoint (admin API, KPI API, console) comes from another site's
/// page: browsers say so in `Sec-Fetch-Site`; without it, an `Origin` that is not this host. Such
/// requests are refused, so a page elsewhere cannot use a browser (or a proxy that adds the admin
/// token) to read KPIs or change rollouts. Non-browser clients send neither header.
pub fn is_cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.to_str(), Ok("same-origin") | Ok("none"));
    }
    let Some(origin) = headers.get(hyper::header::ORIGIN) else {
        return false;
    };
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    origin_host.is_none_or(|origin_host| !origin_host.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod cross_site_tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn same_origin_and_tools_pass_other_sites_do_not() {
        assert!(!is_cross_site(&headers(&[])));
        assert!(!is_cross_site(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
        assert!(!is_cross_site(&headers(&[("sec-fetch-site", "none")])));
        assert!(is_cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(is_cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!is_cross_site(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(is_cross_site(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(is_cross_site(&headers(&[
            ("origin", "null"),
            ("host", "a")
        ])));
    }
}
