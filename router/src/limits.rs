//! Protection against floods and hostile input: token-bucket rate limits per client IP and per source
//! (`governor`), and a one-pass scan of JSON nesting depth and member count that runs before parsing.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use switchyard_config::LimitsConfig;
use switchyard_schemas::Event;

/// The rate limiters of one config.
pub struct Limiters {
    clock: DefaultClock,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_source: Option<DefaultKeyedRateLimiter<String>>,
}

fn quota(per_second: u32, burst: Option<u32>) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl Limiters {
    pub fn new(config: &LimitsConfig) -> Limiters {
        Limiters {
            clock: DefaultClock::default(),
            per_ip: quota(config.requests_per_second_per_ip, config.burst_per_ip)
                .map(RateLimiter::keyed),
            per_source: quota(config.events_per_second_per_source, config.burst_per_source)
                .map(RateLimiter::keyed),
        }
    }

    /// Takes one request from the IP's bucket; Err(wait) when it is empty.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.per_ip else {
            return Ok(());
        };
        limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Takes `events` from the source's bucket; Err(wait) when it does not hold that many.
    pub fn check_source(&self, source: &str, events: usize) -> Result<(), Duration> {
        let Some(limiter) = &self.per_source else {
            return Ok(());
        };
        let Some(count) = NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        match limiter.check_key_n(&source.to_string(), count) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // More events than the whole bucket holds: it can never pass at this rate.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }

    /// Forgets idle keys so per-IP state stays bounded; call now and then.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_source {
            limiter.retain_recent();
        }
    }
}

/// Object members at any depth of a JSON value.
fn members(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) => map.len() + map.values().map(members).sum::<usize>(),
        serde_json::Value::Array(items) => items.iter().map(members).sum(),
        _ => 0,
    }
}

/// Object members of a JSON object, its own and at any depth below.
pub fn map_members(map: &switchyard_schemas::JsonMap) -> usize {
    map.len() + map.values().map(members).sum::<usize>()
}

/// Object members in an event's properties, traits, context and integrations, at any depth.
pub fn event_members(event: &Event) -> usize {
    [
        &event.properties,
        &event.traits,
        &event.context,
        &event.integrations,
    ]
    .into_iter()
    .map(map_members)
    .sum()
}

/// At most how many object members a JSON text of `bytes` bytes holds: each member has a key's two
/// quotes and a colon of its own, so at most a third of the bytes.
pub fn members_in_text_at_most(bytes: usize) -> usize {
    bytes / 3
}

/// Rejects (alone, by their index in the request) events with more than `max_properties` members.
/// `events` are the request's messages that were not rejected yet, in order.
pub fn reject_oversized_events(
    max_properties: usize,
    events: &mut Vec<Event>,
    client_message_ids: &mut Vec<bool>,
    rejected: &mut Vec<crate::ingest::Rejection>,
) {
    let counts: Vec<usize> = events.iter().map(event_members).collect();
    if counts.iter().all(|count| *count <= max_properties) {
        return;
    }
    let already: std::collections::HashSet<usize> = rejected.iter().map(|r| r.index).collect();
    let total = events.len() + rejected.len();
    let mut indexes = (0..total).filter(|index| !already.contains(index));
    let mut keep = Vec::with_capacity(events.len());
    for count in &counts {
        let index = indexes.next().unwrap_or(total);
        if *count > max_properties {
            rejected.push(crate::ingest::Rejection {
                index,
                reason: format!("event has {count} properties (object members), over the limit of {max_properties}"),
                code: "too_complex",
                violations: Vec::new(),
            });
            keep.push(false);
        } else {
            keep.push(true);
        }
    }
    let mut keep_events = keep.clone().into_iter();
    events.retain(|_| keep_events.next().unwrap_or(true));
    let mut keep_ids = keep.into_iter();
    client_message_ids.retain(|_| keep_ids.next().unwrap_or(true));
    rejected.sort_by_key(|r| r.index);
}

