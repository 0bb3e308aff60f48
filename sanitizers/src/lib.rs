//! Sanitizers: the `Sanitizer` trait and its implementations (PII masking, consent, pseudonymous ids,
//! field policy), applied as a global chain and as per-sink chains.

pub mod chain;
pub mod config;
pub mod consent;
pub mod fields;
pub mod hash_ids;
pub mod pii;
pub mod pii_sanitizer;

pub use chain::{BuildError, Chain, SanitizeReport, Sanitizer, Verdict};
pub use config::SanitizerConfig;

/// Builds one sanitizer from its config. `Ok(None)` for steps with nothing to do.
pub(crate) fn build_sanitizer(
    config: &SanitizerConfig,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Box<dyn Sanitizer>>, BuildError> {
    Ok(Some(match config {
        SanitizerConfig::Pii(pii) => Box::new(pii_sanitizer::PiiSanitizer::new(pii, path, lookup)?),
        SanitizerConfig::Consent(consent) => match consent.require.clone() {
            Some(category) => Box::new(consent::RequireConsent::new(
                category,
                consent.default_granted,
            )),
            None => return Ok(None),
        },
        SanitizerConfig::HashIds(hash) => Box::new(hash_ids::HashIds::new(hash, path, lookup)?),
        SanitizerConfig::Fields(fields) => Box::new(fields::FieldPolicy::new(fields)),
    }))
}

/// Reads a secret from the environment for a sanitizer, with an error naming where it was needed.
pub(crate) fn secret_from_env(
    variable: &str,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<u8>, BuildError> {
    match lookup(variable) {
        Some(value) if !value.is_empty() => Ok(value.into_bytes()),
        _ => Err(BuildError {
            path: path.to_string(),
            message: format!("environment variable {variable} must be set to a non-empty secret"),
        }),
    }
}

/// HMAC-SHA256 of `message` under `key`, hex-encoded, cut to `hex_chars`.
pub(crate) fn hmac_hex(key: &[u8], message: &[u8], hex_chars: usize) -> String {
    use hmac::Mac;
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length; this branch cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(message);
    let mut text = hex::encode(mac.finalize().into_bytes());
    text.truncate(hex_chars);
    text
}
