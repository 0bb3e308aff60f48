//! Timestamp parsing and formatting shared by every decoder and sink.

use std::cell::Cell;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// Parses a client timestamp: RFC 3339 / ISO-8601 with an offset, or without an offset (taken as UTC),
/// or a bare date-time with a space instead of `T`.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Some(parsed) = parse_utc_fast(text.as_bytes()) {
        return Some(parsed);
    }
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return Some(parsed.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    None
}

/// The form almost every SDK sends (`YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, what JavaScript's
/// `toISOString` writes), read without chrono's general parser; None for anything else (other
/// forms, offsets, leap seconds, impossible dates), which the general parsers then judge.
fn parse_utc_fast(text: &[u8]) -> Option<DateTime<Utc>> {
    fn digits(text: &[u8], range: std::ops::Range<usize>) -> Option<u32> {
        text.get(range)?.iter().try_fold(0u32, |value, &byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + u32::from(byte - b'0'))
        })
    }
    if text.len() < 20 || text.last() != Some(&b'Z') {
        return None;
    }
    for (at, separator) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        if text[at] != separator {
            return None;
        }
    }
    let fraction = &text[19..text.len() - 1];
    let nanos = match fraction {
        [] => 0,
        [b'.', figures @ ..] if (1..=9).contains(&figures.len()) => {
            digits(figures, 0..figures.len())? * 10u32.pow(9 - figures.len() as u32)
        }
        _ => return None,
    };
    let second = digits(text, 17..19)?;
    if second > 59 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(digits(text, 0..4)?).ok()?,
        digits(text, 5..7)?,
        digits(text, 8..10)?,
    )?;
    let time = chrono::NaiveTime::from_hms_nano_opt(
        digits(text, 11..13)?,
        digits(text, 14..16)?,
        second,
        nanos,
    )?;
    Some(date.and_time(time).and_utc())
}