/// Nesting depth and member count of a JSON text, found in one pass without parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonShape {
    pub max_depth: usize,
    /// Object members (`"key": value` pairs) at any depth.
    pub members: usize,
}

/// A request body's shape and, when it is an object with a `"batch"` array, where each of that
/// array's elements lies in the body (byte ranges, whitespace trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyShape {
    pub shape: JsonShape,
    /// Only meaningful once a parser has accepted the body: the scan does not validate.
    pub batch_elements: Option<Vec<std::ops::Range<usize>>>,
}

/// Scans `text` (which need not be valid JSON: the parser judges that later) for its shape and the
/// elements of a top-level `"batch"` array (see [`BodyShape`]).
///
/// On x86-64, 64-byte blocks are classified with SSE2 (part of the architecture, so always there):
/// masks of quotes, colons and brackets and commas; the strings' extent from the quotes' running
/// parity; colons outside strings counted, brackets and commas outside strings visited one by one.
/// A block with a backslash in it (rare: an escape), and the tail, go byte by byte, skipping
/// string contents eight bytes at a time with the classic zero-byte bit trick.
pub fn body_shape(text: &[u8]) -> BodyShape {
    let mut scan = Scan {
        text,
        index: 0,
        in_string: false,
        depth: 0,
        shape: JsonShape {
            max_depth: 0,
            members: 0,
        },
        batch: None,
        in_batch: false,
        element_start: None,
    };
    #[cfg(target_arch = "x86_64")]
    scan.blocks();
    scan.bytes(text.len());
    BodyShape {
        shape: scan.shape,
        batch_elements: scan.batch,
    }
}

/// The state of [`body_shape`]'s scan, shared by its block and byte steps.
struct Scan<'a> {
    text: &'a [u8],
    /// Where the scan is.
    index: usize,
    /// Inside a string at `index` (only between blocks: the byte step always ends a string).
    in_string: bool,
    depth: usize,
    shape: JsonShape,
    batch: Option<Vec<std::ops::Range<usize>>>,
    /// Directly inside the batch array.
    in_batch: bool,
    /// Where the open batch element begins.
    element_start: Option<usize>,
}

fn is_json_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

