//! PII detection in strings: finds the spans of a string that are personal data or secrets (SSNs, payment cards, API keys, JWTs, emails, phone numbers, IP addresses) so sanitizers can mask them.
//!
//! Pipeline per string (see `docs/pii.md` for the exact rules):
//!
//! 1. one byte pass computes cheap `Features` (digit counts and runs, `@`, `%40`, `=`, `eyJ`, ...);
//! 2. each enabled rule has a gate over those features; strings that pass no gate return at once
//!    (the common no-PII path: no regex runs at all);
//! 3. the rules that pass run their (shared, compiled-once) regex; every candidate is validated in
//!    code (Luhn + brand, SSN ranges, digit boundaries, TLD, placeholders, ...);
//! 4. overlapping candidates are resolved: longer span wins, then the more specific rule.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::LazyLock;

use regex::{CaptureLocations, Regex};
use serde::{Deserialize, Serialize};

/// The kinds of personal data / secrets the detector knows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    /// US social security number (`AAA-GG-SSSS`, or 9 digits right after an "SSN" label).
    Ssn,
    /// Payment card number (Luhn-valid, known brand prefix and length).
    CreditCard,
    /// API keys, tokens, passwords and other secrets.
    ApiKey,
    /// Email address (also `%40`-encoded inside URLs).
    Email,
    /// Phone number (international `+CC ...` or US formats).
    Phone,
    /// JSON Web Token (`eyJ...`.`...`.`...`).
    Jwt,
    /// IPv4 / IPv6 address (not in the default set).
    Ip,
}

impl PiiKind {
    /// Every kind, in declaration order.
    pub const ALL: [PiiKind; 7] = [
        PiiKind::Ssn,
        PiiKind::CreditCard,
        PiiKind::ApiKey,
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::Jwt,
        PiiKind::Ip,
    ];

    /// Default detection set: all but Ip.
    pub fn defaults() -> Vec<PiiKind> {
        PiiKind::ALL
            .iter()
            .copied()
            .filter(|k| *k != PiiKind::Ip)
            .collect()
    }

    /// The snake_case name (same as the serde representation).
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Ssn => "ssn",
            PiiKind::CreditCard => "credit_card",
            PiiKind::ApiKey => "api_key",
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Jwt => "jwt",
            PiiKind::Ip => "ip",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for PiiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when parsing an unknown [`PiiKind`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown PII kind `{0}` (expected one of ssn, credit_card, api_key, email, phone, jwt, ip)"
)]
pub struct UnknownPiiKind(pub String);

impl FromStr for PiiKind {
    type Err = UnknownPiiKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PiiKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownPiiKind(s.to_string()))
    }
}

/// One detected span. `start..end` are byte offsets into the scanned string (always on char
/// boundaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiiMatch {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

impl PiiMatch {
    /// The matched text.
    pub fn as_str<'t>(&self, text: &'t str) -> &'t str {
        &text[self.start..self.end]
    }
}

/// A PII detector for a fixed set of kinds. Cheap to create (the regexes are compiled once per
/// process and shared), `Send + Sync`, meant to be shared across threads.
#[derive(Clone)]
pub struct PiiDetector {
    mask: u8,
    rules: &'static Rules,
}

impl fmt::Debug for PiiDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PiiDetector")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl Default for PiiDetector {
    /// A detector for [`PiiKind::defaults`].
    fn default() -> Self {
        PiiDetector::new(&PiiKind::defaults())
    }
}

impl PiiDetector {
    /// A detector for exactly `kinds` (duplicates ignored; an empty slice detects nothing).
    pub fn new(kinds: &[PiiKind]) -> Self {
        let mask = kinds.iter().fold(0u8, |m, k| m | k.bit());
        PiiDetector {
            mask,
            rules: &RULES,
        }
    }

    /// The kinds this detector looks for, in [`PiiKind::ALL`] order.
    pub fn kinds(&self) -> Vec<PiiKind> {
        PiiKind::ALL
            .iter()
            .copied()
            .filter(|k| self.enabled(*k))
            .collect()
    }

    fn enabled(&self, kind: PiiKind) -> bool {
        self.mask & kind.bit() != 0
    }

    /// Non-overlapping matches sorted by start (on overlap prefer the longer / more specific one).
    pub fn find(&self, text: &str) -> Vec<PiiMatch> {
        let mut cands = Vec::new();
        self.scan(text, &mut |c| {
            cands.push(c);
            false
        });
        resolve(cands)
    }

    /// Cheap check used on the hot path; consistent with `find(text).is_empty()` (it stops at the
    /// first validated candidate, and overlap resolution never drops every candidate).
    pub fn contains_pii(&self, text: &str) -> bool {
        let mut found = false;
        self.scan(text, &mut |_| {
            found = true;
            true
        });
        found
    }

    /// Replace every match with `replacement(kind, matched_text)`; returns `None` when nothing
    /// matched (so callers avoid allocating on the common no-PII path).
    pub fn replace_all(
        &self,
        text: &str,
        mut replacement: impl FnMut(PiiKind, &str) -> String,
    ) -> Option<String> {
        let matches = self.find(text);
        if matches.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for m in &matches {
            out.push_str(&text[last..m.start]);
            out.push_str(&replacement(m.kind, &text[m.start..m.end]));
            last = m.end;
        }
        out.push_str(&text[last..]);
        Some(out)
    }

    /// Runs every enabled, gated rule; `emit` returns `true` to stop early.
    fn scan(&self, text: &str, emit: &mut dyn FnMut(Cand) -> bool) {
        if text.len() < 3 || self.mask == 0 {
            return;
        }
        let f = Features::scan(text.as_bytes());
        if f.any() {
            self.scan_with(text, &f, emit);
        }
    }

