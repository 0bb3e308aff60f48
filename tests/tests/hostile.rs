//! End-to-end: a battery of malformed and hostile requests against the real switchyard process, on
//! the Segment and PostHog endpoints: truncated JSON, invalid UTF-8, huge numbers, deep nesting,
//! wrong types at every field, 10 MB strings, duplicate keys, null bytes, wrong content types and
//! gzip / base64 / lz64 bombs. Each gets its documented 4xx (or a per-event rejection); afterwards
//! the server is healthy, never panicked, and exactly the well-formed events sent alongside were
//! delivered.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use switchyard_tests::*;

const WRITE_KEY: &str = "wk_hostile";
const TOKEN: &str = "phc_hostile";

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{dir}/data"
max_body_bytes = 1048576
max_event_bytes = 32768
max_decompressed_bytes = 16777216

[limits]
# High enough that serde_json's own recursion limit (128) is what stops deep nesting inside it.
max_json_depth = 200

[sources.web]
write_keys = ["wk_hostile"]
posthog_tokens = ["phc_hostile"]

[sinks.local]
type = "file"
path = "{dir}/events"

[sinks.local.batch]
max_wait_ms = 50
"#;

/// What a request must get.
#[derive(Debug)]
enum Expect {
    /// A whole-request error: status and `error.code`.
    Error(u16, &'static str),
    /// 200 with exactly these indexes rejected, each reason containing the given text.
    Rejected(Vec<(usize, &'static str)>),
}

struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    expect: Expect,
}

fn case(name: &'static str, path: &'static str, body: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name,
        path,
        headers: Vec::new(),
        body: body.into(),
        expect,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: &'static str) -> Case {
        self.headers.push((name, value));
        self
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// An lz-string (`compressToBase64`) stream of a few KB that inflates to at least `units` `a`s:
/// one literal, then each code names the dictionary entry being defined (w + w[0]), so every entry
/// is one longer than the last. (Compressing that many `a`s with a real lz-string takes minutes.)
fn lz64_bomb(units: usize) -> String {
    let mut bits: Vec<bool> = Vec::new();
    let write = |count: u32, value: usize, bits: &mut Vec<bool>| {
        for shift in 0..count {
            bits.push(value >> shift & 1 == 1);
        }
    };
    write(2, 0, &mut bits); // an 8-bit literal follows
    write(8, usize::from(b'a'), &mut bits);
    let (mut dict_size, mut num_bits, mut enlarge_in, mut entry, mut total) =
        (4usize, 3u32, 4usize, 1usize, 1usize);
    while total < units {
        write(num_bits, dict_size, &mut bits);
        entry += 1;
        total += entry;
        dict_size += 1;
        enlarge_in -= 1;
        if enlarge_in == 0 {
            enlarge_in = 1 << num_bits;
            num_bits += 1;
        }
    }
    write(num_bits, 2, &mut bits); // end of stream
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text: String = bits
        .chunks(6)
        .map(|chunk| {
            let value = chunk
                .iter()
                .enumerate()
                .fold(0usize, |acc, (i, bit)| acc | (usize::from(*bit) << (5 - i)));
            char::from(ALPHABET[value])
        })
        .collect();
    while !text.len().is_multiple_of(4) {
        text.push('=');
    }
    text
}

/// Sends a request head over a raw connection (no body follows) and returns the status and JSON answer.
async fn raw_request(base_url: &str, head: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer to {head:?}");
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Tracks the well-formed events sent among the hostile ones.
#[derive(Default)]
struct Good {
    next: usize,
    ids: BTreeSet<String>,
}

impl Good {
    /// A valid Segment track message with a fresh messageId.
    fn segment(&mut self) -> Value {
        self.next += 1;
        let id = format!("good-{}", self.next);
        self.ids.insert(id.clone());
        json!({"type": "track", "event": "Good", "userId": "u-good", "messageId": id,
               "properties": {"n": self.next}})
    }

    /// A valid PostHog event with a fresh uuid.
    fn posthog(&mut self) -> Value {
        self.next += 1;
        let uuid = format!("0190a3c2-7b1e-7cc0-8f00-{:012}", self.next);
        self.ids.insert(uuid.clone());
        json!({"event": "good", "distinct_id": "d-good", "uuid": uuid, "properties": {"n": self.next}})
    }

    fn segment_batch(&mut self, bad: Vec<Value>) -> Vec<u8> {
        let mut batch = vec![self.segment()];
        batch.extend(bad);
        batch.push(self.segment());
        json!({"batch": batch}).to_string().into_bytes()
    }
}

/// Batch `[good, bad..., good]` as raw text (for bad messages that are not valid `Value`s).
fn raw_batch(good: &mut Good, bad: &[&str]) -> Vec<u8> {
    let mut parts = vec![good.segment().to_string()];
    parts.extend(bad.iter().map(|b| b.to_string()));
    parts.push(good.segment().to_string());
    format!("{{\"batch\":[{}]}}", parts.join(",")).into_bytes()
}

/// The rejections `[(index, reason)]` of a 200 answer.
fn rejections(body: &Value) -> Vec<(usize, String)> {
    body["rejected"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|r| {
                    (
                        r["index"].as_u64().unwrap_or(u64::MAX) as usize,
                        r["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn segment_cases(good: &mut Good) -> Vec<Case> {
    use Expect::*;
    let wrong_types: Vec<Value> = vec![
        json!({"type": 5, "event": "x", "userId": "u"}),
        json!({"type": "track", "event": {}, "userId": "u"}),
        json!({"type": "page", "name": [], "userId": "u"}),
        json!({"type": "track", "event": "x", "userId": {}}),
        json!({"type": "track", "event": "x", "anonymousId": []}),
        json!({"type": "group", "groupId": true, "userId": "u"}),
        json!({"type": "alias", "previousId": {}, "userId": "u"}),
        json!({"type": "track", "event": "x", "userId": "u", "messageId": []}),
        json!({"type": "track", "event": "x", "userId": "u", "timestamp": 5}),
        json!({"type": "track", "event": "x", "userId": "u", "originalTimestamp": {}}),
        json!({"type": "track", "event": "x", "userId": "u", "sentAt": []}),
        json!({"type": "track", "event": "x", "userId": "u", "properties": "x"}),
        json!({"type": "identify", "userId": "u", "traits": 5}),
        json!({"type": "track", "event": "x", "userId": "u", "context": []}),
        json!({"type": "track", "event": "x", "userId": "u", "integrations": "x"}),
        json!(5),
        json!("a string"),
        json!(null),
        json!([]),
    ];
    let fields = [
        "type:",
        "event:",
        "name:",
        "userId:",
        "anonymousId:",
        "groupId:",
        "previousId:",
        "messageId:",
        "timestamp:",
        "originalTimestamp:",
        "sentAt:",
        "properties:",
        "traits:",
        "context:",
        "integrations:",
        "JSON object",
        "JSON object",
        "JSON object",
        "JSON object",
    ];
    let wrong_type_rejections: Vec<(usize, &'static str)> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| (i + 1, *f))
        .collect();
    let too_many_members: serde_json::Map<String, Value> =
        (0..2001).map(|n| (format!("p{n}"), json!(0))).collect();
    let ten_mb = "x".repeat(10 * 1024 * 1024);
    let huge_event =
        json!({"type": "track", "event": "huge", "userId": "u", "properties": {"blob": ten_mb}});
    let deep = format!("{}1{}", "[".repeat(150), "]".repeat(150));
    let very_deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let gzip_bomb = gzip(&vec![b' '; 24 * 1024 * 1024]);
    let truncated_gzip = gzip(&good_plain_batch())[..20].to_vec();
    vec![
        case(
            "truncated JSON",
            "/v1/batch",
            r#"{"batch":[{"type":"track","event":"x","userId":"u""#,
            Error(400, "malformed_json"),
        ),
        case(
            "truncated gzip",
            "/v1/batch",
            truncated_gzip,
            Error(400, "bad_gzip"),
        ),
        case(
            "invalid UTF-8",
            "/v1/batch",
            b"{\"batch\":[{\"type\":\"track\",\"event\":\"\xff\xfe\",\"userId\":\"u\"}]}".to_vec(),
            Error(400, "malformed_json"),
        ),
        case(
            "not JSON at all",
            "/v1/batch",
            vec![0x00, 0x9f, 0x92, 0x96, 0xff],
            Error(400, "malformed_json"),
        ),
        case(
            "empty body",
            "/v1/batch",
            Vec::new(),
            Error(400, "malformed_json"),
        ),
        case(
            "huge numbers",
            "/v1/batch",
            raw_batch(
                good,
                &[
                    r#"{"type":"track","event":"n","userId":"u","properties":{"n":1e999999}}"#,
                    r#"{"type":"track","event":"n","userId":"u","properties":{"n":-1e400}}"#,
                ],
            ),
            Rejected(vec![(1, "number out of range"), (2, "number out of range")]),
        ),
        case(
            "more object members than max_properties (2,000 by default)",
            "/v1/batch",
            good.segment_batch(vec![json!({
                "type": "track", "event": "wide", "userId": "u", "properties": too_many_members
            })]),
            Rejected(vec![(
                1,
                "2001 properties (object members), over the limit of 2000",
            )]),
        ),
        case(
            "a batch context that takes every event over max_properties",
            "/v1/batch",
            json!({
                "batch": [
                    {"type": "track", "event": "small", "userId": "u"},
                    {"type": "page", "name": "small", "anonymousId": "a"}
                ],
                "context": too_many_members
            })
            .to_string(),
            Rejected(vec![
                (
                    0,
                    "2001 properties (object members), over the limit of 2000",
                ),
                (
                    1,
                    "2001 properties (object members), over the limit of 2000",
                ),
            ]),
        ),
        case(
            "deep nesting past serde_json's recursion limit",
            "/v1/batch",
            raw_batch(
                good,
                &[&format!(
                    r#"{{"type":"track","event":"d","userId":"u","properties":{{"d":{deep}}}}}"#
                )],
            ),
            Rejected(vec![(1, "recursion limit")]),
        ),
        case(
            "nesting past the configured depth",
            "/v1/batch",
            format!(
                r#"{{"batch":[{{"type":"track","event":"d","userId":"u","properties":{{"d":{very_deep}}}}}]}}"#
            ),
            Error(400, "too_deep"),
        ),
        case(
            "wrong types at every field",
            "/v1/batch",
            good.segment_batch(wrong_types),
            Rejected(wrong_type_rejections),
        ),
        case(
            "batch is not an array",
            "/v1/batch",
            r#"{"batch":{"type":"track"}}"#,
            Error(400, "invalid_batch"),
        ),
        case(
            "sentAt is a number",
            "/v1/batch",
            r#"{"batch":[],"sentAt":5}"#,
            Error(400, "invalid_batch"),
        ),
        case(
            "context is a string",
            "/v1/batch",
            r#"{"batch":[],"context":"x"}"#,
            Error(400, "invalid_batch"),
        ),
        case(
            "writeKey is a number",
            "/v1/batch",
            r#"{"batch":[],"writeKey":5}"#,
            Error(400, "invalid_batch"),
        ),
        case(
            "single call with an array",
            "/v1/track",
            "[]",
            Error(400, "malformed_json"),
        ),
        case(
            "10 MB string, gzipped",
            "/v1/batch",
            gzip(&good.segment_batch(vec![huge_event])),
            Rejected(vec![(1, "over the limit")]),
        )
        .header("content-encoding", "gzip"),
        case(
            "duplicate keys",
            "/v1/batch",
            raw_batch(
                good,
                &[r#"{"type":"track","type":"identify","event":"x","userId":"u"}"#],
            ),
            Rejected(vec![(1, "duplicate field `type`")]),
        ),
        case(
            "duplicate batch",
            "/v1/batch",
            r#"{"batch":[],"batch":[]}"#,
            Error(400, "invalid_batch"),
        ),
        case(
            "raw NUL byte inside a string",
            "/v1/batch",
            b"{\"batch\":[{\"type\":\"track\",\"event\":\"a\x00b\",\"userId\":\"u\"}]}".to_vec(),
            Error(400, "malformed_json"),
        ),
        case(
            "XML",
            "/v1/batch",
            "<batch><track/></batch>",
            Error(400, "malformed_json"),
        )
        .header("content-type", "application/xml"),
        case(
            "multipart form",
            "/v1/batch",
            "--x\r\nContent-Disposition: form-data; name=\"batch\"\r\n\r\n[]\r\n--x--\r\n",
            Error(400, "malformed_json"),
        )
        .header("content-type", "multipart/form-data; boundary=x"),
        case(
            "brotli",
            "/v1/batch",
            "{}",
            Error(415, "unsupported_encoding"),
        )
        .header("content-encoding", "br"),
        case(
            "gzip header on plain JSON",
            "/v1/batch",
            good_plain_batch(),
            Error(400, "bad_gzip"),
        )
        .header("content-encoding", "gzip"),
        case(
            "gzip bomb",
            "/v1/batch",
            gzip_bomb,
            Error(413, "body_too_large"),
        ),
    ]
}

/// A batch with no event worth keeping (its request fails as a whole anyway).
fn good_plain_batch() -> Vec<u8> {
    br#"{"batch":[{"type":"track","event":"never","userId":"u","messageId":"never-stored"}]}"#
        .to_vec()
}

/// The PostHog cases, and the uuid of the event whose distinct id carries a NUL.
fn posthog_cases(good: &mut Good) -> (Vec<Case>, String) {
    use Expect::*;
    let batch = |good: &mut Good, bad: Vec<Value>| -> Vec<u8> {
        let mut events = vec![good.posthog()];
        events.extend(bad);
        events.push(good.posthog());
        json!({"api_key": TOKEN, "batch": events})
            .to_string()
            .into_bytes()
    };
    let wrong = batch(
        good,
        vec![
            json!({"event": 5, "distinct_id": "d"}),
            json!({"event": "e"}),
            json!({"event": "e", "distinct_id": "d", "properties": "x"}),
            json!({"event": "e", "distinct_id": "d", "uuid": 5}),
            json!({"event": "e", "distinct_id": "d", "uuid": "not-a-uuid"}),
            json!({"event": "e", "distinct_id": "d", "timestamp": {}}),
            json!({"event": "e", "distinct_id": "d", "offset": "soon"}),
            json!({"event": "e", "distinct_id": "d", "$set": 5}),
            json!({"event": "$create_alias", "distinct_id": "d"}),
            json!({"event": "$groupidentify", "distinct_id": "d", "properties": {"$group_key": []}}),
            json!(5),
            json!(null),
        ],
    );
    let wrong_rejections = vec![
        (1, "event: invalid type"),
        (2, "distinct_id is required"),
        (3, "properties: invalid type"),
        (4, "uuid: invalid type"),
        (5, "is not a UUID"),
        (6, "timestamp: invalid type"),
        (7, "offset: invalid type"),
        (8, "$set: invalid type"),
        (9, "properties.alias is required"),
        (10, "properties.$group_key is required"),
        (11, "JSON object"),
        (12, "JSON object"),
    ];
    let ten_mb = "x".repeat(10 * 1024 * 1024);
    let huge = gzip(&batch(
        good,
        vec![json!({"event": "huge", "distinct_id": "d", "properties": {"blob": ten_mb}})],
    ));
    let bomb = gzip(&vec![b'['; 24 * 1024 * 1024]);
    let form_bomb = format!(
        "data={}",
        form_urlencoded::byte_serialize(b64(&bomb).as_bytes()).collect::<String>()
    );
    let lz_bomb = lz64_bomb(17 * 1024 * 1024);
    // Escaped NULs: in an id PostHog turns them into U+FFFD; in values they are kept.
    let mut with_nul = good.posthog();
    with_nul["distinct_id"] = json!("a\u{0}b");
    with_nul["properties"]["nul"] = json!("x\u{0}y");
    with_nul["token"] = json!(TOKEN);
    let nul_id = with_nul["uuid"].as_str().unwrap().to_string();
    // Duplicate keys inside an event: the last one wins, as in PostHog.
    let mut duplicated = good.posthog();
    duplicated["token"] = json!(TOKEN);
    let duplicated = duplicated.to_string().replacen(
        "\"event\":\"good\"",
        "\"event\":\"first\",\"event\":\"good\"",
        1,
    );
    assert!(duplicated.contains("\"first\""));
    let mut as_form = good.posthog();
    as_form["token"] = json!(TOKEN);
    let cases = vec![
        case(
            "posthog truncated",
            "/batch/",
            r#"{"api_key":"phc_hostile","batch":[{"event":"#,
            Error(400, "malformed_json"),
        ),
        case(
            "posthog invalid UTF-8",
            "/e/",
            b"[{\"event\":\"\xc3\x28\",\"distinct_id\":\"d\",\"token\":\"phc_hostile\"}]".to_vec(),
            Error(400, "malformed_json"),
        ),
        case(
            "posthog wrong types",
            "/batch/",
            wrong,
            Rejected(wrong_rejections),
        ),
        case(
            "posthog api_key is a number",
            "/batch/",
            r#"{"api_key":5,"batch":[]}"#,
            Error(400, "invalid_batch"),
        ),
        case(
            "posthog batch is a string",
            "/batch/",
            r#"{"api_key":"phc_hostile","batch":"x"}"#,
            Error(400, "invalid_batch"),
        ),
        case(
            "posthog sent_at is an object",
            "/batch/",
            r#"{"api_key":"phc_hostile","batch":[],"sent_at":{}}"#,
            Error(400, "invalid_batch"),
        ),
        case(
            "posthog two tokens",
            "/e/",
            r#"[{"event":"e","distinct_id":"d","token":"phc_hostile"},{"event":"e","distinct_id":"d","token":"phc_other"}]"#,
            Error(400, "invalid_batch"),
        ),
        case(
            "posthog bad base64",
            "/e/?compression=base64",
            "a=b=c=d=",
            Error(400, "bad_encoding"),
        ),
        case(
            "posthog bad lz64",
            "/e/?compression=lz64",
            "w",
            Error(400, "bad_encoding"),
        ),
        case(
            "posthog 10 MB string, gzipped",
            "/batch/",
            huge,
            Rejected(vec![(1, "over the limit")]),
        ),
        case(
            "posthog gzip bomb",
            "/batch/",
            bomb,
            Error(413, "body_too_large"),
        ),
        case(
            "posthog gzip bomb in base64 in a form",
            "/i/v0/e/",
            form_bomb,
            Error(413, "body_too_large"),
        )
        .header("content-type", "application/x-www-form-urlencoded"),
        case(
            "posthog lz64 bomb",
            "/e/?compression=lz64",
            lz_bomb,
            Error(413, "body_too_large"),
        ),
        case(
            "posthog form without data",
            "/e/",
            "ver=1.0&compression=lz64",
            Error(400, "bad_encoding"),
        )
        .header("content-type", "application/x-www-form-urlencoded"),
        case(
            "posthog escaped NULs",
            "/e/",
            json!([with_nul]).to_string(),
            Rejected(vec![]),
        ),
        case(
            "posthog duplicate keys",
            "/capture/",
            format!("[{duplicated}]"),
            Rejected(vec![]),
        ),
        case(
            "posthog JSON under a form content type",
            "/track/",
            json!([as_form]).to_string(),
            Rejected(vec![]),
        )
        .header("content-type", "application/x-www-form-urlencoded"),
    ];
    (cases, nul_id)
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_good_events_still_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let client = client();
    let mut good = Good::default();
    let mut cases = segment_cases(&mut good);
    let (posthog, nul_id) = posthog_cases(&mut good);
    cases.extend(posthog);
    for case in cases {
        let mut request = client.post(server.url(case.path)).body(case.body);
        if case.path.starts_with("/v1/") {
            request = request.basic_auth(WRITE_KEY, Some(""));
        }
        for (name, value) in &case.headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let status = response.status().as_u16();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: answer is not JSON: {e}", case.name));
        match &case.expect {
            Expect::Error(want_status, want_code) => {
                assert_eq!(status, *want_status, "{}: {body}", case.name);
                assert_eq!(body["error"]["code"], *want_code, "{}: {body}", case.name);
            }
            Expect::Rejected(expected) => {
                assert_eq!(status, 200, "{}: {body}", case.name);
                let found = rejections(&body);
                assert_eq!(
                    found.iter().map(|r| r.0).collect::<Vec<_>>(),
                    expected.iter().map(|r| r.0).collect::<Vec<_>>(),
                    "{}: {body}",
                    case.name
                );
                for ((_, reason), (index, text)) in found.iter().zip(expected) {
                    assert!(
                        reason.contains(text),
                        "{}: index {index}: `{reason}` lacks `{text}`",
                        case.name
                    );
                }
            }
        }
        // Still healthy after every single case.
        let health = client.get(server.url("/health")).send().await.unwrap();
        assert_eq!(health.status(), 200, "after {}", case.name);
    }

    // A declared 10 MB body is refused before a byte of it is read.
    for path in ["/v1/batch", "/batch/"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: switchyard\r\nContent-Type: application/json\r\n\
             Content-Length: 10485760\r\nConnection: close\r\n\r\n"
        );
        let (status, body) = raw_request(&server.base_url, &head).await;
        assert_eq!(status, 413, "{path}: {body}");
        assert_eq!(body["error"]["code"], "body_too_large", "{path}");
    }

    let ready: Value = client
        .get(server.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");

    // Exactly the well-formed events arrived, once each.
    let expected = good.ids.len();
    let events = wait_for_events(
        &dir.path().join("events"),
        expected,
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events_after = read_ndjson_dir(&dir.path().join("events"));
    assert_eq!(events_after.len(), events.len(), "nothing else trickled in");
    let ids: BTreeSet<String> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, good.ids, "delivered = the well-formed events sent");
    assert_eq!(events.len(), expected);
    let with_nul = events.iter().find(|e| e["messageId"] == nul_id).unwrap();
    assert_eq!(
        with_nul["userId"], "a\u{FFFD}b",
        "PostHog's rule for NUL in ids"
    );
    assert_eq!(
        with_nul["properties"]["nul"], "x\u{0}y",
        "NUL in values kept"
    );
    assert!(
        events.iter().all(|e| e["event"] != "first"),
        "duplicate keys: the last one wins"
    );
    assert!(
        !server.logs().contains("panicked"),
        "the server panicked:\n{}",
        server.logs()
    );
}
