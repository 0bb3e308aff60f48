//! How the ClickHouse sink classifies failures: what the delivery layer retries (network, timeouts,
//! overload, "too many parts", credentials that an operator can fix) and what it dead-letters at once
//! (the server refused the data or the schema: unknown table, type mismatch, bad data, ...).

use std::time::Duration;

use crate::sink::SendError;

/// Longest server message kept in an error (ClickHouse appends stack traces on some versions).
const MAX_MESSAGE_CHARS: usize = 600;

/// Server error codes that say "try again later": overload, timeouts, network trouble, replicas.
const RETRYABLE_CODES: &[u32] = &[
    159,  // TIMEOUT_EXCEEDED
    160,  // TOO_SLOW
    164,  // READONLY
    203,  // NO_FREE_CONNECTION
    209,  // SOCKET_TIMEOUT
    210,  // NETWORK_ERROR
    225,  // NO_ZOOKEEPER
    236,  // ABORTED
    241,  // MEMORY_LIMIT_EXCEEDED
    242,  // TABLE_IS_READ_ONLY
    285,  // TOO_FEW_LIVE_REPLICAS
    286,  // UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE
    319,  // UNKNOWN_STATUS_OF_INSERT
    394,  // QUERY_WAS_CANCELLED
    425,  // SYSTEM_ERROR
    439,  // CANNOT_SCHEDULE_TASK
    999,  // KEEPER_EXCEPTION
    1000, // POCO_EXCEPTION (mostly network)
];

/// Codes that ask the client to slow down.
const SLOW_DOWN_CODES: &[u32] = &[
    201, // QUOTA_EXCEEDED
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    252, // TOO_MANY_PARTS
];