impl Scan<'_> {
    /// Where the batch element after `index` begins (None before `,`, `]` or the end): elements
    /// are found at the batch's `[` and `,` only, so other bytes cost no extra test.
    fn element_after(&self, mut index: usize) -> Option<usize> {
        while self.text.get(index).copied().is_some_and(is_json_space) {
            index += 1;
        }
        match self.text.get(index) {
            None | Some(b',' | b']') => None,
            Some(_) => Some(index),
        }
    }

    /// Whether the `[` at `at` is the value of a `"batch"` member: the key (its opening quote not
    /// escaped), then a colon, spaces allowed around it.
    fn follows_batch_key(&self, at: usize) -> bool {
        let before = |mut end: usize| {
            while end > 0 && is_json_space(self.text[end - 1]) {
                end -= 1;
            }
            end
        };
        let colon = before(at);
        if colon == 0 || self.text[colon - 1] != b':' {
            return false;
        }
        let key_end = before(colon - 1);
        let Some(key_start) = key_end.checked_sub(7) else {
            return false;
        };
        if &self.text[key_start..key_end] != b"\"batch\"" {
            return false;
        }
        let backslashes = self.text[..key_start]
            .iter()
            .rev()
            .take_while(|byte| **byte == b'\\')
            .count();
        backslashes % 2 == 0
    }

    /// One bracket or comma outside strings, at `at`.
    #[inline(always)]
    fn structural(&mut self, at: usize, byte: u8) {
        match byte {
            b'{' | b'[' => {
                if byte == b'['
                    && self.depth == 1
                    && self.batch.is_none()
                    && self.follows_batch_key(at)
                {
                    self.batch = Some(Vec::new());
                    self.in_batch = true;
                    self.element_start = self.element_after(at + 1);
                }
                self.depth += 1;
                self.shape.max_depth = self.shape.max_depth.max(self.depth);
            }
            _ => {
                if self.in_batch && self.depth == 2 {
                    if let (Some(start), Some(elements)) =
                        (self.element_start.take(), self.batch.as_mut())
                    {
                        let mut end = at;
                        while end > start && is_json_space(self.text[end - 1]) {
                            end -= 1;
                        }
                        elements.push(start..end);
                    }
                    if byte == b']' {
                        self.in_batch = false;
                    } else if byte == b',' {
                        self.element_start = self.element_after(at + 1);
                    }
                }
                if byte != b',' {
                    self.depth = self.depth.saturating_sub(1);
                }
            }
        }
    }

    /// Skips string contents from `index` to just after the closing quote (or to the end).
    fn skip_string(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        const QUOTES: u64 = ONES * b'"' as u64;
        const BACKSLASHES: u64 = ONES * b'\\' as u64;
        fn zero_bytes(word: u64) -> u64 {
            word.wrapping_sub(ONES) & !word & HIGHS
        }
        let text = self.text;
        let mut index = self.index;
        while index < text.len() {
            if let Some(chunk) = text.get(index..index + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let word = u64::from_le_bytes(word);
                // Flags the first matching byte exactly (a borrow only flags bytes after a match).
                let found = zero_bytes(word ^ QUOTES) | zero_bytes(word ^ BACKSLASHES);
                if found == 0 {
                    index += 8;
                    continue;
                }
                index += (found.trailing_zeros() / 8) as usize;
            }
            let special = text[index];
            index += 1;
            if special == b'\\' {
                index += 1;
            } else if special == b'"' {
                break;
            }
        }
        self.index = index.min(text.len());
        self.in_string = false;
    }

    /// Scans byte by byte until at least `until` (a string started before it is skipped whole).
    fn bytes(&mut self, until: usize) {
        if self.in_string {
            self.skip_string();
        }
        while self.index < until {
            let at = self.index;
            let byte = self.text[at];
            self.index += 1;
            match byte {
                b'"' => self.skip_string(),
                b'{' | b'[' | b'}' | b']' | b',' => self.structural(at, byte),
                b':' => self.shape.members += 1,
                _ => {}
            }
        }
    }

    /// Scans whole 64-byte blocks with SSE2 (see [`body_shape`]).
    #[cfg(target_arch = "x86_64")]
    fn blocks(&mut self) {
        const BLOCK: usize = 64;
        while let Some(block) = self
            .text
            .get(self.index..self.index + BLOCK)
            .and_then(|block| <&[u8; BLOCK]>::try_from(block).ok())
        {
            let masks = BlockMasks::of(block);
            if masks.backslashes != 0 {
                self.bytes(self.index + BLOCK);
                continue;
            }
            // Bit i of the quotes' running parity is set from an opening quote up to (not
            // including) its closing one: with the carry from the block before, inside strings.
            let mut inside = masks.quotes;
            for shift in [1, 2, 4, 8, 16, 32] {
                inside ^= inside << shift;
            }
            if self.in_string {
                inside = !inside;
            }
            self.in_string = inside >> 63 == 1;
            self.shape.members += (masks.colons & !inside).count_ones() as usize;
            let mut structurals = masks.structurals & !inside;
            while structurals != 0 {
                let at = self.index + structurals.trailing_zeros() as usize;
                self.structural(at, block[at - self.index]);
                structurals &= structurals - 1;
            }
            self.index += BLOCK;
        }
    }
}

/// Bit masks of one 64-byte block's bytes (bit i for byte i).
#[cfg(target_arch = "x86_64")]
struct BlockMasks {
    quotes: u64,
    backslashes: u64,
    colons: u64,
    /// `{`, `[`, `}`, `]` and `,`.
    structurals: u64,
}

