//! Timestamp parsing and formatting shared by every decoder and sink.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// Parses a client timestamp: RFC 3339 / ISO-8601 with an offset, or without an offset (taken as UTC),
/// or a bare date-time with a space instead of `T`.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
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

/// Formats a timestamp the way every Switchyard output does: RFC 3339, UTC, millisecond precision.
pub fn format_timestamp(time: &DateTime<Utc>) -> String {
    let mut buffer = [0u8; MILLIS_LENGTH];
    match format_millis(time, &mut buffer) {
        Some(text) => text.to_string(),
        None => time.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`
const MILLIS_LENGTH: usize = 24;

/// The same text as `to_rfc3339_opts(SecondsFormat::Millis, true)`, written into `buffer` without
/// chrono's formatting machinery (it was a tenth of the cost of encoding an event). None for what
/// that fast path does not cover (years outside 0..=9999, leap seconds): use chrono for those.
fn format_millis<'a>(time: &DateTime<Utc>, buffer: &'a mut [u8; MILLIS_LENGTH]) -> Option<&'a str> {
    use chrono::{Datelike, Timelike};
    // Read the fields from the naive date and time once (a DateTime<Utc> applies its offset on
    // every field access).
    let naive = time.naive_utc();
    let (date, clock) = (naive.date(), naive.time());
    let year = date.year();
    let nanos = clock.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut value = value;
        for slot in buffer[at..at + digits].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, date.month(), 2);
    put(8, date.day(), 2);
    put(11, clock.hour(), 2);
    put(14, clock.minute(), 2);
    put(17, clock.second(), 2);
    put(20, nanos / 1_000_000, 3);
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
    buffer[23] = b'Z';
    std::str::from_utf8(buffer).ok()
}

/// Appends a timestamp as a JSON string of [`format_timestamp`] text (used by the event writer).
pub(crate) fn write_millis(out: &mut Vec<u8>, time: &DateTime<Utc>) {
    let mut buffer = [0u8; MILLIS_LENGTH];
    match format_millis(time, &mut buffer) {
        Some(text) => {
            // The fast path's text is digits and separators only: nothing to escape.
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        None => {
            crate::json_writer::write_str(out, &time.to_rfc3339_opts(SecondsFormat::Millis, true))
        }
    }
}

/// Serialises a timestamp as [`format_timestamp`] text, without allocating on the fast path.
fn serialize_millis<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; MILLIS_LENGTH];
    match format_millis(time, &mut buffer) {
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
