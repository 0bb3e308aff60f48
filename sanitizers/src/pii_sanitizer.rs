//! `pii`: finds personal data and secrets in every string value (properties, traits, context, at any
//! depth) and masks, hashes or drops them; values under secret-named keys are masked whole.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use serde_json::Value;
use switchyard_schemas::{Event, JsonMap};

use crate::chain::{BuildError, SanitizeReport, Sanitizer, Verdict};
use crate::config::{PiiAction, PiiConfig};
use crate::pii::{PiiDetector, PiiKind};

/// Hex characters kept of the HMAC in `action = "hash"` output.
const HASH_HEX_CHARS: usize = 16;

pub struct PiiSanitizer {
    /// Tells what this sanitizer remembered from another's (see [`Remembered`]).
    id: u64,
    detector: PiiDetector,
    action: PiiAction,
    /// Matches keys containing a sensitive word, ignoring ASCII case; None when no words are set.
    sensitive_keys: Option<AhoCorasick>,
    hash_key: Vec<u8>,
    mask_ip: bool,
}

/// Strings at least this long that a scan found clean are remembered (see [`Remembered`]);
/// shorter ones cost about as much to scan as to look up.
const REMEMBER_CLEAN_FROM_BYTES: usize = 8;

/// Longer strings and keys are not remembered (rare, and each would take a good share of the bound).
const REMEMBER_AT_MOST_TEXT_BYTES: usize = 4 * 1024;

/// What a thread remembers, at most (bytes of text), before it starts over.
const REMEMBER_AT_MOST_BYTES: usize = 256 * 1024;

/// Source of [`PiiSanitizer::id`].
static NEXT_SANITIZER_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static REMEMBERED: RefCell<Remembered> = RefCell::new(Remembered::default());
}

type FastSet = HashSet<Box<str>, foldhash::fast::RandomState>;
type FastMap = HashMap<Box<str>, bool, foldhash::fast::RandomState>;

/// What sanitizers learnt on this thread about texts they will see again: the long strings a scan
/// found free of personal data, and whether each key is sensitive. Events repeat most of their keys
/// and long strings (user agents, page URLs and titles, product names, library versions), and a
/// look-up of the exact text costs a hash where a scan or a key search costs several times more.
/// Kept per sanitizer (its own detectors and words) and matched on the exact text only, so the
/// answer is always the one the sanitizer would compute. Bounded: it starts over once it holds
/// [`REMEMBER_AT_MOST_BYTES`] of text (which also forgets sanitizers replaced by a reload).
#[derive(Default)]
struct Remembered {
    /// By sanitizer id: a thread sees one or a few sanitizers (the global chain, per-sink ones).
    by_sanitizer: Vec<(u64, SanitizerMemory)>,
    bytes: usize,
    strings_pay: Usefulness,
    keys_pay: Usefulness,
}

/// Look-ups per window over which [`Usefulness`] judges the memory.
const USEFULNESS_WINDOW: u32 = 1024;

/// Texts for which the memory rests once a window found less than one in eight.
const REST_FOR: u32 = 16 * 1024;

/// Whether remembering pays on this thread's traffic. Texts that never repeat cost a look-up and
/// an insert each on top of the scan; when a window of look-ups finds fewer than one in eight,
/// the memory rests (is neither read nor written) for [`REST_FOR`] texts, then is tried again.
#[derive(Default)]
struct Usefulness {
    looked_up: u32,
    found: u32,
    resting: u32,
}

impl Usefulness {
    /// Whether the memory is used for the next text.
    fn in_use(&mut self) -> bool {
        if self.resting > 0 {
            self.resting -= 1;
            return false;
        }
        true
    }

    fn count(&mut self, found: bool) {
        self.looked_up += 1;
        self.found += u32::from(found);
        if self.looked_up == USEFULNESS_WINDOW {
            if self.found * 8 < self.looked_up {
                self.resting = REST_FOR;
            }
            self.looked_up = 0;
            self.found = 0;
        }
    }
}

/// What the memory says about a text.
#[derive(Debug, PartialEq)]
enum Recall<T> {
    /// The memory is resting: work it out, and do not remember it.
    Resting,
    /// Not remembered: work it out, and remember it.
    Unknown,
    Known(T),
}

#[derive(Default)]
struct SanitizerMemory {
    clean_strings: FastSet,
    key_is_sensitive: FastMap,
}

impl Remembered {
    fn of(&self, sanitizer: u64) -> Option<&SanitizerMemory> {
        self.by_sanitizer
            .iter()
            .find(|(id, _)| *id == sanitizer)
            .map(|(_, memory)| memory)
    }