#[cfg(target_arch = "x86_64")]
impl BlockMasks {
    fn of(block: &[u8; 64]) -> BlockMasks {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        let mut masks = BlockMasks {
            quotes: 0,
            backslashes: 0,
            colons: 0,
            structurals: 0,
        };
        // SAFETY: SSE2 is part of the x86-64 architecture (every such CPU has it), and each load
        // reads the 16 bytes of its chunk, with no alignment requirement.
        unsafe {
            let mask = |bytes: __m128i| u64::from(_mm_movemask_epi8(bytes) as u16);
            for (lane, chunk) in block.chunks_exact(16).enumerate() {
                let bytes = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
                let shift = lane * 16;
                masks.quotes |= mask(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8))) << shift;
                masks.backslashes |=
                    mask(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8))) << shift;
                masks.colons |= mask(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b':' as i8))) << shift;
                // `[` and `{`, `]` and `}` differ only in the 0x20 bit, which no other byte maps
                // onto them; `,` has it set already.
                let folded = _mm_or_si128(bytes, _mm_set1_epi8(0x20));
                let brackets = _mm_or_si128(
                    _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8)),
                    _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8)),
                );
                let structurals =
                    _mm_or_si128(brackets, _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b',' as i8)));
                masks.structurals |= mask(structurals) << shift;
            }
        }
        masks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_ignores_brackets_in_strings() {
        let shape = body_shape(br#"{"a": {"b": [1, {"c": "x:{[\"]"}]}, "d": 2}"#).shape;
        assert_eq!(
            shape,
            JsonShape {
                max_depth: 4,
                members: 4
            }
        );
        assert_eq!(body_shape(&[b'['; 10_000]).shape.max_depth, 10_000);
        assert_eq!(body_shape(b"").shape.max_depth, 0);
    }

    /// The byte-at-a-time scan `body_shape` replaced: the reference for its results.
    fn reference_shape(text: &[u8]) -> JsonShape {
        let mut depth = 0usize;
        let mut shape = JsonShape {
            max_depth: 0,
            members: 0,
        };
        let mut in_string = false;
        let mut escaped = false;
        for byte in text {
            if in_string {
                if escaped {
                    escaped = false;
                } else if *byte == b'\\' {
                    escaped = true;
                } else if *byte == b'"' {
                    in_string = false;
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    shape.max_depth = shape.max_depth.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                b':' => shape.members += 1,
                _ => {}
            }
        }
        shape
    }

    proptest::proptest! {
        #[test]
        fn word_scan_matches_the_byte_scan(text in "[\"\\\\{}\\[\\]:a-z ]{0,80}") {
            proptest::prop_assert_eq!(body_shape(text.as_bytes()).shape, reference_shape(text.as_bytes()));
        }

        #[test]
        fn block_scan_matches_the_byte_scan_on_long_texts(
            text in "[\"{}\\[\\]:,a-z \n]{0,600}",
            escape_at in proptest::option::of(0usize..600),
        ) {
            // Mostly blocks without a backslash (the vectored path), sometimes one with.
            let mut text = text.into_bytes();
            if let Some(at) = escape_at.filter(|at| *at < text.len()) {
                text[at] = b'\\';
            }
            proptest::prop_assert_eq!(body_shape(&text).shape, reference_shape(&text));
        }

        #[test]
        fn word_scan_matches_on_any_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            proptest::prop_assert_eq!(body_shape(&bytes).shape, reference_shape(&bytes));
        }
    }

    /// Where serde finds the elements of the body's `"batch"` array.
    fn serde_batch_elements(body: &str) -> Option<Vec<std::ops::Range<usize>>> {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            batch: Vec<&'a serde_json::value::RawValue>,
        }
        let envelope: Envelope<'_> = serde_json::from_str(body).ok()?;
        Some(
            envelope
                .batch
                .iter()
                .map(|raw| {
                    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
                    start..start + raw.get().len()
                })
                .collect(),
        )
    }

    /// JSON values whose strings and keys match the regexes `strings` and `keys`, nested up to
    /// `depth` levels, containers of fewer than `breadth` items.
    fn json_values(
        strings: &'static str,
        keys: &'static str,
        depth: u32,
        breadth: usize,
    ) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            strings.prop_map(serde_json::Value::from),
        ];
        let size = depth * breadth as u32 * 2;
        leaf.prop_recursive(depth, size, breadth as u32, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..breadth)
                    .prop_map(serde_json::Value::from),
                proptest::collection::btree_map(keys, inner, 0..breadth)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        json_values("[a-z\\[\\]{},:\"\\\\ é]{0,12}", "[a-z\\]\\[,\"]{0,6}", 3, 4)
    }

    /// JSON values whose strings need no escapes, so the scan's blocks take the vectored path.
    fn json_value_without_escapes() -> impl proptest::strategy::Strategy<Value = serde_json::Value>
    {
        json_values("[a-z\\[\\]{},: é]{0,40}", "[a-z\\]\\[,:]{0,10}", 4, 6)
    }

    #[test]
    fn batch_elements_are_found_where_serde_finds_them() {
        let body = "{\"sentAt\": \"batch\", \"x\": [1, {\"batch\": [2]}],\n \"batch\" :\t[ {\"a\": \"],\"} ,\"s\",\n[3, 4] , 5 ],\"batch2\": [6]}";
        assert_eq!(
            body_shape(body.as_bytes()).batch_elements,
            serde_batch_elements(body)
        );
        assert_eq!(body_shape(b"{\"batch\": [ ]}").batch_elements, Some(vec![]));
        assert_eq!(body_shape(b"{\"batches\": [1]}").batch_elements, None);
        assert_eq!(body_shape(b"[{\"batch\": [1]}]").batch_elements, None);
    }

    proptest::proptest! {
        #[test]
        fn batch_elements_match_serde_on_any_batch(
            elements in proptest::collection::vec(json_value(), 0..6),
            pretty in proptest::bool::ANY,
            space in "[ \t\n\r]{0,3}",
            before in proptest::option::of(json_value()),
        ) {
            let encode = |value: &serde_json::Value| if pretty {
                serde_json::to_string_pretty(value).unwrap()
            } else {
                serde_json::to_string(value).unwrap()
            };
            let items: Vec<String> = elements.iter().map(encode).collect();
            let before = before.map(|value| format!("\"before\":{space}{},", encode(&value))).unwrap_or_default();
            let body = format!(
                "{{{space}{before}\"batch\"{space}:{space}[{space}{}{space}]{space},\"after\":[1]}}",
                items.join(&format!("{space},{space}"))
            );
            let found = body_shape(body.as_bytes()).batch_elements;
            proptest::prop_assert_eq!(found, serde_batch_elements(&body), "{}", body);
        }
    }

    proptest::proptest! {
        #[test]
        fn batch_elements_match_serde_on_long_batches_across_blocks(
            elements in proptest::collection::vec(json_value_without_escapes(), 0..40),
            pretty in proptest::bool::ANY,
            escaped_key in proptest::bool::ANY,
        ) {
            let encode = |value: &serde_json::Value| if pretty {
                serde_json::to_string_pretty(value).unwrap()
            } else {
                serde_json::to_string(value).unwrap()
            };
            let items: Vec<String> = elements.iter().map(encode).collect();
            // A key ending in `"batch"` whose quote is escaped is not the batch.
            let decoy = if escaped_key { r#""x\"batch": [1, 2], "# } else { "" };
            let body = format!("{{{decoy}\"batch\": [{}], \"after\": [1]}}", items.join(","));
            let found = body_shape(body.as_bytes()).batch_elements;
            proptest::prop_assert_eq!(found, serde_batch_elements(&body), "{}", body);
        }
    }

    proptest::proptest! {
        #[test]
        fn a_text_holds_at_most_a_third_of_its_bytes_in_object_members(
            value in json_values("[a-z\"\\\\]{0,3}", "[a-z\"]{0,2}", 4, 5),
            pretty in proptest::bool::ANY,
        ) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            proptest::prop_assert!(members(&value) <= members_in_text_at_most(text.len()), "{}", text);
        }
    }

    #[test]
    fn the_member_bound_is_tight_for_empty_keys() {
        // `"":` is the least a member can take; with one-byte values a third is reached in the limit.
        let text = r#"{"":{"":{"":{"":0}}}}"#;
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(members(&value), 4);
        assert_eq!(members_in_text_at_most(text.len()), 7);
        assert!(members_in_text_at_most(text.len() / 2) < members(&value));
    }

    #[test]
    fn word_scan_handles_escapes_at_word_edges() {
        for prefix in 0..10 {
            let text = format!(
                "{{\"{}\\\"x\\\\\":{{\"a\":[1]}},\"{}\":\"unterminated \\",
                "k".repeat(prefix),
                "z".repeat(prefix)
            );
            assert_eq!(
                body_shape(text.as_bytes()).shape,
                reference_shape(text.as_bytes()),
                "{text}"
            );
        }
    }

    #[test]
    fn ip_and_source_buckets() {
        let limiters = Limiters::new(&LimitsConfig {
            requests_per_second_per_ip: 2,
            events_per_second_per_source: 100,
            ..LimitsConfig::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiters.check_ip(ip).is_ok());
        assert!(limiters.check_ip(ip).is_ok());
        let wait = limiters.check_ip(ip).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(
            limiters.check_ip("192.0.2.2".parse().unwrap()).is_ok(),
            "per IP"
        );
        assert!(limiters.check_source("web", 60).is_ok());
        assert!(limiters.check_source("web", 60).is_err());
        assert!(limiters.check_source("ios", 60).is_ok(), "per source");
        assert!(
            limiters.check_source("web", 1000).is_err(),
            "over the bucket size"
        );
        let open = Limiters::new(&LimitsConfig::default());
        assert!((0..1000).all(|_| open.check_ip(ip).is_ok()));
    }
}

