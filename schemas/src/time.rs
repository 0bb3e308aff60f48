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
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde helpers that write timestamps with [`format_timestamp`] and read them with [`parse_timestamp`].
pub mod serde_millis {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        time: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_timestamp(time))
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
                Some(time) => serializer.serialize_str(&format_timestamp(time)),
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
}
