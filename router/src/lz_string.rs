//! lz-string's `decompressFromBase64` (the `lz64` compression of old posthog-js versions), with a cap
//! on the output so a small request cannot inflate into gigabytes.
//!
//! Why not the `lz-str` crate: it has no output limit, and its dictionary stores a copy of every
//! entry, so a hostile payload of a few hundred kilobytes can make it allocate quadratically. This
//! implementation follows the JavaScript reference (lz-string 1.5.0) bit for bit, but keeps every
//! dictionary entry as a range of the output it already produced (every entry is a substring of the
//! output), so memory is linear in the output, and the output stops at `max_units` UTF-16 code units.
//! `lz-str` is used in the tests as an independent implementation to compare against.

/// The alphabet of `compressToBase64`; `=` is padding and reads as zero bits.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why a payload could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LzError {
    #[error("lz64 payload is empty")]
    Empty,
    #[error("lz64 payload ends before its end marker")]
    Truncated,
    #[error("lz64 payload refers to a dictionary entry that does not exist")]
    BadReference,
    #[error("lz64 payload has an invalid header")]
    BadHeader,
    #[error("lz64 payload inflates to more than {limit} characters")]
    TooLarge { limit: usize },
    #[error("lz64 payload is not valid UTF-16 text")]
    InvalidText,
}

/// The value of one base64 character; characters outside the alphabet read as zero, like the
/// JavaScript original.
fn base64_value(byte: u8) -> u32 {
    match byte {
        b'A'..=b'Z' => u32::from(byte - b'A'),
        b'a'..=b'z' => u32::from(byte - b'a') + 26,
        b'0'..=b'9' => u32::from(byte - b'0') + 52,
        b'+' => 62,
        b'/' => 63,
        _ => 0,
    }
}

/// Reads the bit stream: 6 bits per input character, most significant first; past the end of the
/// input every bit is zero (as in JavaScript, where the missing character reads as `undefined`).
struct BitReader<'a> {
    input: &'a [u8],
    value: u32,
    position: u32,
    /// Index of the next character to load (JavaScript's `data.index`).
    index: usize,
}

impl<'a> BitReader<'a> {
    const RESET: u32 = 32;

