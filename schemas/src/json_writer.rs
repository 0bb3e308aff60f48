//! A fast JSON writer for the canonical event: exactly the bytes `serde_json::to_writer(&event)`
//! writes, without serde's per-value dispatch, and with strings scanned for escapes 16 or 8 bytes at a time.
//!
//! Encoding every event once into the ingest log was 12-14% of the ingest path's CPU, a third of it
//! serde_json checking string bytes one at a time (see BENCHMARKS.md). The unit tests compare the
//! output with serde_json's byte for byte, on fixed cases and on generated values.

use serde_json::Value;

use crate::event::{Event, JsonMap};
use crate::time::write_millis;

/// Appends `event`'s JSON to `out`: the same bytes as `serde_json::to_writer(out, event)`.
pub fn write_event(out: &mut Vec<u8>, event: &Event) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(event.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"messageId\":");
    write_str(out, &event.message_id);
    write_optional_str(out, b",\"event\":", event.event.as_deref());
    write_optional_str(out, b",\"name\":", event.name.as_deref());
    write_optional_str(out, b",\"userId\":", event.user_id.as_deref());
    write_optional_str(out, b",\"anonymousId\":", event.anonymous_id.as_deref());
    write_optional_str(out, b",\"groupId\":", event.group_id.as_deref());
    write_optional_str(out, b",\"previousId\":", event.previous_id.as_deref());
    out.extend_from_slice(b",\"timestamp\":");
    write_millis(out, &event.timestamp);
    if let Some(time) = &event.original_timestamp {
        out.extend_from_slice(b",\"originalTimestamp\":");
        write_millis(out, time);
    }
    if let Some(time) = &event.sent_at {
        out.extend_from_slice(b",\"sentAt\":");
        write_millis(out, time);
    }
    out.extend_from_slice(b",\"receivedAt\":");
    write_millis(out, &event.received_at);
    write_nonempty_map(out, b",\"properties\":", &event.properties);
    write_nonempty_map(out, b",\"traits\":", &event.traits);
    write_nonempty_map(out, b",\"context\":", &event.context);
    write_nonempty_map(out, b",\"integrations\":", &event.integrations);
    out.extend_from_slice(b",\"source\":");
    write_str(out, &event.source);
    if !event.request_id.is_empty() {
        out.extend_from_slice(b",\"requestId\":");
        write_str(out, &event.request_id);
    }
    write_optional_str(out, b",\"ip\":", event.ip.as_deref());
    write_optional_str(out, b",\"userAgent\":", event.user_agent.as_deref());
    out.push(b'}');
}

fn write_optional_str(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
    if let Some(value) = value {
        out.extend_from_slice(key);
        write_str(out, value);
    }
}

fn write_nonempty_map(out: &mut Vec<u8>, key: &[u8], map: &JsonMap) {
    if !map.is_empty() {
        out.extend_from_slice(key);
        write_map(out, map);
    }
}

/// `map` as JSON text: the same text as `serde_json::to_string`.
pub fn map_text(map: &JsonMap) -> String {
    if map.is_empty() {
        return "{}".to_string();
    }
    // Room for a typical properties or context map: growing the buffer from small was a fifth of
    // the time.
    let mut out = Vec::with_capacity(512);
    write_map(&mut out, map);
    // Only whole `str`s and ASCII are written, so this never fails (and checks it anyway).
    String::from_utf8(out).unwrap_or_else(|_| "{}".to_string())
}

/// Appends a JSON object of `entries` in their order, each value written by `write_value`.
pub fn write_object<K: AsRef<str>, V>(
    out: &mut Vec<u8>,
    entries: impl IntoIterator<Item = (K, V)>,
    mut write_value: impl FnMut(&mut Vec<u8>, V),
) {
    out.push(b'{');
    for (index, (key, value)) in entries.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_key(out, key.as_ref());
        write_value(out, value);
    }
    out.push(b'}');
}

/// Appends a JSON array of `items`, each written by `write_item`.
pub fn write_array<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut write_item: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_item(out, item);
    }
    out.push(b']');
}

/// Appends `"key":` (the key escaped as a JSON string).
pub fn write_key(out: &mut Vec<u8>, key: &str) {
    write_str(out, key);
    out.push(b':');
}

/// Appends an integer as JSON (the same digits as serde_json).
pub fn write_i64(out: &mut Vec<u8>, number: i64) {
    // itoa straight into the buffer; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &number);
}

/// Appends `value`'s JSON: the same bytes as `serde_json::to_writer`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            // serde_json's own number writer (itoa / ryu straight into the buffer): `Display`
            // gives the same text through the formatting machinery, a third of encoding a
            // ClickHouse row's maps. Writing to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, number);
        }
        Value::String(text) => write_str(out, text),
        Value::Array(items) => write_array(out, items, write_value),
        Value::Object(map) => write_map(out, map),
    }
}