/// Formats a timestamp the way every Switchyard output does: RFC 3339, UTC, millisecond precision.
pub fn format_timestamp(time: &DateTime<Utc>) -> String {
    let mut buffer = [0u8; MILLIS_LENGTH];
    match millis_text(time, &mut buffer) {
        Some(text) => text.to_string(),
        None => time.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`
const MILLIS_LENGTH: usize = 24;

thread_local! {
    /// The last second [`format_millis`] wrote on this thread (its date and second of the day) and
    /// its text up to the milliseconds (`YYYY-MM-DDTHH:MM:SS.`): a request's events share their
    /// `receivedAt` and `sentAt`, and client timestamps cluster, so most calls only add the millis.
    static LAST_SECOND: Cell<(NaiveDate, u32, [u8; SECOND_PREFIX_LENGTH])> =
        const { Cell::new((NaiveDate::MIN, u32::MAX, [0; SECOND_PREFIX_LENGTH])) };
}

/// `YYYY-MM-DDTHH:MM:SS.`
const SECOND_PREFIX_LENGTH: usize = 20;

/// Writes the same text as `to_rfc3339_opts(SecondsFormat::Millis, true)` into `buffer` without
/// chrono's formatting machinery (it was a tenth of the cost of encoding an event). False for what
/// that fast path does not cover (years outside 0..=9999, leap seconds): use chrono for those.
fn format_millis(time: &DateTime<Utc>, buffer: &mut [u8; MILLIS_LENGTH]) -> bool {
    use chrono::{Datelike, Timelike};
    /// Writes `value` (below 100) as two digits at `at`, from a table of the hundred pairs.
    fn put2(buffer: &mut [u8], at: usize, value: u32) {
        const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
            2021222324252627282930313233343536373839\
            4041424344454647484950515253545556575859\
            6061626364656667686970717273747576777879\
            8081828384858687888990919293949596979899";
        let pair = (value % 100) as usize * 2;
        buffer[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    // Read the fields from the naive date and time once (a DateTime<Utc> applies its offset on
    // every field access).
    let naive = time.naive_utc();
    let (date, clock) = (naive.date(), naive.time());
    let nanos = clock.nanosecond();
    if nanos >= 1_000_000_000 {
        return false;
    }
    let second = clock.num_seconds_from_midnight();
    let (last_date, last_second, last_prefix) = LAST_SECOND.get();
    if (last_date, last_second) == (date, second) {
        buffer[..SECOND_PREFIX_LENGTH].copy_from_slice(&last_prefix);
    } else {
        let year = date.year();
        if !(0..=9999).contains(&year) {
            return false;
        }
        let year = year as u32;
        put2(buffer, 0, year / 100);
        put2(buffer, 2, year % 100);
        put2(buffer, 5, date.month());
        put2(buffer, 8, date.day());
        put2(buffer, 11, clock.hour());
        put2(buffer, 14, clock.minute());
        put2(buffer, 17, clock.second());
        for (at, separator) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
        ] {
            buffer[at] = separator;
        }
        let mut prefix = [0; SECOND_PREFIX_LENGTH];
        prefix.copy_from_slice(&buffer[..SECOND_PREFIX_LENGTH]);
        LAST_SECOND.set((date, second, prefix));
    }
    let millis = nanos / 1_000_000;
    buffer[20] = b'0' + (millis / 100) as u8;
    put2(buffer, 21, millis % 100);
    buffer[23] = b'Z';
    true
}

/// [`format_millis`]'s text for `time` as a `str` (digits and ASCII separators: always valid
/// UTF-8), or None where that fast path does not apply.
fn millis_text<'a>(time: &DateTime<Utc>, buffer: &'a mut [u8; MILLIS_LENGTH]) -> Option<&'a str> {
    if format_millis(time, buffer) {
        std::str::from_utf8(buffer).ok()
    } else {
        None
    }
}

/// Appends a timestamp as a JSON string of [`format_timestamp`] text (used by the event writer).
pub(crate) fn write_millis(out: &mut Vec<u8>, time: &DateTime<Utc>) {
    let mut buffer = [0u8; MILLIS_LENGTH];
    if format_millis(time, &mut buffer) {
        // The fast path's text is digits and separators only: nothing to escape.
        out.push(b'"');
        out.extend_from_slice(&buffer);
        out.push(b'"');
    } else {
        crate::json_writer::write_str(out, &time.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

/// Serialises a timestamp as [`format_timestamp`] text, without allocating on the fast path.
fn serialize_millis<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; MILLIS_LENGTH];
    match millis_text(time, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        None => serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true)),
    }
}

/// Serde helpers that write timestamps with [`format_timestamp`] and read them with [`parse_timestamp`].
pub mod serde_millis {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        time: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serialize_millis(time, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        parse_timestamp(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp `{text}`")))
    }

    /// The same for optional timestamps.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            time: &Option<DateTime<Utc>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(time) => serialize_millis(time, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(deserializer)?;
            match text {
                None => Ok(None),
                Some(text) => parse_timestamp(&text)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp `{text}`"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_naive_forms() {
        let with_offset = parse_timestamp("2024-05-01T12:00:00.250+02:00").unwrap();
        assert_eq!(format_timestamp(&with_offset), "2024-05-01T10:00:00.250Z");
        let naive = parse_timestamp("2024-05-01T12:00:00").unwrap();
        assert_eq!(format_timestamp(&naive), "2024-05-01T12:00:00.000Z");
        let spaced = parse_timestamp("2024-05-01 12:00:00.5").unwrap();
        assert_eq!(format_timestamp(&spaced), "2024-05-01T12:00:00.500Z");
        assert!(parse_timestamp("yesterday").is_none());
        assert!(parse_timestamp("").is_none());
    }

    #[derive(serde::Serialize)]
    struct Wrapper(#[serde(with = "serde_millis")] DateTime<Utc>);

    proptest::proptest! {
        #[test]
        fn fast_format_matches_chrono(
            millis in -70_000_000_000_000i64..300_000_000_000_000i64,
            nanos in 0u32..1_000_000,
        ) {
            let time = DateTime::from_timestamp_millis(millis).unwrap()
                + chrono::Duration::nanoseconds(i64::from(nanos));
            proptest::prop_assert_eq!(
                format_timestamp(&time),
                time.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
            let json = serde_json::to_string(&Wrapper(time)).unwrap();
            proptest::prop_assert_eq!(json, format!("\"{}\"", format_timestamp(&time)));
        }
    }

    /// What `parse_timestamp` gave before its fast path: chrono's parsers alone.
    fn parse_with_chrono(text: &str) -> Option<DateTime<Utc>> {
        let text = text.trim();
        if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
            return Some(parsed.with_timezone(&Utc));
        }
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
            .map(|naive| naive.and_utc())
    }

    proptest::proptest! {
        #[test]
        fn the_fast_path_reads_what_chrono_reads(
            year in 0u32..10_000, month in 0u32..14, day in 0u32..33,
            hour in 0u32..25, minute in 0u32..61, second in 0u32..62,
            fraction in "(\\.[0-9]{0,11})?", tail in "(Z|z|\\+02:00|)",
            separator in "[T t]",
        ) {
            let text = format!("{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{fraction}{tail}");
            proptest::prop_assert_eq!(parse_timestamp(&text), parse_with_chrono(&text), "{}", text);
            if let Some(fast) = parse_utc_fast(text.as_bytes()) {
                proptest::prop_assert_eq!(Some(fast), parse_with_chrono(&text), "{}", text);
            }
        }

        #[test]
        fn any_text_parses_as_chrono_parses_it(text in "[0-9TZ:.+ -]{0,32}") {
            proptest::prop_assert_eq!(parse_timestamp(&text), parse_with_chrono(&text));
        }
    }

    #[test]
    fn the_fast_path_takes_what_browsers_send() {
        for text in [
            "2024-05-01T12:00:00.250Z",
            "2024-02-29T23:59:59Z",
            "1999-12-31T00:00:00.123456789Z",
        ] {
            assert!(parse_utc_fast(text.as_bytes()).is_some(), "{text}");
        }
        for text in [
            "2023-02-29T00:00:00Z",
            "2024-05-01T12:00:60Z",
            "2024-05-01T12:00:00.1234567890Z",
            "2024-05-01T12:00:00+00:00",
        ] {
            assert!(parse_utc_fast(text.as_bytes()).is_none(), "{text}");
        }
    }

    #[test]
    fn the_last_second_remembered_is_only_reused_for_the_same_date_and_second() {
        // Same second, other millis; the same time of day on other dates (and in year 0, which
        // the fast path leaves to chrono), then a leap second; then the first second again.
        let texts = [
            "2024-05-01T12:00:00.250Z",
            "2024-05-01T12:00:00.999Z",
            "2024-05-02T12:00:00.250Z",
            "2023-05-02T12:00:00.001Z",
            "2024-05-02T12:00:01.000Z",
            "2024-05-01T12:00:00.000Z",
        ];
        for round in 0..2 {
            for text in texts {
                let time = parse_timestamp(text).unwrap();
                assert_eq!(format_timestamp(&time), text, "round {round}");
                let mut written = Vec::new();
                write_millis(&mut written, &time);
                assert_eq!(written, format!("\"{text}\"").into_bytes(), "round {round}");
            }
            let leap = chrono::NaiveDate::from_ymd_opt(2024, 5, 1)
                .and_then(|d| d.and_hms_milli_opt(11, 59, 59, 1_250))
                .unwrap()
                .and_utc();
            assert_eq!(format_timestamp(&leap), "2024-05-01T11:59:60.250Z");
        }
    }

    #[test]
    fn edges_fall_back_to_chrono() {
        for text in [
            "0000-01-01T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00.000Z",
        ] {
            let time = parse_timestamp(text).unwrap();
            assert_eq!(format_timestamp(&time), text);
        }
        let far = DateTime::from_timestamp(400_000_000_000, 5_000_000).unwrap();
        assert_eq!(
            format_timestamp(&far),
            far.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_milli_opt(23, 59, 59, 1_500))
            .unwrap()
            .and_utc();
        assert_eq!(
            format_timestamp(&leap),
            leap.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        assert_eq!(format_timestamp(&leap), "2016-12-31T23:59:60.500Z");
    }
}