#[cfg(test)]
mod event_limit_tests {
    use super::*;
    use crate::ingest::Rejection;

    fn event(properties: serde_json::Value) -> Event {
        serde_json::from_value(serde_json::json!({
            "type": "track", "event": "E", "messageId": "m", "userId": "u",
            "timestamp": "2024-01-01T00:00:00Z", "receivedAt": "2024-01-01T00:00:00Z", "source": "s",
            "properties": properties
        }))
        .unwrap()
    }

    #[test]
    fn oversized_events_are_rejected_alone_by_their_request_index() {
        let big: serde_json::Map<String, serde_json::Value> = (0..20)
            .map(|i| (format!("k{i}"), serde_json::json!({"nested": i})))
            .collect();
        let mut events = vec![
            event(serde_json::json!({"a": 1})),
            event(serde_json::Value::Object(big)),
            event(serde_json::json!({})),
        ];
        assert_eq!(event_members(&events[1]), 40);
        let mut ids = vec![true, false, true];
        // Message 1 of the request was already rejected; events are messages 0, 2, 3.
        let mut rejected = vec![Rejection {
            index: 1,
            reason: "x".into(),
            code: "malformed",
            violations: Vec::new(),
        }];
        reject_oversized_events(10, &mut events, &mut ids, &mut rejected);
        assert_eq!(events.len(), 2);
        assert_eq!(ids, vec![true, true]);
        let indexes: Vec<usize> = rejected.iter().map(|r| r.index).collect();
        assert_eq!(indexes, vec![1, 2]);
        assert!(rejected[1].reason.contains("40 properties"));
    }
}