    /// The sanitizer's memory, about to take `adding` bytes of text (starting over when the bound
    /// would be passed).
    fn of_mut(&mut self, sanitizer: u64, adding: usize) -> &mut SanitizerMemory {
        if self.bytes + adding > REMEMBER_AT_MOST_BYTES {
            self.by_sanitizer.clear();
            self.bytes = 0;
        }
        self.bytes += adding;
        let at = match self
            .by_sanitizer
            .iter()
            .position(|(id, _)| *id == sanitizer)
        {
            Some(at) => at,
            None => {
                self.by_sanitizer
                    .push((sanitizer, SanitizerMemory::default()));
                self.by_sanitizer.len() - 1
            }
        };
        &mut self.by_sanitizer[at].1
    }

    fn recall_clean(&mut self, sanitizer: u64, text: &str) -> Recall<()> {
        if !self.strings_pay.in_use() {
            return Recall::Resting;
        }
        let clean = self.is_clean(sanitizer, text);
        self.strings_pay.count(clean);
        if clean {
            Recall::Known(())
        } else {
            Recall::Unknown
        }
    }

    fn recall_key(&mut self, sanitizer: u64, key: &str) -> Recall<bool> {
        if !self.keys_pay.in_use() {
            return Recall::Resting;
        }
        let known = self.key_is_sensitive(sanitizer, key);
        self.keys_pay.count(known.is_some());
        match known {
            Some(sensitive) => Recall::Known(sensitive),
            None => Recall::Unknown,
        }
    }

    fn is_clean(&self, sanitizer: u64, text: &str) -> bool {
        self.of(sanitizer)
            .is_some_and(|memory| memory.clean_strings.contains(text))
    }

    fn remember_clean(&mut self, sanitizer: u64, text: &str) {
        self.of_mut(sanitizer, text.len())
            .clean_strings
            .insert(text.into());
    }

    fn key_is_sensitive(&self, sanitizer: u64, key: &str) -> Option<bool> {
        self.of(sanitizer)
            .and_then(|memory| memory.key_is_sensitive.get(key).copied())
    }

    fn remember_key(&mut self, sanitizer: u64, key: &str, sensitive: bool) {
        self.of_mut(sanitizer, key.len())
            .key_is_sensitive
            .insert(key.into(), sensitive);
    }
}

/// Builds the matcher for `sensitive_keys` (an empty word matches every key, as a substring test would).
fn sensitive_key_matcher(words: &[String], path: &str) -> Result<Option<AhoCorasick>, BuildError> {
    if words.is_empty() {
        return Ok(None);
    }
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        // A handful of short words: the full DFA is small and the fastest on short keys.
        .kind(Some(AhoCorasickKind::DFA))
        .build(words)
        .map(Some)
        .map_err(|error| BuildError {
            path: format!("{path}.sensitive_keys"),
            message: format!("cannot build the key matcher: {error}"),
        })
}

/// What to do with the value just visited.
enum Visit {
    Keep,
    Remove,
}

