//! End-to-end: rate limits per IP and per source, batch and nesting limits, slow bodies, CORS, and TLS.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::*;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{dir}/data"
body_read_timeout_secs = 1

[server.cors]
allowed_origins = ["https://app.example.com"]

[sources.web]
write_keys = ["wk_web"]
[sources.bulk]
write_keys = ["wk_bulk"]

[limits]
requests_per_second_per_ip = 5
burst_per_ip = 5
events_per_second_per_source = 50
burst_per_source = 50
max_events_per_batch = 40
max_json_depth = 8

[sinks.local]
type = "file"
path = "{dir}/events"
[sinks.local.batch]
max_wait_ms = 50
"#;

#[tokio::test]
async fn floods_get_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let client = client();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let response = client
            .post(server.url("/v1/track"))
            .basic_auth("wk_web", Some(""))
            .json(&json!({"event": "Tick", "userId": "u", "messageId": format!("tick-{i}")}))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            assert!(
                response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    // Health is never rate limited.
    assert_eq!(
        client
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchyard_ingest_rate_limited_requests_total{scope=\"ip\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn per_source_event_rate_and_request_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let client = client();
    let batch = |prefix: &str, n: usize| -> Value {
        json!({"batch": (0..n).map(|i| track(&format!("{prefix}-{i}"), "u")).collect::<Vec<_>>()})
    };
    let too_many = client
        .post(server.url("/v1/batch"))
        .basic_auth("wk_bulk", Some(""))
        .json(&batch("big", 41))
        .send()
        .await
        .unwrap();
    assert_eq!(too_many.status(), 400);
    assert_eq!(
        too_many.json::<Value>().await.unwrap()["error"]["code"],
        "too_many_events"
    );
    let first = client
        .post(server.url("/v1/batch"))
        .basic_auth("wk_bulk", Some(""))
        .json(&batch("a", 40))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = client
        .post(server.url("/v1/batch"))
        .basic_auth("wk_bulk", Some(""))
        .json(&batch("b", 40))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 429, "the bulk source is over 50 events/s");
    // Another source is not affected.
    let other = client
        .post(server.url("/v1/batch"))
        .basic_auth("wk_web", Some(""))
        .json(&batch("c", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    let mut deep = json!("leaf");
    for _ in 0..20 {
        deep = json!({"nested": deep});
    }
    let response = client
        .post(server.url("/v1/batch"))
        .basic_auth("wk_web", Some(""))
        .json(&json!({"batch": [{"type": "track", "event": "Deep", "userId": "u", "properties": deep}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "too_deep"
    );
    assert_eq!(
        client
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_slow_body_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let address = server.base_url.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "POST /v1/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\nauthorization: Basic d2tfd2ViOg==\r\n\r\n{{\"batch\""
        )
        .unwrap();
        let mut response = String::new();
        let mut buffer = [0u8; 4096];
        if let Ok(read) = std::io::Read::read(&mut stream, &mut buffer) {
            response.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
        response
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn cors_preflight_and_headers_for_allowed_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let client = client();
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url("/v1/batch"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "content-type, authorization"
    );
    let denied = client
        .request(reqwest::Method::OPTIONS, server.url("/v1/batch"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
    let post = client
        .post(server.url("/v1/track"))
        .header("origin", "https://app.example.com")
        .basic_auth("wk_web", Some(""))
        .json(&json!({"event": "From Browser", "anonymousId": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    assert_eq!(
        post.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
}

#[tokio::test]
async fn tls_termination_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let ca = dir.path().join("ca.pem");
    // A CA and a leaf it signs (rustls rejects a self-signed CA used as the server certificate).
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=Test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(
        dir.path().join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    let config = CONFIG.replacen(
        "body_read_timeout_secs = 1\n",
        &format!(
            "body_read_timeout_secs = 1\ntls = {{ cert_path = \"{}\", key_path = \"{}\" }}\n",
            cert.display(),
            key.display()
        ),
        1,
    );
    let server = Switchyard::start(dir.path(), &config);
    let https_url = server.base_url.replace("http://", "https://");
    let certificate = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(certificate)
        .build()
        .unwrap();
    let response = client
        .post(format!("{https_url}/v1/track"))
        .basic_auth("wk_web", Some(""))
        .json(&json!({"event": "Secure", "userId": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = wait_for_events(&dir.path().join("events"), 1, Duration::from_secs(10)).await;
    assert_eq!(events[0]["event"], "Secure");
    // Plain HTTP on the TLS port is refused.
    assert!(reqwest::get(server.url("/health")).await.is_err());
}