/// Appends `map`'s JSON object: the same bytes as `serde_json::to_writer`.
pub fn write_map(out: &mut Vec<u8>, map: &JsonMap) {
    write_object(out, map, write_value);
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the word's eight bytes must be escaped: a control byte (< 0x20), `"` or `\`.
/// Exact as a yes/no (the classic "has zero byte" / "has byte less than" bit tricks).
fn word_needs_escape(word: u64) -> bool {
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let has_quote = quote.wrapping_sub(ONES) & !quote;
    let has_backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | has_quote | has_backslash) & HIGHS != 0
}

/// The escape serde_json writes for each byte, or 0 when it is written as is; `u` means `\u00XX`.
const ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Where the first byte that must be escaped is, if any. Strings of 16 bytes and more are tested 16
/// bytes at a time with SSE2 (see [`first_escape_sse2`]); shorter ones a word (eight bytes) at a
/// time, the last word overlapping the one before it so no byte is left for a byte-by-byte tail;
/// only a word that has such a byte, and a string shorter than a word, are looked at byte by byte.
fn first_escape(bytes: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= 16 {
        return first_escape_sse2(bytes);
    }
    let word_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let from = if bytes.len() < 8 {
        0
    } else {
        let last = bytes.len() - 8;
        let mut at = 0;
        loop {
            let start = at.min(last);
            if word_needs_escape(word_at(start)) {
                break start;
            }
            if start == last {
                return None;
            }
            at += 8;
        }
    };
    bytes[from..]
        .iter()
        .position(|&byte| ESCAPES[usize::from(byte)] != 0)
        .map(|at| from + at)
}

/// [`first_escape`] for strings of at least 16 bytes: 16 bytes per step (a third of the instructions
/// of the word-at-a-time test on the URLs and user agents of events), the last step overlapping the
/// one before it. The overlap was found clean, so the first flagged byte of a step is the string's
/// first byte to escape.
#[cfg(target_arch = "x86_64")]
fn first_escape_sse2(bytes: &[u8]) -> Option<usize> {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let last = bytes.len().checked_sub(16)?;
    let mut at = 0;
    loop {
        let start = at.min(last);
        let chunk: &[u8; 16] = bytes[start..start + 16].try_into().ok()?;
        // SAFETY: SSE2 is part of the x86-64 architecture (every such CPU has it), and the load
        // reads the chunk's 16 bytes, with no alignment requirement.
        let flagged = unsafe {
            let chunk = _mm_loadu_si128(chunk.as_ptr().cast());
            let quote = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8));
            // A control byte (below 0x20) is the one whose unsigned maximum with 0x1f is 0x1f.
            let below_space = _mm_cmpeq_epi8(
                _mm_max_epu8(chunk, _mm_set1_epi8(0x1f)),
                _mm_set1_epi8(0x1f),
            );
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), below_space)) as u32
        };
        if flagged != 0 {
            return Some(start + flagged.trailing_zeros() as usize);
        }
        if start == last {
            return None;
        }
        at += 16;
    }
}

/// Appends `text` as a JSON string: the same bytes as serde_json (short escapes for `\b \t \n \f \r`,
/// `\u00xx` with lowercase hex for the other control characters, everything else as is).
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    match first_escape(bytes) {
        // Almost every string of an event: copied whole.
        None => out.extend_from_slice(bytes),
        Some(first) => write_escaped(out, bytes, first),
    }
    out.push(b'"');
}