impl PiiSanitizer {
    pub fn new(
        config: &PiiConfig,
        path: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PiiSanitizer, BuildError> {
        let hash_key =
            match (config.action, &config.hash_key_env) {
                (PiiAction::Hash, Some(variable)) => {
                    crate::secret_from_env(variable, &format!("{path}.hash_key_env"), lookup)?
                }
                (PiiAction::Hash, None) => return Err(BuildError {
                    path: format!("{path}.hash_key_env"),
                    message:
                        "action = \"hash\" needs hash_key_env naming the variable with the HMAC key"
                            .into(),
                }),
                _ => Vec::new(),
            };
        Ok(PiiSanitizer {
            id: NEXT_SANITIZER_ID.fetch_add(1, Ordering::Relaxed),
            detector: PiiDetector::new(&config.detect),
            action: config.action,
            sensitive_keys: sensitive_key_matcher(&config.sensitive_keys, path)?,
            hash_key,
            mask_ip: config.detect.contains(&PiiKind::Ip),
        })
    }

    /// Whether the key contains a sensitive word, ignoring ASCII case (one automaton pass over the
    /// key for all the words: every key of every event goes through here).
    fn is_sensitive_key(&self, key: &str) -> bool {
        let Some(matcher) = &self.sensitive_keys else {
            return false;
        };
        if key.len() > REMEMBER_AT_MOST_TEXT_BYTES {
            return matcher.is_match(key);
        }
        let recalled = REMEMBERED.with_borrow_mut(|remembered| remembered.recall_key(self.id, key));
        match recalled {
            Recall::Known(sensitive) => sensitive,
            Recall::Resting => matcher.is_match(key),
            Recall::Unknown => {
                let sensitive = matcher.is_match(key);
                REMEMBERED
                    .with_borrow_mut(|remembered| remembered.remember_key(self.id, key, sensitive));
                sensitive
            }
        }
    }

    fn replacement(&self, kind: &str, matched: &str) -> String {
        match self.action {
            PiiAction::Hash => format!(
                "{kind}:{}",
                crate::hmac_hex(&self.hash_key, matched.as_bytes(), HASH_HEX_CHARS)
            ),
            PiiAction::Mask | PiiAction::DropField => format!("[REDACTED:{kind}]"),
        }
    }

    /// Whether the detectors find anything in `text`; a long text found clean before by this
    /// sanitizer on this thread is not scanned again.
    fn contains_pii(&self, text: &str) -> bool {
        if !(REMEMBER_CLEAN_FROM_BYTES..=REMEMBER_AT_MOST_TEXT_BYTES).contains(&text.len()) {
            return self.detector.contains_pii(text);
        }
        let recalled =
            REMEMBERED.with_borrow_mut(|remembered| remembered.recall_clean(self.id, text));
        match recalled {
            Recall::Known(()) => false,
            Recall::Resting => self.detector.contains_pii(text),
            Recall::Unknown => {
                let found = self.detector.contains_pii(text);
                if !found {
                    REMEMBERED
                        .with_borrow_mut(|remembered| remembered.remember_clean(self.id, text));
                }
                found
            }
        }
    }

    fn visit_string(&self, text: &mut String, report: &mut SanitizeReport) -> Visit {
        if !self.contains_pii(text) {
            return Visit::Keep;
        }
        if self.action == PiiAction::DropField {
            for found in self.detector.find(text) {
                report.add(&format!("pii.{}", found.kind.as_str()), 1);
            }
            return Visit::Remove;
        }
        let replaced = self.detector.replace_all(text, |kind, matched| {
            report.add(&format!("pii.{}", kind.as_str()), 1);
            self.replacement(kind.as_str(), matched)
        });
        if let Some(replaced) = replaced {
            *text = replaced;
        }
        Visit::Keep
    }

    fn visit_value(&self, value: &mut Value, report: &mut SanitizeReport) -> Visit {
        match value {
            Value::String(text) => self.visit_string(text, report),
            Value::Array(items) => {
                let mut index = 0;
                while index < items.len() {
                    match self.visit_value(&mut items[index], report) {
                        Visit::Keep => index += 1,
                        Visit::Remove => {
                            items.remove(index);
                        }
                    }
                }
                Visit::Keep
            }
            Value::Object(map) => {
                self.visit_map(map, report);
                Visit::Keep
            }
            _ => Visit::Keep,
        }
    }

    fn visit_map(&self, map: &mut JsonMap, report: &mut SanitizeReport) {
        let mut removed: Vec<String> = Vec::new();
        for (key, value) in map.iter_mut() {
            if self.is_sensitive_key(key) && !value.is_null() {
                report.add("pii.sensitive_key", 1);
                if self.action == PiiAction::DropField {
                    removed.push(key.clone());
                } else {
                    let original = match &*value {
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    *value = Value::String(self.replacement("sensitive", &original));
                }
                continue;
            }
            if let Visit::Remove = self.visit_value(value, report) {
                removed.push(key.clone());
            }
        }
        for key in removed {
            map.remove(&key);
        }
    }
}

impl Sanitizer for PiiSanitizer {
    fn name(&self) -> &'static str {
        "pii"
    }

    fn apply(&self, event: &mut Event, report: &mut SanitizeReport) -> Verdict {
        self.visit_map(&mut event.properties, report);
        self.visit_map(&mut event.traits, report);
        self.visit_map(&mut event.context, report);
        if self.mask_ip && event.ip.is_some() {
            event.ip = event.ip.as_ref().map(|ip| self.replacement("ip", ip));
            report.add("pii.ip", 1);
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        serde_json::from_value(serde_json::json!({
            "type": "track", "event": "Checkout", "messageId": "m", "userId": "u",
            "timestamp": "2024-01-01T00:00:00Z", "receivedAt": "2024-01-01T00:00:00Z", "source": "s",
            "ip": "203.0.113.7",
            "properties": {
                "note": "mail me at jane.doe@example.com",
                "order_id": "1700000000000",
                "cards": ["4111 1111 1111 1111", "plain"],
                "password": {"nested": true},
                "deep": {"url": "https://x.test/cb?token=abc123secretvalue&page=2"}
            },
            "context": {"page": {"path": "/checkout"}}
        }))
        .unwrap()
    }

    fn sanitizer(action: PiiAction) -> PiiSanitizer {
        let config = PiiConfig {
            action,
            hash_key_env: Some("K".into()),
            ..PiiConfig::default()
        };
        PiiSanitizer::new(&config, "sanitizers[0]", &|_| Some("key".into())).unwrap()
    }

    #[test]
    fn clean_strings_are_remembered_per_sanitizer_and_only_when_clean() {
        let event_with = |note: &str| -> Event {
            serde_json::from_value(serde_json::json!({
                "type": "track", "event": "E", "messageId": "m", "userId": "u",
                "timestamp": "2024-01-01T00:00:00Z", "receivedAt": "2024-01-01T00:00:00Z",
                "source": "s", "properties": {"note": note}
            }))
            .unwrap()
        };
        let note = "write to jane.doe@example.com about the order";
        let clean = "a long product description without anything personal";
        // This sanitizer does not look for emails: the note is clean to it, and remembered.
        let phones_only = PiiSanitizer::new(
            &PiiConfig {
                detect: vec![PiiKind::Phone],
                ..PiiConfig::default()
            },
            "s",
            &|_| None,
        )
        .unwrap();
        let every_kind = sanitizer(PiiAction::Mask);
        let mut report = SanitizeReport::default();
        for _ in 0..2 {
            let mut event = event_with(note);
            phones_only.apply(&mut event, &mut report);
            assert_eq!(event.properties["note"], note);
            assert!(REMEMBERED.with_borrow(|r| r.is_clean(phones_only.id, note)));
            // What one sanitizer found clean is not taken as clean by another.
            let mut event = event_with(note);
            every_kind.apply(&mut event, &mut report);
            assert!(!event.properties["note"].as_str().unwrap().contains("jane"));
            assert!(!REMEMBERED.with_borrow(|r| r.is_clean(every_kind.id, note)));
        }
        let mut event = event_with(clean);
        every_kind.apply(&mut event, &mut report);
        assert_eq!(event.properties["note"], clean);
        assert!(REMEMBERED.with_borrow(|r| r.is_clean(every_kind.id, clean)));
        // Past the size remembered: scanned, not kept.
        let long = "plain words ".repeat(REMEMBER_AT_MOST_TEXT_BYTES / 12 + 1);
        let mut event = event_with(&long);
        every_kind.apply(&mut event, &mut report);
        assert_eq!(event.properties["note"], long.as_str());
        assert!(!REMEMBERED.with_borrow(|r| r.is_clean(every_kind.id, &long)));
    }

    #[test]
    fn what_a_thread_remembers_is_bounded() {
        let mut remembered = Remembered::default();
        let text = "x".repeat(1000);
        for index in 0..1000 {
            remembered.remember_clean(index % 3, &format!("{index}{text}"));
            remembered.remember_key(index % 3, &format!("key{index}"), index % 2 == 0);
            assert!(remembered.bytes <= REMEMBER_AT_MOST_BYTES);
        }
        assert!(remembered.is_clean(999 % 3, &format!("999{text}")));
        assert!(!remembered.is_clean(998 % 3, &format!("999{text}")));
        assert_eq!(remembered.key_is_sensitive(999 % 3, "key999"), Some(false));
        assert_eq!(remembered.key_is_sensitive(998 % 3, "key998"), Some(true));
        assert_eq!(remembered.key_is_sensitive(998 % 3, "key999"), None);
    }

    #[test]
    fn the_memory_rests_while_texts_do_not_repeat_and_tries_again_after() {
        let mut remembered = Remembered::default();
        // A window of texts never seen before: the memory rests.
        for index in 0..USEFULNESS_WINDOW {
            let text = format!("unique text number {index}");
            assert_eq!(remembered.recall_clean(1, &text), Recall::Unknown);
            remembered.remember_clean(1, &text);
        }
        assert_eq!(
            remembered.recall_clean(1, "unique text number 0"),
            Recall::Resting
        );
        for _ in 1..REST_FOR {
            assert_eq!(
                remembered.recall_clean(1, "unique text number 0"),
                Recall::Resting
            );
        }
        // Rested: used again, and what it held is still there.
        assert_eq!(
            remembered.recall_clean(1, "unique text number 0"),
            Recall::Known(())
        );
        // Keys are judged on their own: they are still in use.
        assert_eq!(remembered.recall_key(1, "userAgent"), Recall::Unknown);
        remembered.remember_key(1, "userAgent", false);
        assert_eq!(remembered.recall_key(1, "userAgent"), Recall::Known(false));
        // Texts that repeat keep it in use.
        let mut fresh = Remembered::default();
        fresh.remember_clean(1, "the same user agent string");
        for _ in 0..3 * USEFULNESS_WINDOW {
            assert_eq!(
                fresh.recall_clean(1, "the same user agent string"),
                Recall::Known(())
            );
        }
    }

    #[test]
    fn masks_pii_at_any_depth_and_leaves_look_alikes() {
        let mut e = event();
        let mut report = SanitizeReport::default();
        sanitizer(PiiAction::Mask).apply(&mut e, &mut report);
        assert_eq!(e.properties["note"], "mail me at [REDACTED:email]");
        assert_eq!(e.properties["order_id"], "1700000000000");
        assert_eq!(e.properties["cards"][0], "[REDACTED:credit_card]");
        assert_eq!(e.properties["cards"][1], "plain");
        assert_eq!(e.properties["password"], "[REDACTED:sensitive]");
        let url = e.properties["deep"]["url"].as_str().unwrap();
        assert!(!url.contains("abc123secretvalue"), "{url}");
        assert!(url.contains("page=2"), "{url}");
        assert_eq!(
            e.ip.as_deref(),
            Some("203.0.113.7"),
            "ip is not detected by default"
        );
        assert_eq!(report.counts["pii.email"], 1);
    }

    #[test]
    fn hash_is_keyed_and_stable() {
        let mut first = event();
        let mut second = event();
        let mut report = SanitizeReport::default();
        let step = sanitizer(PiiAction::Hash);
        step.apply(&mut first, &mut report);
        step.apply(&mut second, &mut report);
        let note = first.properties["note"].as_str().unwrap();
        assert!(note.starts_with("mail me at email:"), "{note}");
        assert_eq!(first.properties["note"], second.properties["note"]);
        assert!(!note.contains("jane"));
    }

    #[test]
    fn drop_field_removes_the_containing_field() {
        let mut e = event();
        let mut report = SanitizeReport::default();
        sanitizer(PiiAction::DropField).apply(&mut e, &mut report);
        assert!(!e.properties.contains_key("note"));
        assert!(!e.properties.contains_key("password"));
        assert_eq!(e.properties["cards"], serde_json::json!(["plain"]));
        assert_eq!(e.properties["order_id"], "1700000000000");
    }

    #[test]
    fn sensitive_keys_match_like_a_lowercased_search() {
        let reference = |words: &[String], key: &str| {
            let lower = key.to_ascii_lowercase();
            words
                .iter()
                .any(|word| lower.contains(word.to_ascii_lowercase().as_str()))
        };
        let keys = [
            "password",
            "userPASSWORD2",
            "pass",
            "x_API_KEY",
            "apikey",
            "Straße",
            "STRASSE",
            "",
            "é",
            "É",
        ];
        let with_empty: Vec<String> = vec![
            "Password".into(),
            "api_key".into(),
            "ß".into(),
            String::new(),
        ];
        let without_empty = with_empty[..3].to_vec();
        for words in [with_empty, without_empty, Vec::new()] {
            let config = PiiConfig {
                sensitive_keys: words.clone(),
                ..PiiConfig::default()
            };
            let step = PiiSanitizer::new(&config, "s", &|_| None).unwrap();
            for key in keys {
                assert_eq!(
                    step.is_sensitive_key(key),
                    reference(&words, key),
                    "{key} with {words:?}"
                );
            }
        }
        let step = PiiSanitizer::new(&PiiConfig::default(), "s", &|_| None).unwrap();
        assert!(step.is_sensitive_key("userPASSWORD2") && !step.is_sensitive_key("pass"));
        assert!(step.is_sensitive_key("X-Api_Key") && step.is_sensitive_key("resetToken"));
    }

    #[test]
    fn hash_without_key_is_a_build_error() {
        let config = PiiConfig {
            action: PiiAction::Hash,
            ..PiiConfig::default()
        };
        let error = PiiSanitizer::new(&config, "sanitizers[2]", &|_| None)
            .err()
            .unwrap();
        assert_eq!(error.path, "sanitizers[2].hash_key_env");
    }
}
