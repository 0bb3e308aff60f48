//! Sanitizer configuration: the `[[sanitizers]]` and `[[sinks.<name>.sanitizers]]` entries.

use serde::{Deserialize, Serialize};

use crate::pii::PiiKind;

/// One sanitizer in a chain, selected by `type = "..."`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SanitizerConfig {
    /// Finds personal data and secrets in every string value and masks, hashes or drops them.
    Pii(PiiConfig),
    /// Enforces opt-out and per-sink consent categories.
    Consent(ConsentConfig),
    /// Pseudonymises ids with a keyed HMAC whose salt can rotate.
    HashIds(HashIdsConfig),
    /// Allow and deny lists by JSON path, and size caps.
    Fields(FieldsConfig),
}

impl SanitizerConfig {
    /// The `type` name as written in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            SanitizerConfig::Pii(_) => "pii",
            SanitizerConfig::Consent(_) => "consent",
            SanitizerConfig::HashIds(_) => "hash_ids",
            SanitizerConfig::Fields(_) => "fields",
        }
    }

    /// Problems with the values, as (relative path, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        match self {
            SanitizerConfig::Pii(pii) => {
                if pii.hash_key_env.as_deref().is_some_and(str::is_empty) {
                    problems.push(("hash_key_env".into(), "must not be empty".into()));
                }
            }
            SanitizerConfig::Consent(_) => {}
            SanitizerConfig::HashIds(hash) => {
                if hash.fields.is_empty() {
                    problems.push(("fields".into(), "must name at least one id field".into()));
                }
                for (index, field) in hash.fields.iter().enumerate() {
                    if !HashIdsConfig::SUPPORTED_FIELDS.contains(&field.as_str()) {
                        problems.push((
                            format!("fields[{index}]"),
                            format!(
                                "unknown id field `{field}`: expected one of {}",
                                HashIdsConfig::SUPPORTED_FIELDS.join(", ")
                            ),
                        ));
                    }
                }
                if hash.salt_env.is_empty() {
                    problems.push(("salt_env".into(), "must not be empty".into()));
                }
            }
            SanitizerConfig::Fields(fields) => {
                for (list, paths) in [("allow", &fields.allow), ("deny", &fields.deny)] {
                    for (index, path) in paths.iter().enumerate() {
                        if path.is_empty() || path.split('.').any(str::is_empty) {
                            problems.push((
                                format!("{list}[{index}]"),
                                format!("`{path}` is not a dotted path like properties.password"),
                            ));
                        }
                    }
                }
                if fields.max_string_bytes == Some(0) {
                    problems.push(("max_string_bytes".into(), "must be > 0".into()));
                }
            }
        }
        problems
    }
}

/// What to do with a detected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    /// Replace the match with `[REDACTED:<kind>]`.
    #[default]
    Mask,
    /// Replace the match with `<kind>:<HMAC-SHA256 hex prefix>` (joinable, not reversible).
    Hash,
    /// Remove the whole field that contained it.
    DropField,
}

/// `type = "pii"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiiConfig {
    /// Kinds to detect: ssn, credit_card, api_key, email, phone, jwt, ip (default: all but ip).
    pub detect: Vec<PiiKind>,
    /// `mask`, `hash` or `drop_field`.
    pub action: PiiAction,
    /// Keys whose values are always masked, whatever they contain (case-insensitive substring match).
    pub sensitive_keys: Vec<String>,
    /// Environment variable holding the HMAC key for `action = "hash"`.
    pub hash_key_env: Option<String>,
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig {
            detect: PiiKind::defaults(),
            action: PiiAction::Mask,
            sensitive_keys: [
                "password",
                "secret",
                "token",
                "authorization",
                "api_key",
                "ssn",
            ]
            .map(String::from)
            .to_vec(),
            hash_key_env: None,
        }
    }
}

/// `type = "consent"`: drops events whose consent preferences deny a required category.
///
/// Request-level opt-out headers (`[consent] opt_out_headers`) and per-sink `consent = "<category>"`
/// are enforced whether or not this sanitizer is configured; this step adds a global requirement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    /// Category every event must be granted (e.g. `analytics`); events denying it are dropped.
    pub require: Option<String>,
    /// Whether an event without `context.consent.categoryPreferences` counts as granted.
    pub default_granted: bool,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        ConsentConfig {
            require: None,
            default_granted: true,
        }
    }
}

/// How often the `hash_ids` salt changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaltRotation {
    #[default]
    None,
    Daily,
    Weekly,
    Monthly,
}

/// `type = "hash_ids"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashIdsConfig {
    /// Id fields to pseudonymise: userId, anonymousId, groupId, previousId.
    pub fields: Vec<String>,
    /// Environment variable holding the HMAC salt.
    #[serde(default = "HashIdsConfig::default_salt_env")]
    pub salt_env: String,
    /// `none`, `daily`, `weekly` or `monthly`.
    #[serde(default)]
    pub rotation: SaltRotation,
}

impl HashIdsConfig {
    /// The id fields `fields` may name.
    pub const SUPPORTED_FIELDS: [&'static str; 4] =
        ["userId", "anonymousId", "groupId", "previousId"];

    fn default_salt_env() -> String {
        "SWITCHYARD_ID_SALT".to_string()
    }
}

/// `type = "fields"`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldsConfig {
    /// When set, only these paths (and their children) are kept under properties/traits/context.
    pub allow: Vec<String>,
    /// Paths removed from every event, e.g. `properties.password`.
    pub deny: Vec<String>,
    /// Longest string value kept (longer ones are cut at a character boundary).
    pub max_string_bytes: Option<usize>,
}