    /// Runs the rules whose gate in `f` is open.
    fn scan_with(&self, text: &str, f: &Features, emit: &mut dyn FnMut(Cand) -> bool) {
        let r = self.rules;
        let on = |k: PiiKind| self.enabled(k);
        // Most specific first, so contains_pii() can stop early on the cheapest evidence.
        if on(PiiKind::Jwt) && f.eyj && scan_plain(&r.jwt, text, false, emit, jwt_candidate) {
            return;
        }
        if on(PiiKind::ApiKey) {
            if f.key_prefix && scan_plain(&r.keys, text, false, emit, key_candidate) {
                return;
            }
            if f.secret_label && scan_caps(r, Rule::Labelled, text, emit) {
                return;
            }
            if f.auth_word && scan_caps(r, Rule::Auth, text, emit) {
                return;
            }
            if f.scheme && f.at && scan_caps(r, Rule::UrlCred, text, emit) {
                return;
            }
        }
        if on(PiiKind::CreditCard)
            && f.card_shape
            && scan_plain(&r.card, text, true, emit, card_candidate)
        {
            return;
        }
        if on(PiiKind::Ssn) {
            if f.ssn_shape && scan_plain(&r.ssn, text, true, emit, ssn_candidate) {
                return;
            }
            if f.ssn_label && f.max_digit_run >= 9 && scan_caps(r, Rule::SsnLabelled, text, emit) {
                return;
            }
        }
        if on(PiiKind::Email) && f.email && scan_plain(&r.email, text, false, emit, email_candidate)
        {
            return;
        }
        if on(PiiKind::Phone) {
            if f.intl_start
                && f.digits >= 8
                && scan_plain(&r.phone_intl, text, true, emit, phone_intl_candidate)
            {
                return;
            }
            if f.phone_shape && scan_plain(&r.phone_us, text, true, emit, phone_us_candidate) {
                return;
            }
        }
        if on(PiiKind::Ip) {
            if f.ipv4_shape && scan_plain(&r.ipv4, text, true, emit, ipv4_candidate) {
                return;
            }
            if f.colons >= 2 {
                scan_plain(&r.ipv6, text, true, emit, ipv6_candidate);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Candidates and overlap resolution
// ---------------------------------------------------------------------------------------------

/// Priority on equal-length overlap: lower wins.
const P_JWT: u8 = 0;
const P_NAMED_KEY: u8 = 1;
const P_CARD: u8 = 2;
const P_SSN: u8 = 3;
const P_EMAIL: u8 = 4;
const P_PHONE: u8 = 5;
const P_IP: u8 = 6;
const P_GENERIC_KEY: u8 = 7;

#[derive(Debug, Clone, Copy)]
struct Cand {
    kind: PiiKind,
    start: usize,
    end: usize,
    prio: u8,
}

fn cand(kind: PiiKind, prio: u8, start: usize, end: usize) -> Cand {
    Cand {
        kind,
        start,
        end,
        prio,
    }
}

fn resolve(mut cands: Vec<Cand>) -> Vec<PiiMatch> {
    if cands.len() <= 1 {
        return cands
            .into_iter()
            .map(|c| PiiMatch {
                kind: c.kind,
                start: c.start,
                end: c.end,
            })
            .collect();
    }
    cands.sort_by(|a, b| {
        (b.end - b.start)
            .cmp(&(a.end - a.start))
            .then(a.prio.cmp(&b.prio))
            .then(a.start.cmp(&b.start))
    });
    // Accepted spans are disjoint: the one with the largest start < c.end is the only candidate
    // for an overlap with c.
    let mut taken: BTreeMap<usize, (usize, PiiKind)> = BTreeMap::new();
    for c in cands {
        let overlaps = taken
            .range(..c.end)
            .next_back()
            .is_some_and(|(_, &(end, _))| end > c.start);
        if !overlaps {
            taken.insert(c.start, (c.end, c.kind));
        }
    }
    taken
        .into_iter()
        .map(|(start, (end, kind))| PiiMatch { kind, start, end })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Byte-level prefilter
// ---------------------------------------------------------------------------------------------

/// Cheap facts about a string, computed in one byte pass. Every flag is a *necessary* condition
/// for its rule to produce a validated match (so gating never loses recall), and precise enough
/// that typical analytics strings (URLs, UUIDs, timestamps, user agents) run no regex at all.
#[derive(Debug, Default)]
struct Features {
    digits: u32,
    max_digit_run: u32,
    colons: u32,
    at: bool,
    email: bool,
    scheme: bool,
    eyj: bool,
    key_prefix: bool,
    secret_label: bool,
    auth_word: bool,
    ssn_label: bool,
    intl_start: bool,
    /// Digit runs 3,2,4 joined by the same single `-` or ` `.
    ssn_shape: bool,
    /// Digit runs (3|4),3,4 joined by 1-2 bytes of ` .-()`.
    phone_shape: bool,
    /// Digit runs joined by single ` `/`-` totalling >= 13 digits (or one run >= 13).
    card_shape: bool,
    /// Four runs of 1-3 digits joined by single dots.
    ipv4_shape: bool,
}

/// A completed digit run: its length and the (up to 2 first) bytes of the gap before it.
#[derive(Debug, Default, Clone, Copy)]
struct DigitRun {
    len: u32,
    gap: u32,
    gap_bytes: [u8; 2],
}

/// Known secret prefixes (checked at word starts), grouped by first byte for speed.
fn key_prefix_at(rest: &[u8]) -> bool {
    let any = |ps: &[&[u8]]| ps.iter().any(|p| rest.starts_with(p));
    let hex_after =
        |n: usize| rest.len() >= n + 32 && rest[n..n + 32].iter().all(u8::is_ascii_hexdigit);
    match rest[0] {
        b'A' => {
            any(&[
                b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"AIPA", b"ANPA", b"ANVA", b"ABIA",
                b"ACCA", b"A3T", b"AIza",
            ]) || (rest.starts_with(b"AC") && hex_after(2))
        }
        b'S' => rest.starts_with(b"SG.") || (rest.starts_with(b"SK") && hex_after(2)),
        b's' => any(&[b"sk_live_", b"sk_test_", b"sk-", b"shp"]),
        b'r' => any(&[b"rk_live_", b"rk_test_"]),
        b'p' => any(&[b"pk_live_", b"pk_test_", b"phx_", b"pypi-"]),
        b'w' => rest.starts_with(b"whsec_"),
        b'g' => any(&[
            b"ghp_",
            b"gho_",
            b"ghu_",
            b"ghs_",
            b"ghr_",
            b"github_pat_",
            b"glpat-",
        ]),
        b'x' => any(&[b"xox", b"xapp-"]),
        b'h' => any(&[b"https://hooks.slack.com/", b"hf_"]),
        b'n' => rest.starts_with(b"npm_"),
        b'y' => rest.starts_with(b"ya29."),
        b'd' => rest.starts_with(b"dop_v1_"),
        b'l' => rest.starts_with(b"lin_api_"),
        b'k' => rest.starts_with(b"key-"),
        b'-' => rest.starts_with(b"-----BEGIN"),
        _ => false,
    }
}

fn starts_with_ci(rest: &[u8], word: &[u8]) -> bool {
    rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word)
}

fn ends_with_ci(s: &[u8], word: &[u8]) -> bool {
    s.len() >= word.len() && s[s.len() - word.len()..].eq_ignore_ascii_case(word)
}

/// Suffixes of every parameter name the labelled-secret rule accepts.
const LABEL_SUFFIXES: &[&[u8]] = &[
    b"key",
    b"token",
    b"secret",
    b"password",
    b"passwd",
    b"passphrase",
    b"pwd",
    b"pass",
    b"sig",
    b"signature",
];

/// At a `=` / `:` at `i`: is it preceded by a secret-ish name (`token=`, `"api_key": `)?
fn secret_label_before(b: &[u8], i: usize) -> bool {
    let mut j = i;
    while j > 0 && matches!(b[j - 1], b' ' | b'\t') {
        j -= 1;
    }
    if j > 0 && matches!(b[j - 1], b'"' | b'\'') {
        j -= 1;
    }
    let end = j;
    while j > 0 && (b[j - 1].is_ascii_alphanumeric() || matches!(b[j - 1], b'_' | b'.' | b'-')) {
        j -= 1;
    }
    let name = &b[j..end];
    !name.is_empty() && LABEL_SUFFIXES.iter().any(|w| ends_with_ci(name, w))
}

fn is_email_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-' | b'\'')
}

impl Features {
    /// Every gate open (tests compare gated and ungated results).
    #[cfg(test)]
    fn all_open() -> Features {
        Features {
            digits: u32::MAX,
            max_digit_run: u32::MAX,
            colons: u32::MAX,
            at: true,
            email: true,
            scheme: true,
            eyj: true,
            key_prefix: true,
            secret_label: true,
            auth_word: true,
            ssn_label: true,
            intl_start: true,
            ssn_shape: true,
            phone_shape: true,
            card_shape: true,
            ipv4_shape: true,
        }
    }

    fn any(&self) -> bool {
        self.eyj
            || self.key_prefix
            || self.secret_label
            || self.auth_word
            || (self.scheme && self.at)
            || self.card_shape
            || self.ssn_shape
            || (self.ssn_label && self.max_digit_run >= 9)
            || self.email
            || (self.intl_start && self.digits >= 8)
            || self.phone_shape
            || self.ipv4_shape
            || self.colons >= 2
    }

    fn scan(b: &[u8]) -> Features {
        let mut f = Features::default();
        let n = b.len();
        let mut hist = [DigitRun::default(); 2]; // the two previous digit runs
        let mut last_run_end: Option<usize> = None;
        let mut card_chain = 0u32;
        let mut dot_chain = 0u32;
        let mut i = 0;
        while i < n {
            let c = b[i];
            if c.is_ascii_digit() {
                let start = i;
                while i < n && b[i].is_ascii_digit() {
                    i += 1;
                }
                let run = (i - start) as u32;
                f.digits += run;
                f.max_digit_run = f.max_digit_run.max(run);
                let cur = match last_run_end {
                    Some(e) => DigitRun {
                        len: run,
                        gap: (start - e) as u32,
                        gap_bytes: [b[e], if start - e >= 2 { b[e + 1] } else { 0 }],
                    },
                    None => DigitRun {
                        len: run,
                        gap: u32::MAX,
                        gap_bytes: [0, 0],
                    },
                };
                last_run_end = Some(i);
                f.note_run(&hist, &cur, &mut card_chain, &mut dot_chain);
                hist = [hist[1], cur];
                continue;
            }
            if c.is_ascii_alphabetic() {
                if i == 0 || !b[i - 1].is_ascii_alphanumeric() {
                    f.word_start(b, i);
                }
                i += 1;
                while i < n && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                continue;
            }
            match c {
                b':' => {
                    f.colons += 1;
                    if b.get(i + 1) == Some(&b'/') && b.get(i + 2) == Some(&b'/') {
                        f.scheme = true;
                    }
                    f.secret_label = f.secret_label || secret_label_before(b, i);
                }
                b'=' => f.secret_label = f.secret_label || secret_label_before(b, i),
                b'@' => {
                    f.at = true;
                    f.email |= i > 0
                        && is_email_local(b[i - 1])
                        && b.get(i + 1).is_some_and(u8::is_ascii_alphanumeric);
                }
                b'%' => {
                    let rest = &b[i..];
                    if rest.starts_with(b"%40") {
                        f.email |= i > 0
                            && is_email_local(b[i - 1])
                            && b.get(i + 3).is_some_and(u8::is_ascii_alphanumeric);
                    } else if starts_with_ci(rest, b"%2b") {
                        f.intl_start |= b
                            .get(i + 3)
                            .is_some_and(|d| d.is_ascii_digit() || *d == b'(');
                    }
                }
                b'+' => {
                    f.intl_start |= b
                        .get(i + 1)
                        .is_some_and(|d| d.is_ascii_digit() || *d == b'(');
                }
                b'-' => {
                    f.key_prefix = f.key_prefix || b[i..].starts_with(b"-----BEGIN");
                }
                _ => {}
            }
            i += 1;
        }
        f
    }

    /// Keyword / key-prefix checks at the start of an alphabetic word.
    fn word_start(&mut self, b: &[u8], i: usize) {
        let rest = &b[i..];
        if !self.key_prefix && key_prefix_at(rest) {
            self.key_prefix = true;
        }
        match rest[0] | 0x20 {
            b'e' => {
                self.eyj |= rest.starts_with(b"eyJ") && !(i > 0 && matches!(b[i - 1], b'_' | b'-'));
            }
            b'b' => {
                self.auth_word |= starts_with_ci(rest, b"bearer") || starts_with_ci(rest, b"basic");
            }
            b'a' => self.auth_word |= starts_with_ci(rest, b"authorization"),
            b's' => {
                self.ssn_label |= starts_with_ci(rest, b"ssn") || starts_with_ci(rest, b"social");
            }
            _ => {}
        }
    }

    /// Structural shapes over the last three digit runs (`h[0]`, `h[1]`, `cur`).
    fn note_run(
        &mut self,
        h: &[DigitRun; 2],
        cur: &DigitRun,
        card_chain: &mut u32,
        dot_chain: &mut u32,
    ) {
        let single = |r: &DigitRun, seps: &[u8]| r.gap == 1 && seps.contains(&r.gap_bytes[0]);
        let run = cur.len;
        // Card groupings: 4-4-4-4(-3), 4-6-5, 4-6-4, or one contiguous run. A chain continues over
        // a single ` `/`-` after a group of 4 or 6 digits and must start with a group of 4.
        let [h1, h2] = h;
        *card_chain = if *card_chain > 0 && single(cur, b" -") && matches!(h2.len, 4 | 6) {
            *card_chain + run
        } else if run == 4 {
            run
        } else {
            0
        };
        self.card_shape |= run >= 13 || *card_chain >= 13;
        *dot_chain = if run > 3 {
            0
        } else if single(cur, b".") && *dot_chain > 0 {
            *dot_chain + 1
        } else {
            1
        };
        self.ipv4_shape |= *dot_chain >= 4;
        self.ssn_shape |= h1.len == 3
            && h2.len == 2
            && run == 4
            && single(h2, b"- ")
            && cur.gap == 1
            && cur.gap_bytes[0] == h2.gap_bytes[0];
        let phone_gap = |r: &DigitRun| {
            (1..=2).contains(&r.gap)
                && r.gap_bytes[..r.gap as usize]
                    .iter()
                    .all(|g| matches!(g, b' ' | b'.' | b'-' | b'(' | b')'))
        };
        self.phone_shape |= (h1.len == 3 || h1.len == 4)
            && h2.len == 3
            && run == 4
            && phone_gap(h2)
            && single(cur, b" .-");
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled rules (once per process)
// ---------------------------------------------------------------------------------------------

struct Rules {
    jwt: Regex,
    keys: Regex,
    labelled: Regex,
    auth: Regex,
    url_cred: Regex,
    card: Regex,
    ssn: Regex,
    ssn_labelled: Regex,
    email: Regex,
    phone_intl: Regex,
    phone_us: Regex,
    ipv4: Regex,
    ipv6: Regex,
}

#[derive(Clone, Copy)]
enum Rule {
    Labelled,
    Auth,
    UrlCred,
    SsnLabelled,
}

static RULES: LazyLock<Rules> = LazyLock::new(Rules::compile);

fn re(pattern: &str) -> Regex {
    // Constant patterns, covered by unit tests: a failure here is a programming error.
    Regex::new(pattern).unwrap_or_else(|e| panic!("invalid built-in PII pattern: {e}"))
}

/// Secret-ish parameter names matched with any `[A-Za-z0-9_.-]` prefix (so `aws_secret_access_key`,
/// `x-api-key`, `clientSecret`, `csrf_token`, `new_password` all count).
const STRONG_NAMES: &str = r"api[_\-]?key|(?:secret|private|access|app|client|master|signing|encryption|subscription|license|auth|account|consumer|developer|service|webhook|admin|ingest|deploy|bot)[_\-]?key|secret|password|passwd|passphrase|token|signature";
/// Names that only count exactly and only as `name=value` (query/form style): `key=`, `pwd=`, `sig=`.
const WEAK_NAMES: &str = r"key|pwd|pass|sig";

impl Rules {
    fn compile() -> Rules {
        let labelled = format!(
            r#"(?:^|[^A-Za-z0-9_.\-])(?i-u:(?P<name>[a-z0-9_.\-]*?(?:{STRONG_NAMES})|{WEAK_NAMES}))["']?[ \t]*(?P<sep>[=:])[ \t]*"#
        );
        Rules {
            jwt: re(
                r"eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)?",
            ),
            keys: re(concat!(
                r"(?:A3T[A-Z0-9]|AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}",
                r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}",
                r"|whsec_[A-Za-z0-9+/=]{16,}",
                r"|gh[pousr]_[A-Za-z0-9]{36,}",
                r"|github_pat_[A-Za-z0-9_]{22,}",
                r"|xox[a-z]-[A-Za-z0-9\-]{10,}",
                r"|xapp-[0-9]-[A-Za-z0-9\-]{10,}",
                r"|https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]{8,}",
                r"|AIza[A-Za-z0-9_\-]{35}",
                r"|sk-[A-Za-z0-9_\-]{20,}",
                r"|SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}",
                r"|(?:AC|SK)[0-9a-fA-F]{32}",
                r"|npm_[A-Za-z0-9]{36}",
                r"|glpat-[A-Za-z0-9_\-]{20,64}",
                r"|hf_[A-Za-z0-9]{30,64}",
                r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}",
                r"|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{20,}",
                r"|phx_[A-Za-z0-9]{30,64}",
                r"|ya29\.[A-Za-z0-9_\-]{20,}",
                r"|dop_v1_[a-f0-9]{64}",
                r"|lin_api_[A-Za-z0-9]{40}",
                r"|sq0(?:atp|csp)-[A-Za-z0-9_\-]{22,64}",
                r"|key-[0-9a-f]{32}",
                r"|-----BEGIN[A-Z ]{0,30}PRIVATE KEY(?: BLOCK)?-----(?s:.)*?-----END[A-Z ]{0,30}PRIVATE KEY(?: BLOCK)?-----",
            )),
            labelled: re(&labelled),
            auth: re(concat!(
                r"(?:^|[^A-Za-z0-9_\-])(?i-u:(?P<kw>(?:proxy-)?authorization|bearer|basic))",
                r#"(?:["']?[ \t]*[:=][ \t]*["']?(?i-u:(?:bearer|basic|token|digest|apikey|sso-key|negotiate)[ \t]+)?|[ \t]+)"#,
            )),
            url_cred: re(r"[A-Za-z][A-Za-z0-9+.\-]{1,20}://"),
            card: re(concat!(
                r"[0-9]{4}[ \-][0-9]{6}[ \-][0-9]{4,5}",
                r"|(?:[0-9]{4}[ \-]){2,4}[0-9]{1,7}",
                r"|[0-9]{13,19}",
            )),
            ssn: re(r"[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4}"),
            ssn_labelled: re(
                r"(?:^|[^A-Za-z0-9])(?i-u:ssn|social[ _\-]?security(?:[ _\-]?(?:number|num|no))?)[^0-9A-Za-z\r\n]{0,6}(?i-u:is[ \t]+)?(?P<val>[0-9]{9})",
            ),
            email: re(
                r"[A-Za-z0-9._%+'\-]+(?:@|%40)(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}",
            ),
            phone_intl: re(r"(?:\+|%2[Bb])\(?[0-9](?:[0-9.\-() ]|%20){6,30}[0-9]"),
            phone_us: re(
                r"(?:\+?1[ .\-]?)?(?:\([0-9]{3}\)[ .\-]?|[0-9]{3}[ .\-])[0-9]{3}[ .\-][0-9]{4}",
            ),
            ipv4: re(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"),
            ipv6: re(r"(?:[0-9A-Fa-f]{1,4}|:)(?::[0-9A-Fa-f]{0,4}){1,7}"),
        }
    }

    fn caps(&self, rule: Rule) -> &Regex {
        match rule {
            Rule::Labelled => &self.labelled,
            Rule::Auth => &self.auth,
            Rule::UrlCred => &self.url_cred,
            Rule::SsnLabelled => &self.ssn_labelled,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scanning loops
// ---------------------------------------------------------------------------------------------

fn next_char_boundary(text: &str, i: usize) -> usize {
    let mut j = i + 1;
    while j < text.len() && !text.is_char_boundary(j) {
        j += 1;
    }
    j
}

/// Runs a regex without capture groups; `check` validates a raw match and returns the candidate.
/// With `retry`, a rejected match restarts one char later (for short, bounded digit patterns, so
/// a rejected leftmost match cannot hide a valid overlapping one).
fn scan_plain(
    re: &Regex,
    text: &str,
    retry: bool,
    emit: &mut dyn FnMut(Cand) -> bool,
    check: fn(&str, usize, usize) -> Option<Cand>,
) -> bool {
    let mut pos = 0;
    while pos < text.len() {
        let Some(m) = re.find_at(text, pos) else {
            break;
        };
        match check(text, m.start(), m.end()) {
            Some(c) => {
                if emit(c) {
                    return true;
                }
                pos = m.end().max(m.start() + 1);
            }
            None => {
                pos = if retry {
                    next_char_boundary(text, m.start())
                } else {
                    m.end().max(next_char_boundary(text, m.start()))
                };
            }
        }
    }
    false
}

fn scan_caps(r: &Rules, rule: Rule, text: &str, emit: &mut dyn FnMut(Cand) -> bool) -> bool {
    let re = r.caps(rule);
    let mut locs = re.capture_locations();
    let mut pos = 0;
    while pos < text.len() {
        let Some(m) = re.captures_read_at(&mut locs, text, pos) else {
            break;
        };
        let found = match rule {
            Rule::Labelled => labelled_candidate(text, &locs, m.end()),
            Rule::Auth => auth_candidate(text, &locs, m.end()),
            Rule::UrlCred => url_cred_candidate(text, m.end()),
            Rule::SsnLabelled => locs.get(1).and_then(|(s, e)| {
                let b = text.as_bytes();
                let ok = !b.get(e).is_some_and(|c| c.is_ascii_alphanumeric())
                    && ssn_parts_ok(&b[s..s + 3], &b[s + 3..s + 5], &b[s + 5..e]);
                ok.then(|| cand(PiiKind::Ssn, P_SSN, s, e))
            }),
        };
        if let Some(c) = found {
            if emit(c) {
                return true;
            }
        }
        // The leading delimiter of the patterns is part of the match: continue inside the match
        // so adjacent labelled pairs (`a=1&token=2`) are not skipped.
        pos = match found {
            Some(c) => c.end.max(next_char_boundary(text, m.start())),
            None => next_char_boundary(text, m.start()),
        };
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Validators
// ---------------------------------------------------------------------------------------------

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// `text[i-2..i]` is the tail of a percent escape like `%20`: treat the escape as a separator.
fn ends_percent_escape(b: &[u8], i: usize) -> bool {
    i >= 3 && b[i - 3] == b'%' && b[i - 2].is_ascii_hexdigit() && b[i - 1].is_ascii_hexdigit()
}

/// Digit-shaped values (cards, SSNs, phones, IPv4) must not be glued to other word characters or
/// be a piece of a longer numeric structure (`12-555-123-4567`, `1.2.3.4.5`, `SKU-555-123-4567`).
fn digit_boundary_ok(b: &[u8], start: usize, end: usize) -> bool {
    if start > 0 {
        let p = b[start - 1];
        if is_word(p) && !ends_percent_escape(b, start) {
            return false;
        }
        if matches!(p, b'-' | b'.' | b'/') && start >= 2 && is_word(b[start - 2]) {
            return false;
        }
        if matches!(p, b'-' | b'.' | b'+' | b'$') && start >= 2 && b[start - 2].is_ascii_digit() {
            return false;
        }
    }
    if let Some(&n) = b.get(end) {
        if is_word(n) {
            return false;
        }
        if matches!(n, b'-' | b'.' | b'/') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
            return false;
        }
    }
    // A space-grouped number right after another digit group is the tail of something longer
    // (tracking numbers like `9400 1000 0000 0000 0000 00`).
    if b[start..end].contains(&b' ')
        && start >= 2
        && b[start - 1] == b' '
        && b[start - 2].is_ascii_digit()
    {
        return false;
    }
    true
}

fn digits_of(s: &[u8]) -> Vec<u8> {
    s.iter()
        .filter(|c| c.is_ascii_digit())
        .map(|c| c - b'0')
        .collect()
}

fn num(d: &[u8], n: usize) -> u32 {
    d.iter()
        .take(n)
        .fold(0u32, |acc, &x| acc * 10 + u32::from(x))
}

/// Luhn checksum over decimal digit values.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.rem_euclid(10) == 0
}

/// Known card brand for this prefix with a length valid for it.
fn card_brand_ok(d: &[u8]) -> bool {
    let len = d.len();
    if !(13..=19).contains(&len) {
        return false;
    }
    let (p1, p2, p3, p4, p6) = (num(d, 1), num(d, 2), num(d, 3), num(d, 4), num(d, 6));
    let visa = p1 == 4 && matches!(len, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16;
    let amex = (p2 == 34 || p2 == 37) && len == 15;
    let discover =
        (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6))
            && (16..=19).contains(&len);
    let jcb = (3528..=3589).contains(&p4) && (16..=19).contains(&len);
    let diners = ((300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39)
        && (14..=19).contains(&len);
    let unionpay = p2 == 62 && (16..=19).contains(&len);
    let maestro = (p2 == 50
        || (56..=58).contains(&p2)
        || p4 == 6304
        || p4 == 6390
        || p4 == 6759
        || (6761..=6763).contains(&p4))
        && (13..=19).contains(&len);
    let mir = (2200..=2204).contains(&p4) && (16..=19).contains(&len);
    visa || mastercard || amex || discover || jcb || diners || unionpay || maestro || mir
}

fn card_candidate(text: &str, start: usize, end: usize) -> Option<Cand> {
    let b = text.as_bytes();
    // A grouped number followed by more groups (`4111 1111 1111 1111 12/26`): also try the
    // shorter prefixes that end at a group boundary.
    let mut e = end;
    loop {
        if let Some(c) = card_exact(b, start, e) {
            return Some(c);
        }
        let cut = b[start..e].iter().rposition(|&c| c == b' ' || c == b'-')?;
        e = start + cut;
        if e - start < 13 {
            return None;
        }
    }
}

fn card_exact(b: &[u8], start: usize, end: usize) -> Option<Cand> {
    let s = &b[start..end];
    // Grouping must use one separator kind.
    let has_space = s.contains(&b' ');
    let has_dash = s.contains(&b'-');
    if has_space && has_dash {
        return None;
    }
    if !digit_boundary_ok(b, start, end) {
        return None;
    }
    let d = digits_of(s);
    (card_brand_ok(&d) && luhn_valid(&d)).then(|| cand(PiiKind::CreditCard, P_CARD, start, end))
}

fn ssn_parts_ok(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    let a = num(&digits_of(area), 3);
    let g = num(&digits_of(group), 2);
    let s = num(&digits_of(serial), 4);
    a != 0 && a != 666 && a < 900 && g != 0 && s != 0
}

fn ssn_candidate(text: &str, start: usize, end: usize) -> Option<Cand> {
    let b = text.as_bytes();
    let s = &b[start..end];
    if s[3] != s[6] || !digit_boundary_ok(b, start, end) {
        return None;
    }
    ssn_parts_ok(&s[0..3], &s[4..6], &s[7..11]).then(|| cand(PiiKind::Ssn, P_SSN, start, end))
}

/// Separator runs between digit groups of a phone number: at most one of ` -.` plus parentheses.
fn phone_shape_ok(s: &[u8]) -> Option<(usize, usize)> {
    // Returns (digit count, separator-run count) when the shape is plausible.
    let mut digits = 0;
    let mut runs = 0;
    let mut depth = 0u8;
    let mut run_plain = 0; // ' ', '-', '.' in the current run
    let mut in_run = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_ascii_digit() {
            digits += 1;
            in_run = false;
            run_plain = 0;
            i += 1;
            continue;
        }
        if !in_run {
            runs += 1;
            in_run = true;
        }
        match c {
            b'(' => {
                if depth != 0 {
                    return None;
                }
                depth = 1;
            }
            b')' => {
                if depth != 1 {
                    return None;
                }
                depth = 0;
            }
            b' ' | b'-' | b'.' => {
                run_plain += 1;
                if run_plain > 1 {
                    return None;
                }
            }
            b'%' => {
                // %20 (space) as produced by URL encoding.
                run_plain += 1;
                if run_plain > 1 || s.get(i + 1..i + 3) != Some(b"20".as_slice()) {
                    return None;
                }
                i += 2;
            }
            _ => return None,
        }
        i += 1;
    }
    (depth == 0).then_some((digits, runs))
}

fn distinct_digits(d: &[u8]) -> usize {
    let mut seen = [false; 10];
    for &x in d {
        seen[usize::from(x)] = true;
    }
    seen.iter().filter(|x| **x).count()
}

fn phone_intl_candidate(text: &str, start: usize, end: usize) -> Option<Cand> {
    let b = text.as_bytes();
    if start > 0 && (is_word(b[start - 1]) || b[start - 1] == b'+') {
        return None;
    }
    let body_start = if b[start] == b'+' {
        start + 1
    } else {
        start + 3
    };
    // Try the whole candidate, then shorter ones ending at earlier digit groups (so a trailing
    // unrelated number does not make the phone number invalid).
    let mut e = end;
    loop {
        if let Some(c) = phone_intl_exact(b, start, body_start, e) {
            return Some(c);
        }
        // Shrink to the end of the previous digit group.
        let mut j = e;
        while j > body_start && b[j - 1].is_ascii_digit() {
            j -= 1;
        }
        while j > body_start && !b[j - 1].is_ascii_digit() {
            j -= 1;
        }
        if j <= body_start || j == e {
            return None;
        }
        e = j;
    }
}

fn phone_intl_exact(b: &[u8], start: usize, body_start: usize, end: usize) -> Option<Cand> {
    let body = &b[body_start..end];
    let (ndigits, runs) = phone_shape_ok(body)?;
    if !(8..=15).contains(&ndigits) || runs > 7 {
        return None;
    }
    if runs == 0 && ndigits < 10 {
        return None; // "+15000000" growth numbers; contiguous E.164 numbers are >= 10 digits
    }
    let d = digits_of(body);
    if d.first() == Some(&0) || distinct_digits(&d) <= 2 {
        return None;
    }
    if let Some(&n) = b.get(after_extension(b, end)) {
        if is_word(n) {
            return None;
        }
        if matches!(n, b'-' | b'.' | b'/' | b':') && b.get(end + 1).is_some_and(u8::is_ascii_digit)
        {
            return None;
        }
    }
    Some(cand(PiiKind::Phone, P_PHONE, start, end))
}

/// End of a glued extension (`555-123-4567x89`), or `end` when there is none.
fn after_extension(b: &[u8], end: usize) -> usize {
    if matches!(b.get(end), Some(b'x' | b'X')) && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
        let mut e = end + 1;
        while e < b.len() && b[e].is_ascii_digit() {
            e += 1;
        }
        return e;
    }
    end
}

fn phone_us_candidate(text: &str, start: usize, end: usize) -> Option<Cand> {
    let b = text.as_bytes();
    if !digit_boundary_ok(b, start, after_extension(b, end)) {
        return None;
    }
    if start > 0 && b[start - 1] == b'+' {
        return None; // "+555 123 4567": an international candidate's business
    }
    let s = &b[start..end];
    let d = digits_of(s);
    // Strip the optional country code "1".
    let local = if d.len() == 11 { &d[1..] } else { &d[..] };
    if local.len() != 10 {
        return None;
    }
    let only_spaces = !s
        .iter()
        .any(|c| matches!(c, b'-' | b'.' | b'(' | b')' | b'+'));
    if only_spaces && local[0] < 2 {
        // Space-separated groups are common in plain number lists: require a NANP area code.
        return None;
    }
    // A dotted "ddd.ddd.dddd" preceded by a digit-dot is part of something bigger (IPs, versions).
    Some(cand(PiiKind::Phone, P_PHONE, start, end))
}

fn ipv4_candidate(text: &str, start: usize, end: usize) -> Option<Cand> {
    let b = text.as_bytes();
    if !digit_boundary_ok(b, start, end) {
        return None;
    }
    if start > 0 && b[start - 1] == b'.' {
        return None;
    }
    if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    text[start..end]
        .parse::<Ipv4Addr>()
        .ok()
        .map(|_| cand(PiiKind::Ip, P_IP, start, end))
}

fn ipv6_candidate(text: &str, start: usize, end: usize) -> Option<Cand> {
    let b = text.as_bytes();
    if start > 0 && (b[start - 1].is_ascii_alphanumeric() || matches!(b[start - 1], b':' | b'_')) {
        return None;
    }
    if b.get(end)
        .is_some_and(|&n| is_word(n) || n == b':' || n == b'.')
    {
        return None;
    }
    let s = &text[start..end];
    if s.len() < 3 || !s.bytes().any(|c| c.is_ascii_digit()) {
        return None; // "::", "a::b", "std::cout"-like
    }
    s.parse::<Ipv6Addr>()
        .ok()
        .map(|_| cand(PiiKind::Ip, P_IP, start, end))
}

fn jwt_candidate(text: &str, start: usize, end: usize) -> Option<Cand> {
    let b = text.as_bytes();
    if start > 0 && is_b64url(b[start - 1]) {
        return None;
    }
    if b.get(end).is_some_and(|&n| is_b64url(n)) {
        return None;
    }
    Some(cand(PiiKind::Jwt, P_JWT, start, end))
}

fn key_candidate(text: &str, start: usize, end: usize) -> Option<Cand> {
    let b = text.as_bytes();
    if start > 0 && b[start - 1].is_ascii_alphanumeric() {
        return None;
    }
    let s = &b[start..end];
    if !s.starts_with(b"-----") && b.get(end).is_some_and(|n| n.is_ascii_alphanumeric()) {
        return None;
    }
    let has_digit = s.iter().any(u8::is_ascii_digit);
    if (s.starts_with(b"sk-") || s.starts_with(b"AC") || s.starts_with(b"SK")) && !has_digit {
        return None; // "sk-some-long-slug", uppercase hex words
    }
    Some(cand(PiiKind::ApiKey, P_NAMED_KEY, start, end))
}

/// File extensions that look like TLDs in `logo@2x.png`-style asset names.
const FILE_EXT_TLDS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "bmp", "tif", "tiff", "js", "mjs",
    "cjs", "jsx", "tsx", "css", "scss", "map", "json", "html", "htm", "txt", "yml", "yaml", "xml",
    "wasm", "woff", "woff2", "ttf", "otf", "lock", "toml", "pdf", "mp4", "webm", "mov",
];

fn email_candidate(text: &str, start: usize, end: usize) -> Option<Cand> {
    let b = text.as_bytes();
    let s = &b[start..end];
    // Split at the (last) '@' or "%40".
    let (at, at_len) = match s.iter().rposition(|&c| c == b'@') {
        Some(i) => (i, 1),
        None => (find_pct40(s)?, 3),
    };
    // Local part: drop anything up to a percent escape that decodes to a delimiter (`%3D`, `%22`,
    // `%20` ...), and leading dots.
    let mut ls = 0;
    if at_len == 3 {
        // URL-encoded: a literal '+' is an encoded space (`q=my+email+is+bob%40example.com`).
        if let Some(p) = s[..at].iter().rposition(|&c| c == b'+') {
            ls = p + 1;
        }
    }
    let mut i = ls;
    while i < at {
        if s[i] == b'%' && i + 2 < at {
            let v = hex_val(s[i + 1])
                .zip(hex_val(s[i + 2]))
                .map(|(h, l)| h * 16 + l);
            match v {
                Some(v) if v.is_ascii_alphanumeric() || matches!(v, b'.' | b'_' | b'+' | b'-') => {}
                _ => ls = i + 3,
            }
            i += 3;
            continue;
        }
        i += 1;
    }
    while ls < at && matches!(s[ls], b'.' | b'-' | b'+' | b'\'') {
        ls += 1;
    }
    let local = &s[ls..at];
    if local.is_empty() || local.len() > 64 || local.ends_with(b".") || local == b"git" {
        return None;
    }
    let domain = &s[at + at_len..];
    let tld_start = domain.iter().rposition(|&c| c == b'.').map_or(0, |p| p + 1);
    let tld = &domain[tld_start..];
    if FILE_EXT_TLDS
        .iter()
        .any(|t| t.as_bytes().eq_ignore_ascii_case(tld))
    {
        return None;
    }
    // "icon@2x.png", "logo@1.5x.webp"
    let first_label = domain.split(|&c| c == b'.').next().unwrap_or_default();
    if first_label.len() >= 2
        && first_label.ends_with(b"x")
        && first_label[..first_label.len() - 1]
            .iter()
            .all(u8::is_ascii_digit)
    {
        return None;
    }
    if b.get(end).is_some_and(|&n| is_word(n) || n == b'-') {
        return None;
    }
    let abs_start = start + ls;
    if in_url_userinfo(b, abs_start) {
        return None;
    }
    Some(cand(PiiKind::Email, P_EMAIL, abs_start, end))
}

fn find_pct40(s: &[u8]) -> Option<usize> {
    s.windows(3).rposition(|w| w == b"%40")
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `scheme://user:pass@host`: the `pass@host` part is URL credentials, not an email.
fn in_url_userinfo(b: &[u8], local_start: usize) -> bool {
    let mut i = local_start;
    while i > 0 {
        let c = b[i - 1];
        if c.is_ascii_whitespace() || matches!(c, b'"' | b'\'' | b'<' | b'>') {
            return false;
        }
        if matches!(c, b'/' | b'?' | b'#' | b'=' | b'&') {
            return c == b'/' && i >= 3 && &b[i - 3..i] == b"://";
        }
        i -= 1;
    }
    false
}

const PLACEHOLDERS: &[&str] = &[
    "true",
    "false",
    "null",
    "none",
    "nil",
    "undefined",
    "redacted",
    "masked",
    "hidden",
    "removed",
    "filtered",
    "empty",
    "changeme",
    "required",
    "optional",
    "string",
];

fn placeholder_value(v: &[u8]) -> bool {
    v.len() < 3
        || v.iter().all(|c| matches!(c, b'*' | b'x' | b'X' | b'#' | b'.' | b'-' | b'_' | b'0'))
        || PLACEHOLDERS.iter().any(|p| p.as_bytes().eq_ignore_ascii_case(v))
        || v.starts_with(b"phc_") // PostHog project keys are public
        || v.starts_with(b"${")
        || v.starts_with(b"{{")
        || v.starts_with(b"<")
        || v.starts_with(b"[")
        || v.starts_with(b"%s")
        || v.starts_with("•".as_bytes())
}

/// Extends a value while `cont` accepts its bytes (non-ASCII bytes always continue; a backslash
/// escapes the next byte). Stops on an ASCII byte or the end, hence on a char boundary.
fn extend_value(b: &[u8], end: usize, cont: impl Fn(u8) -> bool) -> usize {
    extend_value_upto(b, end, b.len(), cont)
}

/// [`extend_value`] that stops at `limit` (on a char boundary at or after it).
fn extend_value_upto(b: &[u8], mut end: usize, limit: usize, cont: impl Fn(u8) -> bool) -> usize {
    while end < b.len()
        && (end < limit || b[end] & 0xC0 == 0x80)
        && (b[end] >= 0x80 || cont(b[end]))
    {
        if b[end] == b'\\' && end + 1 < b.len() {
            end += 1;
        }
        end += 1;
    }
    end
}

fn labelled_candidate(text: &str, locs: &CaptureLocations, value_at: usize) -> Option<Cand> {
    let b = text.as_bytes();
    let (ns, ne) = locs.get(1)?;
    let (ss, _) = locs.get(2)?;
    let sep = b[ss];
    let name = &b[ns..ne];
    let weak = [&b"key"[..], b"pwd", b"pass", b"sig"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(name));
    if weak {
        // Only as a query/form parameter: `?key=...`, `&sig=...`, not `"key": "checkout-flag"`
        // (a feature flag) or prose like `flag key=beta`.
        let query_ctx = ns == 0 || matches!(b[ns - 1], b'?' | b'&' | b';' | b'#' | b'/');
        if sep != b'=' || !query_ctx {
            return None;
        }
    }
    let password_like = [&b"password"[..], b"passwd", b"pwd", b"passphrase"]
        .iter()
        .any(|w| name.len() >= w.len() && name[name.len() - w.len()..].eq_ignore_ascii_case(w));
    // The value: "double-quoted", 'single-quoted' or bare (up to whitespace, `&`, `#`, ...).
    // Judged on (at most) its first 128 bytes, extended to its end only once accepted, so a
    // pathological `token=${token=${...` stays linear.
    let quote = match b.get(value_at) {
        Some(&q @ (b'"' | b'\'')) => Some(q),
        _ => None,
    };
    let quoted = quote.is_some();
    let vs = value_at + usize::from(quoted);
    let cont = |c: u8| match quote {
        Some(q) => c != q && c != b'\r' && c != b'\n',
        None => !c.is_ascii_whitespace() && !b"\"'&#;,<>".contains(&c),
    };
    let mut ve = extend_value_upto(b, vs, vs + 128, cont);
    let truncated = ve < b.len() && (b[ve] >= 0x80 || cont(b[ve]));
    if !quoted {
        while ve > vs && matches!(b[ve - 1], b'.' | b',' | b';' | b':' | b')' | b']' | b'}') {
            ve -= 1;
        }
    }
    let v = &b[vs..ve];
    if placeholder_value(v) {
        return None;
    }
    if sep == b':' && !quoted {
        // `password: hunter2` counts, prose like `secret: nothing` does not.
        let has_digit = v.iter().any(u8::is_ascii_digit);
        if v.len() < 6 || (!has_digit && !password_like && v.len() < 16) {
            return None;
        }
    }
    if truncated {
        ve = extend_value(b, ve, cont);
    }
    Some(cand(PiiKind::ApiKey, P_GENERIC_KEY, vs, ve))
}

const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "token", "digest", "apikey", "negotiate"];

fn auth_candidate(text: &str, locs: &CaptureLocations, vs: usize) -> Option<Cand> {
    let b = text.as_bytes();
    let (ks, ke) = locs.get(1)?;
    let mut ve = vs;
    while ve < b.len() && (b[ve].is_ascii_alphanumeric() || b"-._~+/:=".contains(&b[ve])) {
        ve += 1;
    }
    while ve > vs && matches!(b[ve - 1], b'.' | b',' | b':') {
        ve -= 1;
    }
    let kw = &b[ks..ke];
    let v = &b[vs..ve];
    let between = &b[ke..vs];
    if v.len() < 6
        || placeholder_value(v)
        || AUTH_SCHEMES
            .iter()
            .any(|w| w.as_bytes().eq_ignore_ascii_case(v))
    {
        return None;
    }
    let labelled = between.contains(&b':') || between.contains(&b'=');
    if kw.eq_ignore_ascii_case(b"bearer") {
        if labelled {
            return None;
        }
        // "Bearer authentication" is prose; real tokens have digits or are long.
        let has_digit = v.iter().any(u8::is_ascii_digit);
        if !has_digit && v.len() < 20 {
            return None;
        }
    } else if kw.eq_ignore_ascii_case(b"basic") {
        if labelled || !basic_credentials(v) {
            return None;
        }
    } else if !labelled {
        return None; // "authorization abc" without ':' / '='
    }
    Some(cand(PiiKind::ApiKey, P_GENERIC_KEY, vs, ve))
}

/// `scheme://user:password@host`: the password. `authority_at` is just after `://`.
fn url_cred_candidate(text: &str, authority_at: usize) -> Option<Cand> {
    let b = text.as_bytes();
    let mut end = authority_at;
    while end < b.len() && !b[end].is_ascii_whitespace() && !b"/?#\"'<>".contains(&b[end]) {
        end += 1;
    }
    let at = authority_at + b[authority_at..end].iter().rposition(|&c| c == b'@')?;
    let colon = authority_at + b[authority_at..at].iter().position(|&c| c == b':')?;
    let (vs, ve) = (colon + 1, at);
    let v = &b[vs..ve];
    let ok = colon > authority_at && !v.is_empty() && (v.len() < 3 || !placeholder_value(v));
    ok.then(|| cand(PiiKind::ApiKey, P_GENERIC_KEY, vs, ve))
}

/// `Basic <base64(user:password)>`: decodes and looks for the `:`.
fn basic_credentials(v: &[u8]) -> bool {
    let mut acc = 0u32;
    let mut bits = 0;
    let mut out = Vec::with_capacity(v.len());
    for &c in v {
        let x = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return false,
        };
        acc = (acc << 6) | u32::from(x);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out.len() >= 3 && out.contains(&b':') && out.iter().all(|c| (0x20..0x7f).contains(c))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_found(d: &PiiDetector, text: &str) -> Vec<(PiiKind, String)> {
        d.find(text)
            .into_iter()
            .map(|m| (m.kind, text[m.start..m.end].to_string()))
            .collect()
    }

    fn assert_found(kinds: &[PiiKind], text: &str, kind: PiiKind, span: &str) {
        let d = PiiDetector::new(kinds);
        let found = kinds_found(&d, text);
        assert!(
            found.iter().any(|(k, s)| *k == kind && s == span),
            "expected {kind:?} `{span}` in `{text}`, got {found:?}"
        );
        assert!(d.contains_pii(text), "contains_pii false for `{text}`");
    }

    fn assert_none(kinds: &[PiiKind], text: &str) {
        let d = PiiDetector::new(kinds);
        let found = kinds_found(&d, text);
        assert!(
            found.is_empty(),
            "expected nothing in `{text}`, got {found:?}"
        );
        assert!(!d.contains_pii(text), "contains_pii true for `{text}`");
    }

    fn pos(text: &str, kind: PiiKind, span: &str) {
        assert_found(&PiiKind::defaults(), text, kind, span);
    }

    fn neg(text: &str) {
        assert_none(&PiiKind::defaults(), text);
    }

    #[test]
    fn kind_names_roundtrip() {
        for k in PiiKind::ALL {
            assert_eq!(k.as_str().parse::<PiiKind>(), Ok(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert!(!PiiKind::defaults().contains(&PiiKind::Ip));
        assert_eq!(PiiKind::defaults().len(), 6);
        assert!("nope".parse::<PiiKind>().is_err());
    }

    #[test]
    fn detector_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<PiiDetector>();
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(&digits_of(b"4111111111111111")));
        assert!(luhn_valid(&digits_of(b"79927398713")));
        assert!(!luhn_valid(&digits_of(b"4111111111111112")));
    }

    #[test]
    fn ssn_positive() {
        pos("my ssn is 123-45-6789.", PiiKind::Ssn, "123-45-6789");
        pos("SSN: 078 05 1120", PiiKind::Ssn, "078 05 1120");
        pos("{\"ssn\":\"219-09-9999\"}", PiiKind::Ssn, "219-09-9999");
        pos("ssn=123456789", PiiKind::Ssn, "123456789");
        pos(
            "Social Security Number: 536221234",
            PiiKind::Ssn,
            "536221234",
        );
    }

    #[test]
    fn ssn_negative() {
        neg("000-12-3456");
        neg("666-12-3456");
        neg("901-12-3456");
        neg("123-00-4567");
        neg("123-45-0000");
        neg("order 123456789 shipped");
        neg("1123-45-6789");
        neg("123-45-67890");
        neg("123-45-6789-01");
        neg("id 123 45 67890");
        neg("build-123-45-6789");
    }

    #[test]
    fn card_positive() {
        pos(
            "card 4111 1111 1111 1111 exp 12/29",
            PiiKind::CreditCard,
            "4111 1111 1111 1111",
        );
        pos(
            "4111-1111-1111-1111",
            PiiKind::CreditCard,
            "4111-1111-1111-1111",
        );
        pos(
            "cc=5555555555554444&x=1",
            PiiKind::CreditCard,
            "5555555555554444",
        );
        pos(
            "amex 3782 822463 10005",
            PiiKind::CreditCard,
            "3782 822463 10005",
        );
        pos(
            "amex 378282246310005",
            PiiKind::CreditCard,
            "378282246310005",
        );
        pos(
            "discover 6011111111111117",
            PiiKind::CreditCard,
            "6011111111111117",
        );
        pos(
            "jcb 3530111333300000",
            PiiKind::CreditCard,
            "3530111333300000",
        );
        pos(
            "diners 3056 930902 5904",
            PiiKind::CreditCard,
            "3056 930902 5904",
        );
        pos(
            "mc2 2223003122003222",
            PiiKind::CreditCard,
            "2223003122003222",
        );
        pos("visa13 4222222222222", PiiKind::CreditCard, "4222222222222");
        pos(
            "Card: 4111 1111 1111 1111 12/26 123",
            PiiKind::CreditCard,
            "4111 1111 1111 1111",
        );
    }

    #[test]
    fn card_negative() {
        neg("4111111111111112"); // Luhn fails
        neg("ts 1700000000000"); // epoch ms
        neg("1234567812345670"); // Luhn-valid, no brand
        neg("hash a4111111111111111b");
        neg("x41111111111111110000");
        neg("41111111111111111"); // 17 digits Visa: bad length
        neg("4111 1111-1111 1111"); // mixed separators
        neg("order 9000000000000001");
    }

    #[test]
    fn api_keys_positive() {
        pos(
            "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
            PiiKind::ApiKey,
            "AKIAIOSFODNN7EXAMPLE",
        );
        pos(
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            PiiKind::ApiKey,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        pos(
            "key sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            PiiKind::ApiKey,
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        );
        pos(
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a!",
            PiiKind::ApiKey,
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        );
        pos(
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
            PiiKind::ApiKey,
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
        );
        pos(
            "post to https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX now",
            PiiKind::ApiKey,
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        );
        pos(
            "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
            PiiKind::ApiKey,
            "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
        );
        pos(
            "OPENAI=sk-proj-abc123DEF456ghi789JKL012mno",
            PiiKind::ApiKey,
            "sk-proj-abc123DEF456ghi789JKL012mno",
        );
        pos(
            "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",
            PiiKind::ApiKey,
            "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",
        );
        pos(
            "sid AC0123456789abcdef0123456789abcdef",
            PiiKind::ApiKey,
            "AC0123456789abcdef0123456789abcdef",
        );
        pos(
            "Authorization: Bearer abc123def456ghi",
            PiiKind::ApiKey,
            "abc123def456ghi",
        );
        pos(
            "Authorization: Basic dXNlcjpwYXNzd29yZA==",
            PiiKind::ApiKey,
            "dXNlcjpwYXNzd29yZA==",
        );
        pos(
            "https://x.com/a?email=a%40b.com&token=abc123",
            PiiKind::ApiKey,
            "abc123",
        );
        pos(
            "/login?user=bob&password=hunter2#top",
            PiiKind::ApiKey,
            "hunter2",
        );
        pos(
            "{\"api_key\": \"d41d8cd98f00b204\"}",
            PiiKind::ApiKey,
            "d41d8cd98f00b204",
        );
        pos("X-Api-Key: 9f8e7d6c5b4a", PiiKind::ApiKey, "9f8e7d6c5b4a");
        pos(
            "postgres://admin:s3cr3t@db.internal:5432/app",
            PiiKind::ApiKey,
            "s3cr3t",
        );
        pos(
            "maps?key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
            PiiKind::ApiKey,
            "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
        );
    }

    #[test]
    fn api_keys_negative() {
        neg("posthog phc_AbCdEf0123456789AbCdEf0123456789AbCdEf01");
        neg("{\"token\": \"phc_AbCdEf0123456789AbCdEf0123456789AbCdEf01\"}");
        neg("{\"key\": \"new-checkout-flow\"}");
        neg("?sort_key=date&page=2");
        neg("use Bearer authentication for the API");
        neg("basic authentication is disabled");
        neg("token=null&password=");
        neg("secret: nothing here");
        neg("$feature_flag_response key=beta-dashboard");
        neg("task-management-dashboard-settings-page");
        neg("sk-learn is a library");
        neg("max_tokens=100");
        neg("AKIA is a prefix");
    }

    #[test]
    fn jwt() {
        let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        pos(&format!("Authorization: Bearer {t}"), PiiKind::Jwt, t);
        pos(&format!("{{\"id_token\":\"{t}\"}}"), PiiKind::Jwt, t);
        neg("eyJ is how base64 JSON starts");
    }

    #[test]
    fn email() {
        pos(
            "contact john.doe+tag@example.co.uk!",
            PiiKind::Email,
            "john.doe+tag@example.co.uk",
        );
        pos(
            "https://x.com/a?email=a%40b.com&x=1",
            PiiKind::Email,
            "a%40b.com",
        );
        pos(
            "mailto:Jane_Doe@Example.ORG",
            PiiKind::Email,
            "Jane_Doe@Example.ORG",
        );
        pos(
            "<bob@mail.example.com>",
            PiiKind::Email,
            "bob@mail.example.com",
        );
        pos(
            "u=first%2Blast%40gmail.com",
            PiiKind::Email,
            "first%2Blast%40gmail.com",
        );
        pos(
            "q=%22carol%40example.net%22",
            PiiKind::Email,
            "carol%40example.net",
        );
        neg("user@localhost");
        neg("npm i lodash@4.17.21 react@18.2.0");
        neg("@scope/pkg@1.2.3");
        neg("img/logo@2x.png");
        neg("ping me @channel.");
        neg("git@github.com:org/repo.git");
        neg("a@b.c");
    }

    #[test]
    fn phone() {
        pos(
            "call (555) 123-4567 today",
            PiiKind::Phone,
            "(555) 123-4567",
        );
        pos("555-123-4567", PiiKind::Phone, "555-123-4567");
        pos("555.123.4567", PiiKind::Phone, "555.123.4567");
        pos("tel:+1 555 123 4567", PiiKind::Phone, "+1 555 123 4567");
        pos("1-800-555-0199", PiiKind::Phone, "1-800-555-0199");
        pos("+44 20 7946 0958", PiiKind::Phone, "+44 20 7946 0958");
        pos("+49 (0)30 901820", PiiKind::Phone, "+49 (0)30 901820");
        pos("+14155552671", PiiKind::Phone, "+14155552671");
        pos("+1-555-123-4567x89", PiiKind::Phone, "+1-555-123-4567");
        pos("555.123.4567X12 office", PiiKind::Phone, "555.123.4567");
        pos("phone=%2B14155552671", PiiKind::Phone, "%2B14155552671");
        pos("+33 1 42 68 53 00", PiiKind::Phone, "+33 1 42 68 53 00");
        pos("+44 20 7946 0958 12345", PiiKind::Phone, "+44 20 7946 0958");
        neg("2024-01-15");
        neg("2024-01-15T10:20:30.123+05:30");
        neg("12:30:45");
        neg("version 10.15.7");
        neg("price 1234.56");
        neg("192.168.1.1");
        neg("zip 94105-1234");
        neg("order 1234567890");
        neg("550e8400-e29b-41d4-a716-446655440000");
        neg("ts 1700000000123");
        neg("growth +15000000 users");
        neg("SKU-555-123-4567");
        neg("+1000000000");
    }

    #[test]
    fn ip() {
        let all = PiiKind::ALL;
        assert_found(
            &all,
            "client 192.168.1.1 connected",
            PiiKind::Ip,
            "192.168.1.1",
        );
        assert_found(&all, "ip=10.0.0.255", PiiKind::Ip, "10.0.0.255");
        assert_found(&all, "from 2001:db8::1 port", PiiKind::Ip, "2001:db8::1");
        assert_found(&all, "::1", PiiKind::Ip, "::1");
        assert_found(
            &all,
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            PiiKind::Ip,
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        );
        assert_none(&all, "version 10.15.7");
        assert_none(&all, "1.2.3.4.5");
        assert_none(&all, "999.1.1.1");
        assert_none(&all, "v1.2.3.4");
        assert_none(&all, "12:30:45");
        assert_none(&all, "std::vector");
        assert_none(&all, "mac 00:1a:2b:3c:4d:5e");
        neg("192.168.1.1"); // not in defaults
    }

    #[test]
    fn overlap_and_replace() {
        let d = PiiDetector::default();
        let text = "a@b.com called 555-123-4567, ssn 123-45-6789";
        let out = d
            .replace_all(text, |k, _| format!("[{}]", k.as_str()))
            .unwrap();
        assert_eq!(out, "[email] called [phone], ssn [ssn]");
        assert_eq!(d.replace_all("nothing here 42", |_, _| String::new()), None);
        // SSN wins over phone; card over phone.
        let m = d.find("123-45-6789");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].kind, PiiKind::Ssn);
        let m = d.find("+4111111111111111");
        assert!(m.iter().all(|m| m.kind != PiiKind::Phone));
        // Disabled kinds are not reported.
        let only_email = PiiDetector::new(&[PiiKind::Email]);
        assert!(only_email
            .find("555-123-4567 x@y.io")
            .iter()
            .all(|m| m.kind == PiiKind::Email));
        assert!(PiiDetector::new(&[]).find("x@y.io").is_empty());
    }

    /// The byte prefilter must never change results: compare against running every rule.
    #[test]
    fn prefilter_never_loses_matches() {
        let d = PiiDetector::new(&PiiKind::ALL);
        let corpus = include_str!("../testdata/pii/corpus.tsv");
        let extra = [
            "%2B14155552671",
            "x=%204111111111111111",
            "1(555) 123-4567",
            "+1(555)123-4567",
            "aws_secret_access_key = abc/def+ghi",
            "'password' : 'x y z'",
            "Proxy-Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            "SSN:123456789",
            "-----BEGIN PRIVATE KEY-----abc-----END PRIVATE KEY-----",
        ];
        let lines = corpus
            .lines()
            .filter_map(|l| l.split_once('\t').map(|(_, t)| t))
            .chain(extra);
        for text in lines {
            let mut gated = Vec::new();
            d.scan(text, &mut |c| {
                gated.push(c);
                false
            });
            let mut ungated = Vec::new();
            d.scan_with(text, &Features::all_open(), &mut |c| {
                ungated.push(c);
                false
            });
            assert_eq!(
                resolve(gated),
                resolve(ungated),
                "prefilter changed the result for {text:?}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// Same property on random strings dense in digits and separators.
        #[test]
        fn prefilter_is_exact_on_random_text(text in "[0-9 ()+.:=@%/_-]{0,12}([0-9 ()+.:=@%/_-]|[a-zA-Z]{1,6}){0,12}") {
            let d = PiiDetector::new(&PiiKind::ALL);
            let mut gated = Vec::new();
            d.scan(&text, &mut |c| {
                gated.push(c);
                false
            });
            let mut ungated = Vec::new();
            d.scan_with(&text, &Features::all_open(), &mut |c| {
                ungated.push(c);
                false
            });
            proptest::prop_assert_eq!(resolve(gated), resolve(ungated));
        }
    }

    #[test]
    fn long_values_are_masked_entirely() {
        let d = PiiDetector::default();
        let long = "a1".repeat(400);
        for text in [
            format!("?token={long}&x=1"),
            format!("{{\"password\": \"{long}\"}}"),
            format!("Authorization: Bearer {long}{long}"),
        ] {
            let masked = d.replace_all(&text, |_, _| "*".into()).unwrap_or_default();
            assert!(!masked.contains("a1a1"), "{masked}");
        }
        // Pathological repetition stays fast (bounded value regexes, linear scanning).
        let evil = "token=${".repeat(20_000);
        let start = std::time::Instant::now();
        assert!(d.find(&evil).is_empty());
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn unicode_text_is_safe() {
        let d = PiiDetector::new(&PiiKind::ALL);
        for t in [
            "héllo wörld 555-123-4567 ü",
            "日本語 a@b.jp テスト",
            "€4111111111111111€",
            "ß+44 20 7946 0958",
        ] {
            let ms = d.find(t);
            assert!(!ms.is_empty(), "{t}");
            for m in ms {
                assert!(t.is_char_boundary(m.start) && t.is_char_boundary(m.end));
            }
            assert!(d.replace_all(t, |_, _| "*".into()).is_some());
        }
    }
}