/// The contents of a string that has a byte to escape at `first`: the bytes before it copied whole,
/// the rest byte by byte.
#[cold]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8], first: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&bytes[..first]);
    // Bytes before `start` are written; runs without escapes are copied whole.
    let mut start = first;
    for (index, &byte) in bytes.iter().enumerate().skip(first) {
        let escape = ESCAPES[usize::from(byte)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..index]);
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0x0f)]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::json;

    fn serde_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    fn written(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, value);
        out
    }

    fn full_event() -> Event {
        serde_json::from_value(json!({
            "type": "track", "messageId": "m-1", "event": "Order \"Completed\"", "name": "n",
            "userId": "u\u{1}", "anonymousId": "a", "groupId": "g", "previousId": "p",
            "timestamp": "2024-05-01T12:00:00.123Z", "originalTimestamp": "2024-05-01T11:59:58Z",
            "sentAt": "2024-05-01T12:00:01Z", "receivedAt": "2024-05-01T12:00:02.5Z",
            "properties": {"price": 12.5, "qty": 3, "neg": -7, "big": 18446744073709551615u64,
                           "tags": ["a", null, true, false, {"x": []}], "note": "é ✓ \u{7f}\n\t"},
            "traits": {"email": "[REDACTED:email]"},
            "context": {"page": {"path": "/a\\b"}, "library": {"name": "analytics.js"}},
            "integrations": {"All": false},
            "source": "web", "requestId": "r-1", "ip": "203.0.113.7", "userAgent": "Mozilla/5.0"
        }))
        .unwrap()
    }

    #[test]
    fn every_field_matches_serde_json() {
        let event = full_event();
        let mut out = Vec::new();
        write_event(&mut out, &event);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(serde_bytes(&event)).unwrap()
        );
    }

    #[test]
    fn optional_and_empty_fields_are_left_out_as_serde_json_does() {
        let mut event = full_event();
        event.event = None;
        event.name = None;
        event.user_id = None;
        event.group_id = None;
        event.previous_id = None;
        event.original_timestamp = None;
        event.sent_at = None;
        event.properties.clear();
        event.traits.clear();
        event.context.clear();
        event.integrations.clear();
        event.request_id.clear();
        event.ip = None;
        event.user_agent = None;
        let mut out = Vec::new();
        write_event(&mut out, &event);
        assert_eq!(out, serde_bytes(&event));
    }

    #[test]
    fn timestamps_outside_the_fast_path_match() {
        let mut event = full_event();
        // Years past 9999 and before year 0 take chrono's formatting instead of the fast path.
        event.timestamp = Utc.with_ymd_and_hms(12000, 1, 1, 0, 0, 0).unwrap();
        event.received_at = Utc.with_ymd_and_hms(-44, 3, 15, 12, 0, 0).unwrap();
        let mut out = Vec::new();
        write_event(&mut out, &event);
        assert_eq!(out, serde_bytes(&event));
    }

    #[test]
    fn every_byte_value_is_escaped_as_serde_json_escapes_it() {
        // Each character alone, and inside a run long enough for the word-at-a-time scan.
        for code in 0u32..0x100 {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            for text in [c.to_string(), format!("abcdefgh{c}ijklmnopq{c}{c}rs")] {
                let value = Value::String(text);
                assert_eq!(written(&value), serde_bytes(&value), "U+{code:04X}");
            }
            // At every offset within and after a word, and in the tail shorter than a word.
            for before in 0..18 {
                let value = Value::String(format!(
                    "{}{c}{}",
                    "a".repeat(before),
                    "b".repeat(20 - before)
                ));
                assert_eq!(
                    written(&value),
                    serde_bytes(&value),
                    "U+{code:04X} at {before}"
                );
            }
        }
    }

    #[test]
    fn the_first_byte_to_escape_is_found_at_every_position_of_every_length() {
        let reference = |bytes: &[u8]| bytes.iter().position(|&b| ESCAPES[usize::from(b)] != 0);
        // Bytes to escape at both ends of the control range, and bytes next to them that are not
        // (0x20, 0x7f, and high bytes that a signed comparison would take for control bytes).
        let to_escape = [b'"', b'\\', 0x00, 0x01, 0x1f];
        let plain = [b'a', 0x20, 0x7f, 0x80, 0x9f, 0xff];
        for length in 0..70 {
            for &filler in &plain {
                let clean = vec![filler; length];
                assert_eq!(first_escape(&clean), None, "clean, length {length}");
                for at in 0..length {
                    for &escaped in &to_escape {
                        let mut bytes = clean.clone();
                        bytes[at] = escaped;
                        // A second one later must not hide the first.
                        if at + 3 < length {
                            bytes[at + 3] = b'"';
                        }
                        assert_eq!(
                            first_escape(&bytes),
                            reference(&bytes),
                            "byte {escaped:#04x} at {at} of {length}, filler {filler:#04x}"
                        );
                    }
                }
            }
        }
    }

    fn arbitrary_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x7f]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn generated_values_match_serde_json(value in arbitrary_value()) {
            prop_assert_eq!(written(&value), serde_bytes(&value));
        }

        #[test]
        fn map_text_matches_serde_json(value in arbitrary_value(), key in any::<String>()) {
            let map: JsonMap = [(key, value)].into_iter().collect();
            prop_assert_eq!(map_text(&map), serde_json::to_string(&map).unwrap());
        }

        #[test]
        fn integers_and_keys_match_serde_json(number in any::<i64>(), key in any::<String>()) {
            let mut out = Vec::new();
            out.push(b'{');
            write_key(&mut out, &key);
            write_i64(&mut out, number);
            out.push(b'}');
            prop_assert_eq!(out, serde_bytes(&json!({ key: number })));
        }
    }
}