    fn new(input: &'a [u8]) -> BitReader<'a> {
        BitReader {
            value: input.first().map_or(0, |b| base64_value(*b)),
            input,
            position: Self::RESET,
            index: 1,
        }
    }

    fn bit(&mut self) -> u32 {
        let bit = u32::from(self.value & self.position != 0);
        self.position >>= 1;
        if self.position == 0 {
            self.position = Self::RESET;
            self.value = self.input.get(self.index).map_or(0, |b| base64_value(*b));
            self.index += 1;
        }
        bit
    }

    /// `count` bits, least significant first.
    fn bits(&mut self, count: u32) -> u32 {
        let mut result = 0;
        for shift in 0..count {
            result |= self.bit() << shift;
        }
        result
    }

    /// Whether the reader went past the last character (JavaScript's `data.index > length`).
    fn exhausted(&self) -> bool {
        self.index > self.input.len()
    }
}

/// One dictionary entry: a range of the output.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

/// Decompresses lz-string `compressToBase64` output into UTF-16 code units, stopping with
/// [`LzError::TooLarge`] as soon as the output would pass `max_units`.
pub fn decompress_base64_utf16(input: &str, max_units: usize) -> Result<Vec<u16>, LzError> {
    let input = input.trim_end_matches(['\r', '\n']).as_bytes();
    if input.is_empty() {
        return Err(LzError::Empty);
    }
    let mut reader = BitReader::new(input);
    let mut output: Vec<u16> = Vec::new();
    // Entries 0, 1 and 2 are the control codes (8-bit literal, 16-bit literal, end).
    let mut dictionary: Vec<Span> = vec![Span { start: 0, len: 0 }; 3];
    let push_literal =
        |output: &mut Vec<u16>, dictionary: &mut Vec<Span>, unit: u16| -> Result<Span, LzError> {
            if output.len() >= max_units {
                return Err(LzError::TooLarge { limit: max_units });
            }
            let span = Span {
                start: output.len(),
                len: 1,
            };
            output.push(unit);
            dictionary.push(span);
            Ok(span)
        };

    let first = match reader.bits(2) {
        0 => reader.bits(8),
        1 => reader.bits(16),
        2 => return Ok(output),
        _ => return Err(LzError::BadHeader),
    };
    let mut w = push_literal(&mut output, &mut dictionary, first as u16)?;
    let mut num_bits: u32 = 3;
    let mut enlarge_in: u64 = 4;
    loop {
        if reader.exhausted() {
            return Err(LzError::Truncated);
        }
        let mut code = reader.bits(num_bits) as usize;
        // A literal is a new dictionary entry that is also the entry emitted by this code.
        let mut literal = None;
        match code {
            0 | 1 => {
                let unit = reader.bits(if code == 0 { 8 } else { 16 }) as u16;
                literal = Some(push_literal(&mut output, &mut dictionary, unit)?);
                code = dictionary.len() - 1;
                enlarge_in -= 1;
            }
            2 => return Ok(output),
            _ => {}
        }
        if enlarge_in == 0 {
            enlarge_in = 1u64 << num_bits;
            num_bits += 1;
        }
        let entry_start = output.len();
        let entry = if let Some(span) = literal {
            span
        } else if (3..dictionary.len()).contains(&code) {
            let span = dictionary[code];
            if output.len() + span.len > max_units {
                return Err(LzError::TooLarge { limit: max_units });
            }
            output.extend_from_within(span.start..span.start + span.len);
            Span {
                start: entry_start,
                len: span.len,
            }
        } else if code == dictionary.len() {
            // The entry being defined right now: w followed by w's first unit.
            if output.len() + w.len + 1 > max_units {
                return Err(LzError::TooLarge { limit: max_units });
            }
            output.extend_from_within(w.start..w.start + w.len);
            output.push(output[w.start]);
            Span {
                start: entry_start,
                len: w.len + 1,
            }
        } else {
            return Err(LzError::BadReference);
        };
        // w + entry[0]: the entry directly follows w in the output, so this is one range too.
        dictionary.push(Span {
            start: w.start,
            len: w.len + 1,
        });
        enlarge_in -= 1;
        w = entry;
        if enlarge_in == 0 {
            enlarge_in = 1u64 << num_bits;
            num_bits += 1;
        }
        if num_bits > 48 {
            // Unreachable with inputs that fit in memory; keeps the shifts well defined.
            return Err(LzError::BadReference);
        }
    }
}

/// Decompresses lz-string `compressToBase64` output into text of at most `max_bytes` UTF-8 bytes.
pub fn decompress_base64(input: &str, max_bytes: usize) -> Result<String, LzError> {
    // A UTF-16 code unit never becomes less than one UTF-8 byte, so this cap loses nothing that fits.
    let units = decompress_base64_utf16(input, max_bytes)?;
    let text = String::from_utf16(&units).map_err(|_| LzError::InvalidText)?;
    if text.len() > max_bytes {
        return Err(LzError::TooLarge { limit: max_bytes });
    }
    Ok(text)
}

/// Whether `text` can be lz-string base64 output (only alphabet characters and trailing padding).
pub fn looks_like_lz64(text: &[u8]) -> bool {
    let body = text
        .iter()
        .rposition(|b| *b != b'=')
        .map_or(&text[..0], |end| &text[..=end]);
    !body.is_empty() && body.iter().all(|b| ALPHABET.contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Produced by the JavaScript reference: `require("lz-string").compressToBase64(text)`
    /// (lz-string 1.5.0, the version pinned in tests/sdk/package-lock.json).
    const JS_VECTORS: &[(&str, &str)] = &[
        ("", "Q==="),
        ("a", "IZA="),
        ("hello world", "BYUwNmD2AEDukCcwBMg="),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "IY18ZVkA"),
        ("é€😀", "JeGoJLwbgAe0A==="),
        (
            r#"[{"event":"$pageview","properties":{"distinct_id":"d1","token":"phc_x","$current_url":"https://example.com/a?b=c"}}]"#,
            "NobwRApgbhB2AuYBcYAkAHAhgc2gSwgHcwAaMdAJwHt0IL4CBnZcAEz0YdgGN4B9PK2RhWARlJh4VANZxh6ABbc+ADwmpuAVwoU4/bQBthC+PHSMkAeksQVmALboDEAHTcq9y5gD8AIwC83GAAvsEAukA===",
        ),
    ];

    #[test]
    fn decodes_what_the_javascript_library_produces() {
        for (plain, compressed) in JS_VECTORS {
            assert_eq!(
                decompress_base64(compressed, 1 << 20).as_deref(),
                Ok(*plain),
                "{compressed}"
            );
        }
    }

    #[test]
    fn agrees_with_the_lz_str_crate_on_its_own_output() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "x".into(),
            "abababababababababababababababab".into(),
            "The quick brown fox jumps over the lazy dog. ".repeat(40),
            (0u32..2000)
                .filter_map(char::from_u32)
                .filter(|c| !c.is_control())
                .collect(),
        ];
        samples.push(
            serde_json::json!({"batch": [{"event": "e", "properties": {"k": "v".repeat(300)}}]})
                .to_string(),
        );
        for sample in samples {
            let compressed = lz_str::compress_to_base64(sample.as_str());
            let ours = decompress_base64(&compressed, 1 << 20);
            if sample.is_empty() {
                // compressToBase64("") is "Q===" (the end marker alone): empty text.
                assert_eq!(ours.as_deref(), Ok(""));
            } else {
                assert_eq!(ours.as_deref(), Ok(sample.as_str()));
            }
        }
    }

    #[test]
    fn output_cap_stops_bombs_early() {
        let text = "A".repeat(1_000_000);
        let compressed = lz_str::compress_to_base64(text.as_str());
        assert!(compressed.len() < 4_000, "{}", compressed.len());
        assert_eq!(
            decompress_base64(&compressed, 64 * 1024),
            Err(LzError::TooLarge { limit: 64 * 1024 })
        );
        assert_eq!(
            decompress_base64(&compressed, 1_000_000).unwrap().len(),
            1_000_000
        );
        // One unit over the cap is refused; exactly the cap is fine.
        assert!(decompress_base64(&compressed, 999_999).is_err());
    }

    #[test]
    fn entries_defined_by_their_own_code_grow_by_one() {
        // A hand-made stream: literal 'a', then 60 codes that each name the entry being defined
        // (w + w[0]): the output is 1 + 2 + ... + 61 'a's.
        let mut bits = Vec::new();
        let mut write = |count: u32, value: usize| {
            for shift in 0..count {
                bits.push(value >> shift & 1 == 1);
            }
        };
        write(2, 0);
        write(8, usize::from(b'a'));
        let (mut size, mut num_bits, mut enlarge_in) = (4usize, 3u32, 4usize);
        for _ in 0..60 {
            write(num_bits, size);
            size += 1;
            enlarge_in -= 1;
            if enlarge_in == 0 {
                enlarge_in = 1 << num_bits;
                num_bits += 1;
            }
        }
        write(num_bits, 2);
        let text: String = bits
            .chunks(6)
            .map(|chunk| {
                let value = chunk
                    .iter()
                    .enumerate()
                    .fold(0usize, |acc, (i, bit)| acc | (usize::from(*bit) << (5 - i)));
                char::from(ALPHABET[value])
            })
            .collect();
        let expected = "a".repeat((1..=61).sum());
        assert_eq!(decompress_base64(&text, 1 << 20).unwrap(), expected);
        let reference = lz_str::decompress_from_base64(&text).expect("lz-str reads it too");
        assert_eq!(String::from_utf16(&reference).unwrap(), expected);
        assert!(decompress_base64(&text, 1000).is_err(), "1891 units > 1000");
    }

    #[test]
    fn cap_counts_utf8_bytes_not_units() {
        let text = "é".repeat(100); // 100 units, 200 bytes
        let compressed = lz_str::compress_to_base64(text.as_str());
        assert!(decompress_base64(&compressed, 150).is_err());
        assert_eq!(decompress_base64(&compressed, 200).unwrap(), text);
    }

    #[test]
    fn broken_payloads_are_errors_not_panics() {
        assert_eq!(decompress_base64("", 100), Err(LzError::Empty));
        // Cut short: lz-string 1.5.0 decodes some prefixes to a prefix of the text (the bits left
        // happen to read as the end marker) and the rest to "" (here: an error). Every cut of this
        // payload (its compressToBase64("hello hello hello world, hello again")), checked against
        // what the JavaScript library returns for it.
        let compressed = "BYUwNmD2AEoTcrQO6QE5gCYBpbiQIYDmBAlgHZA=";
        for cut in 1..compressed.len() {
            let expected = match cut {
                20 => Ok("hello hello hello wor"),
                27 => Ok("hello hello hello world, hel"),
                38.. => Ok("hello hello hello world, hello again"),
                _ => Err(LzError::Truncated),
            };
            assert_eq!(
                decompress_base64(&compressed[..cut], 1000).as_deref(),
                expected.as_ref().copied(),
                "cut at {cut}"
            );
        }
        // Header value 3 does not exist.
        assert_eq!(decompress_base64("w", 100), Err(LzError::BadHeader));
        // A back-reference past the dictionary.
        assert!(decompress_base64("I/////////", 100).is_err());
        // A lone surrogate is not text.
        let lone = lz_str::compress_to_base64(vec![0xD800u16]);
        assert_eq!(decompress_base64(&lone, 100), Err(LzError::InvalidText));
    }

    #[test]
    fn recognises_the_alphabet() {
        assert!(looks_like_lz64(b"N4KABGBE+/=="));
        assert!(!looks_like_lz64(b"{\"a\":1}"));
        assert!(!looks_like_lz64(b"==="));
        assert!(!looks_like_lz64(b""));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_respects_the_cap(input in "[A-Za-z0-9+/=]{0,400}", cap in 0usize..5000) {
            if let Ok(units) = decompress_base64_utf16(&input, cap) {
                proptest::prop_assert!(units.len() <= cap);
            }
        }

        #[test]
        fn matches_lz_str_on_arbitrary_input(input in "[A-Za-z0-9+/]{1,300}") {
            // Where the reference decodes a payload to completion, we decode it to the same text.
            if let Some(expected) = lz_str::decompress_from_base64(&input) {
                if let Ok(ours) = decompress_base64_utf16(&input, 1 << 20) {
                    proptest::prop_assert_eq!(ours, expected);
                }
            }
        }

        #[test]
        fn round_trips_any_text(text in "\\PC{0,300}") {
            let compressed = lz_str::compress_to_base64(text.as_str());
            proptest::prop_assert_eq!(decompress_base64(&compressed, 1 << 20).unwrap(), text);
        }
    }
}