/// Credential and permission codes: not the batch's fault, so the batch waits (retried with backoff)
/// until an operator fixes the user or its grants, instead of being dead-lettered.
const CREDENTIAL_CODES: &[u32] = &[
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    194, // REQUIRED_PASSWORD
    195, // IP_ADDRESS_NOT_ALLOWED
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

/// The `Code: N` of a ClickHouse error message, if any.
pub fn server_code(message: &str) -> Option<u32> {
    let start = message.find("Code: ")? + "Code: ".len();
    let digits: String = message[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether a code is about credentials or permissions.
pub fn is_credential_code(code: u32) -> bool {
    CREDENTIAL_CODES.contains(&code)
}

/// The server's message, trimmed to one bounded line.
pub fn shorten(message: &str) -> String {
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > MAX_MESSAGE_CHARS {
        let cut: String = line.chars().take(MAX_MESSAGE_CHARS).collect();
        format!("{cut}...")
    } else {
        line
    }
}

/// The HTTP status at the start of a bodiless error (`"503 Service Unavailable"`).
fn leading_status(message: &str) -> Option<u16> {
    let first = message.split_whitespace().next()?;
    (first.len() == 3).then(|| first.parse().ok()).flatten()
}

/// Classifies a server error message (`Code: N. DB::Exception: ...`, or an HTTP status line when
/// the body was empty or came from a proxy). `what` says which request failed.
pub fn classify_server_message(what: &str, message: &str) -> SendError {
    let text = format!("{what}: {}", shorten(message));
    match server_code(message) {
        Some(252) if message.contains("partitions for single INSERT") => {
            // One batch spans more months than `max_partitions_per_insert_block` allows: the same
            // batch will always fail.
            SendError::Permanent(text)
        }
        Some(code) if SLOW_DOWN_CODES.contains(&code) => SendError::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
            message: text,
        },
        Some(code) if RETRYABLE_CODES.contains(&code) || is_credential_code(code) => {
            SendError::Retryable(text)
        }
        Some(_) => SendError::Permanent(text),
        None => match leading_status(message) {
            Some(429) => SendError::RateLimited {
                retry_after: None,
                message: text,
            },
            Some(408) => SendError::Retryable(text),
            Some(status) if (400..500).contains(&status) => SendError::Permanent(text),
            // 5xx, or an answer that is not ClickHouse's (a proxy page): the data is not at fault.
            _ => SendError::Retryable(text),
        },
    }
}

/// Classifies an error of the `clickhouse` client.
pub fn classify(what: &str, error: &clickhouse::error::Error) -> SendError {
    use clickhouse::error::Error;
    match error {
        Error::BadResponse(message) => classify_server_message(what, message),
        Error::Network(_) | Error::TimedOut => {
            SendError::Retryable(format!("{what}: {}", shorten(&error.to_string())))
        }
        // Our side could not encode the rows or the request: sending again changes nothing.
        Error::InvalidParams(_)
        | Error::Compression(_)
        | Error::Custom(_)
        | Error::SequenceMustHaveLength
        | Error::Unsupported(_)
        | Error::SchemaMismatch(_) => {
            SendError::Permanent(format!("{what}: {}", shorten(&error.to_string())))
        }
        _ => SendError::Retryable(format!("{what}: {}", shorten(&error.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(error: &SendError) -> &'static str {
        match error {
            SendError::Retryable(_) => "retryable",
            SendError::RateLimited { .. } => "rate_limited",
            SendError::Permanent(_) => "permanent",
        }
    }

    #[test]
    fn schema_and_data_errors_are_permanent_with_the_server_message() {
        for message in [
            "Code: 60, e.displayText() = DB::Exception: Table db.events doesn't exist., e.what() = DB::Exception",
            "Code: 60. DB::Exception: Table db.events does not exist. (UNKNOWN_TABLE) (version 23.8.2.7)",
            "Code: 117. DB::Exception: Unknown field found while parsing JSONEachRow format: x (INCORRECT_DATA)",
            "Code: 53. DB::Exception: Type mismatch in IN or VALUES section. (TYPE_MISMATCH)",
            "Code: 33. DB::Exception: Cannot read all data. Bytes read: 3. Bytes expected: 8.",
            "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100).",
        ] {
            let error = classify_server_message("insert into db.events", message);
            assert_eq!(kind(&error), "permanent", "{message}");
            let text = error.to_string();
            assert!(text.contains("insert into db.events: Code: "), "{text}");
            assert!(text.contains("DB::Exception"), "{text}");
        }
    }

    #[test]
    fn overload_network_and_credentials_are_retried() {
        let too_many_parts = classify_server_message(
            "insert",
            "Code: 252, e.displayText() = DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts.",
        );
        assert_eq!(kind(&too_many_parts), "rate_limited");
        for message in [
            "Code: 159. DB::Exception: Timeout exceeded",
            "Code: 241. DB::Exception: Memory limit (total) exceeded",
            "Code: 516. DB::Exception: default: Authentication failed",
            "Code: 193, e.displayText() = DB::Exception: Wrong password for user writer",
            "503 Service Unavailable",
            "<html>bad gateway</html>",
        ] {
            assert_eq!(
                kind(&classify_server_message("insert", message)),
                "retryable",
                "{message}"
            );
        }
        assert_eq!(
            kind(&classify_server_message("insert", "429 Too Many Requests")),
            "rate_limited"
        );
        assert_eq!(
            kind(&classify_server_message("insert", "413 Payload Too Large")),
            "permanent"
        );
        assert_eq!(
            kind(&classify("insert", &clickhouse::error::Error::TimedOut)),
            "retryable"
        );
    }

    #[test]
    fn parses_codes_and_bounds_messages() {
        assert_eq!(server_code("Code: 60. DB::Exception"), Some(60));
        assert_eq!(server_code("Code: 1000, e.displayText()"), Some(1000));
        assert_eq!(server_code("no code here"), None);
        let long = format!("Code: 62. {}", "x".repeat(5000));
        assert!(shorten(&long).len() < 700);
        assert_eq!(shorten("a\n  b\tc"), "a b c");
    }
}
