//! Corpus and property tests for the PII detector: recall / false-positive rates per kind on the
//! labelled corpus in `testdata/pii/corpus.tsv` plus generated examples, and proptest properties.
//!
//! `cargo test -p switchyard-sanitizers --test pii_corpus -- --nocapture` prints the table.

use std::collections::BTreeMap;

use proptest::prelude::*;
use switchyard_sanitizers::pii::{PiiDetector, PiiKind};

const CORPUS: &str = include_str!("../testdata/pii/corpus.tsv");

#[derive(Debug, Clone)]
struct Example {
    /// `None` for a negative.
    kind: Option<PiiKind>,
    text: String,
    source: &'static str,
}

fn parse_corpus() -> Vec<Example> {
    let mut out = Vec::new();
    for (n, line) in CORPUS.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (label, text) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("corpus line {} has no tab: {line:?}", n + 1));
        let kind = match label {
            "none" => None,
            other => Some(
                other
                    .parse::<PiiKind>()
                    .unwrap_or_else(|e| panic!("corpus line {}: {e}", n + 1)),
            ),
        };
        out.push(Example {
            kind,
            text: text.to_string(),
            source: "corpus.tsv",
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Deterministic generators (no rand crate): a tiny xorshift PRNG.
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn string(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n).map(|_| char::from(*self.pick(alphabet))).collect()
    }
    fn digits(&mut self, n: usize) -> String {
        self.string(b"0123456789", n)
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789abcdef";

fn luhn_check_digit(body: &str) -> char {
    let mut sum = 0u32;
    for (i, c) in body.bytes().rev().enumerate() {
        let mut v = u32::from(c - b'0');
        if i & 1 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

fn luhn_ok(num: &str) -> bool {
    let body = &num[..num.len() - 1];
    num.ends_with(luhn_check_digit(body))
}

/// (prefix, valid lengths) for every brand the detector knows.
const BRANDS: &[(&str, &[usize])] = &[
    ("4", &[13, 16, 19]),
    ("51", &[16]),
    ("55", &[16]),
    ("2221", &[16]),
    ("2720", &[16]),
    ("34", &[15]),
    ("37", &[15]),
    ("6011", &[16, 19]),
    ("644", &[16]),
    ("649", &[16]),
    ("65", &[16, 19]),
    ("3528", &[16]),
    ("3589", &[16, 19]),
    ("300", &[14]),
    ("305", &[14]),
    ("36", &[14]),
    ("38", &[16]),
    ("39", &[16]),
    ("62", &[16, 19]),
    ("50", &[16]),
    ("56", &[16]),
    ("58", &[19]),
    ("6304", &[16]),
    ("6759", &[16]),
    ("6763", &[19]),
];

fn card_from(prefix: &str, len: usize, filler: &str) -> String {
    let body: String = prefix.chars().chain(filler.chars()).take(len - 1).collect();
    let mut s = body.clone();
    s.push(luhn_check_digit(&body));
    s
}

fn group_card(n: &str, sep: &str) -> String {
    if n.len() == 15 {
        return format!("{}{sep}{}{sep}{}", &n[..4], &n[4..10], &n[10..]);
    }
    n.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(sep)
}

fn gen_ssn(r: &mut Rng, sep: &str) -> String {
    let mut area = r.range(1, 899);
    if area == 666 {
        area = 665;
    }
    format!(
        "{area:03}{sep}{:02}{sep}{:04}",
        r.range(1, 99),
        r.range(1, 9999)
    )
}

fn gen_key(r: &mut Rng) -> String {
    match r.below(10) {
        0 => format!("AKIA{}", r.string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
        1 => format!("sk_live_{}", r.string(ALNUM, 24)),
        2 => format!("ghp_{}9", r.string(ALNUM, 35)),
        3 => format!("github_pat_{}_{}", r.string(ALNUM, 22), r.string(ALNUM, 59)),
        4 => format!(
            "xoxb-{}-{}-{}",
            r.digits(12),
            r.digits(13),
            r.string(ALNUM, 24)
        ),
        5 => format!(
            "AIza{}",
            r.string(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
                35
            )
        ),
        6 => format!("sk-proj-{}7", r.string(ALNUM, 60)),
        7 => format!("SG.{}.{}", r.string(ALNUM, 22), r.string(ALNUM, 43)),
        8 => format!("AC{}0", r.string(HEX, 31)),
        _ => format!("whsec_{}", r.string(ALNUM, 32)),
    }
}

const CONTEXTS: &[&str] = &[
    "{}",
    "value: {}",
    "the user typed {} into the box",
    "{\"field\":\"{}\"}",
    "({})",
    "'{}', next",
    "log line: saw {} at 10:20",
];

fn in_context(r: &mut Rng, v: &str) -> String {
    r.pick(CONTEXTS).replacen("{}", v, 1)
}

fn generated() -> Vec<Example> {
    let mut r = Rng(0x5EED_1234_ABCD_0001);
    let mut out = Vec::new();
    let mut push = |kind: Option<PiiKind>, text: String| {
        out.push(Example {
            kind,
            text,
            source: "generated",
        })
    };
    // Every brand x length, contiguous and grouped.
    for &(prefix, lens) in BRANDS {
        for &len in lens {
            for _ in 0..4 {
                let filler = r.digits(20);
                let n = card_from(prefix, len, &filler);
                let v = match r.below(3) {
                    0 => n.clone(),
                    1 => group_card(&n, " "),
                    _ => group_card(&n, "-"),
                };
                push(Some(PiiKind::CreditCard), in_context(&mut r, &v));
            }
        }
    }
    for _ in 0..100 {
        let sep = if r.below(4) == 0 { " " } else { "-" };
        let v = gen_ssn(&mut r, sep);
        push(Some(PiiKind::Ssn), in_context(&mut r, &v));
    }
    for _ in 0..100 {
        let v = gen_key(&mut r);
        push(Some(PiiKind::ApiKey), in_context(&mut r, &v));
    }
    // Negatives.
    for _ in 0..60 {
        let h = r.string(HEX, 32);
        push(
            None,
            format!(
                "id {}-{}-4{}-a{}-{}",
                &h[..8],
                &h[8..12],
                &h[13..16],
                &h[17..20],
                &h[20..]
            ),
        );
    }
    for _ in 0..40 {
        push(None, format!("sha1 {}", r.string(HEX, 40)));
        push(None, format!("sha256={}", r.string(HEX, 64)));
    }
    for _ in 0..60 {
        push(
            None,
            format!("ts {}", 1_500_000_000_000 + r.below(500_000_000_000)),
        );
        push(
            None,
            format!("sent_at={}", 1_500_000_000 + r.below(500_000_000)),
        );
    }
    for _ in 0..60 {
        // Non-Luhn 16-digit numbers, any prefix.
        let mut n = r.digits(16);
        while luhn_ok(&n) {
            n = r.digits(16);
        }
        push(None, format!("ref {n}"));
    }
    for _ in 0..40 {
        push(
            None,
            format!(
                "{}.{}.{} released {}-{:02}-{:02} for ${}.{:02}",
                r.below(20),
                r.below(40),
                r.below(100),
                r.range(2000, 2030),
                r.range(1, 12),
                r.range(1, 28),
                r.range(1, 99_999),
                r.below(100)
            ),
        );
    }
    out
}

fn ip_negatives() -> Vec<&'static str> {
    vec![
        "version 10.15.7",
        "1.2.3.4.5",
        "256.1.1.1",
        "v1.2.3.4",
        "12:30:45",
        "mac 00:1a:2b:3c:4d:5e",
        "std::vector<int>",
        "a::b",
        "2024-01-15T10:20:30Z",
        "10.0.19041.1",
        "price 1234.56",
        "chrome/120.0.6099.109",
    ]
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Stats {
    positives: usize,
    found: usize,
    /// Negatives on which this kind was (wrongly) reported.
    false_pos: usize,
}

struct Report {
    per_kind: BTreeMap<PiiKind, Stats>,
    negatives: usize,
    negatives_flagged: usize,
    misses: Vec<String>,
    false_positives: Vec<String>,
}

fn evaluate(examples: &[Example]) -> Report {
    let defaults = PiiDetector::new(&PiiKind::defaults());
    let all = PiiDetector::new(&PiiKind::ALL);
    let mut per_kind: BTreeMap<PiiKind, Stats> = PiiKind::ALL
        .iter()
        .map(|k| (*k, Stats::default()))
        .collect();
    let mut report_misses = Vec::new();
    let mut report_fps = Vec::new();
    let (mut negatives, mut flagged) = (0, 0);
    for ex in examples {
        match ex.kind {
            Some(kind) => {
                let det = if kind == PiiKind::Ip { &all } else { &defaults };
                let matches = det.find(&ex.text);
                assert_eq!(
                    det.contains_pii(&ex.text),
                    !matches.is_empty(),
                    "contains_pii disagrees with find on {:?}",
                    ex.text
                );
                let st = per_kind.entry(kind).or_default();
                st.positives += 1;
                if matches.iter().any(|m| m.kind == kind) {
                    st.found += 1;
                } else {
                    report_misses.push(format!(
                        "MISS {:<11} [{}] {:?} -> {:?}",
                        kind.as_str(),
                        ex.source,
                        ex.text,
                        matches
                            .iter()
                            .map(|m| (m.kind, &ex.text[m.start..m.end]))
                            .collect::<Vec<_>>()
                    ));
                }
            }
            None => {
                negatives += 1;
                let matches = defaults.find(&ex.text);
                assert_eq!(defaults.contains_pii(&ex.text), !matches.is_empty());
                if !matches.is_empty() {
                    flagged += 1;
                    report_fps.push(format!(
                        "FP [{}] {:?} -> {:?}",
                        ex.source,
                        ex.text,
                        matches
                            .iter()
                            .map(|m| (m.kind, &ex.text[m.start..m.end]))
                            .collect::<Vec<_>>()
                    ));
                }
                let mut kinds: Vec<PiiKind> = matches.iter().map(|m| m.kind).collect();
                kinds.dedup();
                for k in kinds {
                    per_kind.entry(k).or_default().false_pos += 1;
                }
            }
        }
    }
    Report {
        per_kind,
        negatives,
        negatives_flagged: flagged,
        misses: report_misses,
        false_positives: report_fps,
    }
}

fn pct(n: usize, d: usize) -> f64 {
    if d == 0 {
        100.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

#[test]
fn corpus_recall_and_false_positive_rates() {
    let mut examples = parse_corpus();
    let from_file = examples.len();
    examples.extend(generated());
    assert!(from_file >= 600, "corpus.tsv has only {from_file} examples");
    let report = evaluate(&examples);

    println!(
        "\nPII corpus: {} examples ({} from corpus.tsv, {} generated), {} negatives",
        examples.len(),
        from_file,
        examples.len() - from_file,
        report.negatives
    );
    println!(
        "{:<12} {:>9} {:>7} {:>9} {:>8} {:>8}",
        "kind", "positives", "found", "recall%", "FP", "FP%"
    );
    for (kind, st) in &report.per_kind {
        println!(
            "{:<12} {:>9} {:>7} {:>9.2} {:>8} {:>8.2}",
            kind.as_str(),
            st.positives,
            st.found,
            pct(st.found, st.positives),
            st.false_pos,
            pct(st.false_pos, report.negatives)
        );
    }
    let fp_rate = pct(report.negatives_flagged, report.negatives);
    println!(
        "{:<12} {:>9} {:>7} {:>9} {:>8} {:>8.2}",
        "overall", "", "", "", report.negatives_flagged, fp_rate
    );
    for m in &report.misses {
        println!("{m}");
    }
    for f in &report.false_positives {
        println!("{f}");
    }

    let recall = |k: PiiKind| {
        let st = &report.per_kind[&k];
        pct(st.found, st.positives)
    };
    for (kind, target) in [
        (PiiKind::Ssn, 99.5),
        (PiiKind::CreditCard, 99.5),
        (PiiKind::ApiKey, 99.5),
        (PiiKind::Jwt, 99.5),
        (PiiKind::Email, 98.0),
        (PiiKind::Phone, 98.0),
        (PiiKind::Ip, 98.0),
    ] {
        assert!(
            recall(kind) >= target,
            "{} recall {:.2}% < {target}%",
            kind.as_str(),
            recall(kind)
        );
    }
    assert!(
        fp_rate <= 0.5,
        "false-positive rate {fp_rate:.2}% > 0.5% on negatives"
    );
}

#[test]
fn ip_detector_negatives() {
    let all = PiiDetector::new(&PiiKind::ALL);
    for t in ip_negatives() {
        let found = all.find(t);
        assert!(
            found.iter().all(|m| m.kind != PiiKind::Ip),
            "ip found in {t:?}: {found:?}"
        );
    }
}

#[test]
fn replace_all_masks_every_positive() {
    let d = PiiDetector::new(&PiiKind::ALL);
    for ex in parse_corpus().into_iter().chain(generated()) {
        if ex.kind.is_none() {
            continue;
        }
        let Some(masked) = d.replace_all(&ex.text, |k, _| format!("[{}]", k.as_str())) else {
            continue; // counted as a miss by the recall test
        };
        // Nothing detectable is left behind (the `[kind]` labels are not PII).
        let left = d.find(&masked);
        assert!(
            left.is_empty(),
            "masked text still has {:?}: {masked:?}",
            left.iter()
                .map(|m| (m.kind, &masked[m.start..m.end]))
                .collect::<Vec<_>>()
        );
    }
}

/// Rough latency check; run with
/// `cargo test -p switchyard-sanitizers --release --test pii_corpus -- --ignored --nocapture`.
#[test]
#[ignore]
fn latency() {
    use std::hint::black_box;
    use std::time::Instant;
    let d = PiiDetector::default();
    let cases = [
        "Clicked checkout button",
        "page_view /products/shoes?color=red",
        "https://example.com/products/12345?ref=homepage&utm_campaign=spring_2024",
        "2024-01-15T10:20:30.123Z",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36",
        "550e8400-e29b-41d4-a716-446655440000",
        "contact john.doe@example.com",
        "Authorization: Bearer 8f14e45fceea167a5a36dedd4bea2543",
    ];
    for c in cases {
        // Best of several rounds: the machine may be shared.
        let n = 50_000;
        let per = (0..7)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..n {
                    black_box(d.contains_pii(black_box(c)));
                }
                start.elapsed().as_nanos() as f64 / n as f64
            })
            .fold(f64::INFINITY, f64::min);
        println!("{per:>8.1} ns  contains_pii({c:?}) = {}", d.contains_pii(c));
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

fn surrounding() -> impl Strategy<Value = String> {
    // Words and punctuation without digits, '@', '+' or '=' so they cannot form PII themselves.
    proptest::string::string_regex("[a-zA-Z ,.!?;:()\\[\\]\"'/-]{0,40}")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ssn_strategy() -> impl Strategy<Value = String> {
    (1u32..=899, 1u32..=99, 1u32..=9999, prop::bool::ANY).prop_map(|(a, g, s, dash)| {
        let a = if a == 666 { 667 } else { a };
        let sep = if dash { "-" } else { " " };
        format!("{a:03}{sep}{g:02}{sep}{s:04}")
    })
}

fn card_strategy() -> impl Strategy<Value = String> {
    (
        0..BRANDS.len(),
        any::<prop::sample::Index>(),
        "[0-9]{20}",
        0u8..3,
    )
        .prop_map(|(b, li, filler, style)| {
            let (prefix, lens) = BRANDS[b];
            let len = lens[li.index(lens.len())];
            let n = card_from(prefix, len, &filler);
            match style {
                0 => n,
                1 => group_card(&n, " "),
                _ => group_card(&n, "-"),
            }
        })
}

fn key_strategy() -> impl Strategy<Value = String> {
    any::<u64>().prop_map(|seed| gen_key(&mut Rng(seed | 1)))
}

fn check_embedded(kind: PiiKind, secret: &str, pre: &str, post: &str) -> Result<(), TestCaseError> {
    let text = format!("{pre} {secret} {post}");
    let d = PiiDetector::default();
    let found = d.find(&text);
    let at = pre.len() + 1;
    prop_assert!(
        found
            .iter()
            .any(|m| m.kind == kind && m.start <= at && m.end >= at + secret.len()),
        "{:?} {secret:?} not found in {text:?}: {found:?}",
        kind
    );
    prop_assert!(d.contains_pii(&text));
    let masked = d
        .replace_all(&text, |_, _| "<X>".to_string())
        .unwrap_or_default();
    prop_assert!(
        !masked.contains(secret),
        "{secret:?} survived in {masked:?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn embedded_ssns_are_found(s in ssn_strategy(), pre in surrounding(), post in surrounding()) {
        check_embedded(PiiKind::Ssn, &s, &pre, &post)?;
    }

    #[test]
    fn embedded_cards_are_found(c in card_strategy(), pre in surrounding(), post in surrounding()) {
        check_embedded(PiiKind::CreditCard, &c, &pre, &post)?;
    }

    #[test]
    fn embedded_keys_are_found(k in key_strategy(), pre in surrounding(), post in surrounding()) {
        check_embedded(PiiKind::ApiKey, &k, &pre, &post)?;
    }

    #[test]
    fn uuids_and_hashes_are_not_pii(h in "[0-9a-f]{32}", sha in "[0-9a-f]{40}|[0-9a-f]{64}", upper in any::<bool>()) {
        let uuid = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
        let uuid = if upper { uuid.to_uppercase() } else { uuid };
        let d = PiiDetector::default();
        prop_assert!(d.find(&uuid).is_empty(), "{uuid}: {:?}", d.find(&uuid));
        prop_assert!(d.find(&sha).is_empty(), "{sha}: {:?}", d.find(&sha));
        let text = format!("trace={uuid} digest={sha}");
        prop_assert!(!d.contains_pii(&text));
    }

    #[test]
    fn numbers_dates_versions_are_not_pii(
        ms in 1_000_000_000_000u64..2_000_000_000_000,
        secs in 1_000_000_000u64..2_000_000_000,
        (maj, min, patch) in (0u32..100, 0u32..100, 0u32..1000),
        (dollars, cents) in (0u32..1_000_000, 0u32..100),
        (y, mo, day, h, mi, s) in (1970u32..2100, 1u32..13, 1u32..29, 0u32..24, 0u32..60, 0u32..60),
    ) {
        let d = PiiDetector::default();
        for text in [
            ms.to_string(),
            secs.to_string(),
            format!("{maj}.{min}.{patch}"),
            format!("v{maj}.{min}.{patch}-rc.1"),
            format!("{dollars}.{cents:02}"),
            format!("${dollars}.{cents:02}"),
            format!("{y}-{mo:02}-{day:02}"),
            format!("{y}-{mo:02}-{day:02}T{h:02}:{mi:02}:{s:02}.{:03}Z", ms % 1000),
            format!("{mo:02}/{day:02}/{y} {h:02}:{mi:02}"),
            format!("{{\"ts\":{ms},\"v\":\"{maj}.{min}.{patch}\",\"price\":{dollars}.{cents:02}}}"),
        ] {
            prop_assert!(d.find(&text).is_empty(), "{text}: {:?}", d.find(&text));
        }
    }

    #[test]
    fn find_is_sorted_non_overlapping_and_consistent(text in "\\PC{0,80}") {
        let d = PiiDetector::new(&PiiKind::ALL);
        let found = d.find(&text);
        prop_assert_eq!(d.contains_pii(&text), !found.is_empty());
        for w in found.windows(2) {
            prop_assert!(w[0].end <= w[1].start);
        }
        for m in &found {
            prop_assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end) && m.start < m.end);
        }
    }
}
