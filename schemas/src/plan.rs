//! Tracking plans: a folder of versioned JSON Schemas (draft 2020-12), one folder per event, compiled
//! once and cached per (event, version); validation of canonical events against them; and the
//! compatibility check between consecutive versions of an event (`switchyard plan check`).
//!
//! Layout of a plan folder:
//!
//! ```text
//! plans/web/
//!   _common.json              optional: every event must also satisfy it
//!   Product Viewed/v1.json    one JSON Schema per event and version, numbered 1, 2, 3 ... without gaps
//!   Product Viewed/v2.json
//!   Order Completed/v1.json
//! ```
//!
//! A schema validates the whole event as Segment-spec JSON (the canonical [`Event`] serialised with
//! its camelCase field names), so `properties`, `traits`, `context` and the top-level fields are all
//! addressable. The schema of an event is found by its name: `event` for track calls, `name` for page
//! and screen calls. `properties` and `context` are always present in the validated JSON (empty
//! objects when the client sent none), and `traits` too for identify and group. Other call types (identify, group, alias) and nameless pages and screens are
//! checked against `_common.json` only. The version comes from `context.schema_version` (or
//! `properties.$schema_version`): `2`, `"2"` or `"v2"`; without one the latest version applies.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::{Event, EventType};

/// The optional file every event must also satisfy.
pub const COMMON_FILE: &str = "_common.json";

/// The only `$schema` a plan's schemas may declare.
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Most violations reported for one event (the rest are cut off).
pub const MAX_VIOLATIONS: usize = 10;

/// The property that may carry the schema version instead of `context.schema_version`; it is not
/// itself validated (so schemas with `additionalProperties: false` need not declare it).
pub const VERSION_PROPERTY: &str = "$schema_version";

/// The context key that selects the schema version.
pub const VERSION_CONTEXT_KEY: &str = "schema_version";

/// One problem with a plan's files, naming the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanProblem {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

/// Every problem found while loading a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlanErrors(pub Vec<PlanProblem>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(
            f,
            "invalid tracking plan ({count} problem{}):",
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// One way an event does not satisfy its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The schema file, relative to the plan folder (`Product Viewed/v2.json`, `_common.json`).
    pub schema: String,
    /// JSON Pointer to the offending value in the event (`/properties/price`); empty for the event.
    pub instance_path: String,
    /// JSON Pointer to the failing keyword in the schema (`/properties/properties/properties/price/type`).
    pub schema_path: String,
    /// The failing keyword (`type`, `required`, `enum`, ...; `schema_version` for a bad version).
    pub keyword: String,
    /// What is wrong. Values from the event are masked (`value is not of type "number"`).
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.instance_path.is_empty() {
            "/"
        } else {
            &self.instance_path
        };
        write!(
            f,
            "{at}: {} ({}#{})",
            self.message, self.schema, self.schema_path
        )
    }
}

/// The result of checking one event against a plan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checked {
    /// The event name and version whose schema was applied; None when no event schema applied.
    pub schema: Option<(String, u32)>,
    /// The event has a name (track, named page or screen) that the plan does not know.
    pub unknown: bool,
    /// What failed, at most [`MAX_VIOLATIONS`].
    pub violations: Vec<Violation>,
}

impl Checked {
    /// Whether the event is known (or needs no event schema) and satisfies every schema.
    pub fn is_valid(&self) -> bool {
        !self.unknown && self.violations.is_empty()
    }

    /// A one-line summary for responses and `plan test`: `Product Viewed v2: /properties/price: ...`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for violation in &self.violations {
            parts.push(violation.to_string());
        }
        let detail = parts.join("; ");
        match &self.schema {
            Some((name, version)) => format!("{name} v{version}: {detail}"),
            None => detail,
        }
    }
}

/// A compiled schema and the JSON it came from (kept for the compatibility check).
struct Compiled {
    /// Path relative to the plan folder, as shown in violations.
    file: String,
    schema: Value,
    validator: jsonschema::Validator,
}

/// A loaded tracking plan: every schema compiled once, looked up by (event name, version).
pub struct TrackingPlan {
    root: PathBuf,
    common: Option<Compiled>,
    /// Event name -> its versions, ascending, numbered 1..=N.
    events: HashMap<String, Vec<(u32, Compiled)>>,
}

impl fmt::Debug for TrackingPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackingPlan")
            .field("root", &self.root)
            .field("common", &self.common.is_some())
            .field("events", &self.event_versions())
            .finish()
    }
}

/// The name an event's schema is looked up by: `event` for track, `name` for page and screen.
pub fn lookup_name(event: &Event) -> Option<&str> {
    match event.kind {
        EventType::Track => event.event.as_deref(),
        EventType::Page | EventType::Screen => event.name.as_deref(),
        EventType::Identify | EventType::Group | EventType::Alias => None,
    }
}

/// Parses a version selector: a positive integer, `"2"` or `"v2"`.
fn parse_version(value: &Value) -> Option<u32> {
    match value {
        Value::Number(number) => number
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n >= 1),
        Value::String(text) => {
            let digits = text.trim().strip_prefix('v').unwrap_or(text.trim());
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<u32>().ok().filter(|n| *n >= 1)
        }
        _ => None,
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The schema version an event asks for (`context.schema_version`, else
/// `properties.$schema_version`), None for the latest. Err names where the malformed selector is.
pub fn requested_version(event: &Event) -> Result<Option<u32>, (String, String)> {
    let (path, value) = match event.context.get(VERSION_CONTEXT_KEY) {
        Some(value) if !value.is_null() => ("/context/schema_version", value),
        _ => match event.properties.get(VERSION_PROPERTY) {
            Some(value) if !value.is_null() => ("/properties/$schema_version", value),
            _ => return Ok(None),
        },
    };
    parse_version(value).map(Some).ok_or_else(|| {
        (
            path.to_string(),
            format!(
                "the schema version must be a positive integer like 2, \"2\" or \"v2\", found {}",
                json_type_name(value)
            ),
        )
    })
}

/// `v<N>.json` with N >= 1 and no leading zero.
fn parse_version_file(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('v')?.strip_suffix(".json")?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Files a plan folder may hold besides schemas: hidden files and Markdown notes.
fn is_ignored(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".md")
}

fn compile(path: &Path, label: String, problems: &mut Vec<PlanProblem>) -> Option<Compiled> {
    let mut problem = |message: String| {
        problems.push(PlanProblem {
            file: path.to_path_buf(),
            message,
        })
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            problem(format!("cannot read: {error}"));
            return None;
        }
    };
    let schema: Value = match serde_json::from_str(&text) {
        Ok(schema) => schema,
        Err(error) => {
            problem(format!("not valid JSON: {error}"));
            return None;
        }
    };
    match &schema {
        Value::Object(map) => {
            if let Some(declared) = map.get("$schema") {
                let matches = declared
                    .as_str()
                    .is_some_and(|uri| uri.trim_end_matches('#') == DRAFT_2020_12);
                if !matches {
                    problem(format!(
                        "`$schema` must be \"{DRAFT_2020_12}\": plans use JSON Schema draft 2020-12"
                    ));
                    return None;
                }
            }
        }
        Value::Bool(_) => {}
        other => {
            problem(format!(
                "a schema must be a JSON object (or true / false), found {}",
                json_type_name(other)
            ));
            return None;
        }
    }
    match jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
    {
        Ok(validator) => Some(Compiled {
            file: label,
            schema,
            validator,
        }),
        Err(error) => {
            let at = error.instance_path().to_string();
            if at.is_empty() {
                problem(format!("does not compile: {error}"));
            } else {
                problem(format!("does not compile: at {at}: {error}"));
            }
            None
        }
    }
}

/// The `const` a schema pins at `keys` (e.g. `properties` -> `event` -> `const`), if any.
fn pinned<'a>(schema: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    let mut current = schema;
    for key in keys {
        current = current
            .as_object()?
            .get("properties")?
            .as_object()?
            .get(*key)?;
    }
    current.as_object()?.get("const")
}

/// Loads one event's folder: every `v<N>.json`, numbered 1..=N, consistent with the folder's name.
fn load_event(dir: &Path, name: &str, problems: &mut Vec<PlanProblem>) -> Vec<(u32, Compiled)> {
    let entries = match read_sorted(dir) {
        Ok(entries) => entries,
        Err(error) => {
            problems.push(PlanProblem {
                file: dir.to_path_buf(),
                message: format!("cannot read the event folder: {error}"),
            });
            return Vec::new();
        }
    };
    let mut versions = Vec::new();
    let mut numbers = BTreeSet::new();
    for (file_name, path) in entries {
        if is_ignored(&file_name) {
            continue;
        }
        let Some(version) = parse_version_file(&file_name) else {
            problems.push(PlanProblem {
                file: path,
                message: "unexpected file: an event folder holds v1.json, v2.json, ... (v<N>.json, no leading zeros)".into(),
            });
            continue;
        };
        numbers.insert(version);
        if let Some(compiled) = compile(&path, format!("{name}/{file_name}"), problems) {
            check_names(&path, name, version, &compiled.schema, problems);
            versions.push((version, compiled));
        }
    }
    if numbers.is_empty() {
        problems.push(PlanProblem {
            file: dir.to_path_buf(),
            message: "no schema: add v1.json".into(),
        });
    }
    if let Some(&last) = numbers.last() {
        let missing: Vec<String> = (1..last)
            .filter(|n| !numbers.contains(n))
            .map(|n| format!("v{n}.json"))
            .collect();
        if !missing.is_empty() {
            problems.push(PlanProblem {
                file: dir.to_path_buf(),
                message: format!(
                    "missing {}: versions run 1, 2, 3 ... without gaps",
                    missing.join(", ")
                ),
            });
        }
    }
    versions.sort_by_key(|(version, _)| *version);
    versions
}

/// A schema that pins the event name or the version must pin the ones its file stands for.
fn check_names(
    path: &Path,
    name: &str,
    version: u32,
    schema: &Value,
    problems: &mut Vec<PlanProblem>,
) {
    for key in ["event", "name"] {
        if let Some(value) = pinned(schema, &[key]) {
            if value.as_str() != Some(name) {
                problems.push(PlanProblem {
                    file: path.to_path_buf(),
                    message: format!(
                        "pins `{key}` to {value}, but the folder is named \"{name}\": they must match"
                    ),
                });
            }
        }
    }
    if let Some(value) = pinned(schema, &["context", VERSION_CONTEXT_KEY]) {
        if parse_version(value) != Some(version) {
            problems.push(PlanProblem {
                file: path.to_path_buf(),
                message: format!(
                    "pins context.schema_version to {value}, but the file is v{version}.json: they must match"
                ),
            });
        }
    }
}

/// A folder's entries (name, path) sorted by name; names that are not UTF-8 are an error.
fn read_sorted(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|raw| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("file name {raw:?} is not UTF-8"),
            )
        })?;
        entries.push((name, path));
    }
    entries.sort();
    Ok(entries)
}

impl TrackingPlan {
    /// Loads and compiles every schema under `root`. Reports every problem at once, each with its file:
    /// unreadable files, invalid JSON, schemas that do not compile (draft 2020-12, formats asserted),
    /// unexpected file names, gaps in version numbers, and schemas pinning another event name or version.
    pub fn load(root: &Path) -> Result<TrackingPlan, PlanErrors> {
        let mut problems = Vec::new();
        let entries = match read_sorted(root) {
            Ok(entries) => entries,
            Err(error) => {
                return Err(PlanErrors(vec![PlanProblem {
                    file: root.to_path_buf(),
                    message: format!("cannot read the plan folder: {error}"),
                }]))
            }
        };
        let mut common = None;
        let mut events = HashMap::new();
        for (name, path) in entries {
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                let versions = load_event(&path, &name, &mut problems);
                if !versions.is_empty() {
                    events.insert(name, versions);
                }
            } else if name == COMMON_FILE {
                common = compile(&path, name, &mut problems);
            } else if !is_ignored(&name) {
                problems.push(PlanProblem {
                    file: path,
                    message: format!(
                        "unexpected file: a plan holds one folder per event (<event name>/v<N>.json) and an optional {COMMON_FILE}"
                    ),
                });
            }
        }
        if problems.is_empty() {
            Ok(TrackingPlan {
                root: root.to_path_buf(),
                common,
                events,
            })
        } else {
            Err(PlanErrors(problems))
        }
    }

    /// The folder the plan was loaded from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the plan has a `_common.json`.
    pub fn has_common(&self) -> bool {
        self.common.is_some()
    }

    /// Every event with its versions, sorted by name.
    pub fn event_versions(&self) -> Vec<(String, Vec<u32>)> {
        let mut list: Vec<(String, Vec<u32>)> = self
            .events
            .iter()
            .map(|(name, versions)| (name.clone(), versions.iter().map(|(v, _)| *v).collect()))
            .collect();
        list.sort();
        list
    }

    /// Checks an event: its event schema (by name and version) and `_common.json`.
    pub fn check(&self, event: &Event) -> Checked {
        let mut copy = event.clone();
        self.check_in_place(&mut copy)
    }

    /// [`TrackingPlan::check`] without copying the event's maps: `properties`, `traits`, `context`
    /// and `integrations` are moved into the validated JSON and back, so only the small top-level
    /// fields are serialised. The event is unchanged afterwards.
    pub fn check_in_place(&self, event: &mut Event) -> Checked {
        let mut checked = Checked::default();
        let mut schema = None;
        let name = lookup_name(event);
        let versions = name.and_then(|name| self.events.get(name));
        checked.unknown = name.is_some() && versions.is_none();
        if let (Some(name), Some(versions)) = (name, versions) {
            match requested_version(event) {
                Err((path, message)) => checked.violations.push(Violation {
                    schema: format!("{name}/"),
                    instance_path: path,
                    schema_path: String::new(),
                    keyword: "schema_version".into(),
                    message,
                }),
                Ok(requested) => {
                    let found = match requested {
                        None => versions.last(),
                        Some(wanted) => versions.iter().find(|(version, _)| *version == wanted),
                    };
                    match found {
                        Some((version, compiled)) => {
                            checked.schema = Some((name.to_string(), *version));
                            schema = Some(compiled);
                        }
                        None => checked.violations.push(Violation {
                            schema: format!("{name}/"),
                            instance_path: if event.context.contains_key(VERSION_CONTEXT_KEY) {
                                "/context/schema_version".into()
                            } else {
                                "/properties/$schema_version".into()
                            },
                            schema_path: String::new(),
                            keyword: "schema_version".into(),
                            message: format!(
                                "the plan has no v{} of this event (it has v1 to v{})",
                                requested.unwrap_or_default(),
                                versions.len()
                            ),
                        }),
                    }
                }
            }
        }
        if schema.is_none() && self.common.is_none() {
            return checked;
        }
        let (instance, selector) = match take_instance(event) {
            Ok(taken) => taken,
            Err(error) => {
                checked.violations.push(Violation {
                    schema: String::new(),
                    instance_path: String::new(),
                    schema_path: String::new(),
                    keyword: "serialize".into(),
                    message: format!("the event cannot be serialised for validation: {error}"),
                });
                return checked;
            }
        };
        if let Some(compiled) = schema {
            collect(compiled, &instance, &mut checked.violations);
        }
        if let Some(common) = &self.common {
            collect(common, &instance, &mut checked.violations);
        }
        restore_instance(event, instance, selector);
        checked
    }

    /// Every breaking change between consecutive versions of every event (see [`compare_schemas`]).
    pub fn breaking_changes(&self) -> Vec<BreakingChange> {
        let mut names: Vec<&String> = self.events.keys().collect();
        names.sort();
        let mut changes = Vec::new();
        for name in names {
            let versions = &self.events[name];
            for pair in versions.windows(2) {
                let (from, old) = (&pair[0].0, &pair[0].1);
                let (to, new) = (&pair[1].0, &pair[1].1);
                for change in compare_schemas(&old.schema, &new.schema) {
                    changes.push(BreakingChange {
                        event: name.clone(),
                        from: *from,
                        to: *to,
                        change,
                    });
                }
            }
        }
        changes
    }
}

/// Builds the validated JSON from the event, moving its maps in (see [`restore_instance`]). The JSON
/// is regular: `properties` and `context` are always objects (the canonical event omits empty maps),
/// and `traits` too for identify and group, so nested `required` rules apply. The version selector
/// `properties.$schema_version` is taken out (it selects the schema, it is not validated by it) and
/// returned to be put back.
fn take_instance(event: &mut Event) -> Result<(Value, Option<Value>), serde_json::Error> {
    let mut properties = std::mem::take(&mut event.properties);
    let traits = std::mem::take(&mut event.traits);
    let context = std::mem::take(&mut event.context);
    let integrations = std::mem::take(&mut event.integrations);
    let mut instance = match serde_json::to_value(&*event) {
        Ok(instance) => instance,
        Err(error) => {
            event.properties = properties;
            event.traits = traits;
            event.context = context;
            event.integrations = integrations;
            return Err(error);
        }
    };
    let selector = properties.remove(VERSION_PROPERTY);
    if let Some(object) = instance.as_object_mut() {
        object.insert("properties".into(), Value::Object(properties));
        object.insert("context".into(), Value::Object(context));
        if !traits.is_empty() || matches!(event.kind, EventType::Identify | EventType::Group) {
            object.insert("traits".into(), Value::Object(traits));
        }
        if !integrations.is_empty() {
            object.insert("integrations".into(), Value::Object(integrations));
        }
    }
    Ok((instance, selector))
}

/// Moves the maps back from the validated JSON into the event.
fn restore_instance(event: &mut Event, instance: Value, selector: Option<Value>) {
    let Value::Object(mut object) = instance else {
        return;
    };
    let mut take = |key: &str| match object.remove(key) {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    event.properties = take("properties");
    event.traits = take("traits");
    event.context = take("context");
    event.integrations = take("integrations");
    if let Some(selector) = selector {
        event.properties.insert(VERSION_PROPERTY.into(), selector);
    }
}

/// Appends the violations of `instance` against one schema (nothing when it is valid).
fn collect(compiled: &Compiled, instance: &Value, out: &mut Vec<Violation>) {
    if out.len() >= MAX_VIOLATIONS || compiled.validator.is_valid(instance) {
        return;
    }
    let room = MAX_VIOLATIONS - out.len();
    for error in compiled.validator.iter_errors(instance).take(room) {
        out.push(Violation {
            schema: compiled.file.clone(),
            instance_path: error.instance_path().to_string(),
            schema_path: error.schema_path().to_string(),
            keyword: error.kind().keyword().to_string(),
            message: error.masked().to_string(),
        });
    }
}

/// One change between two versions of a schema that makes some event valid under the old version
/// invalid under the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaChange {
    /// JSON Pointer into the new schema where the change is.
    pub schema_path: String,
    /// The rule that flagged it (`new_required`, `type_narrowed`, ... see [`compare_schemas`]).
    pub rule: &'static str,
    pub message: String,
}

/// A breaking change between two consecutive versions of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakingChange {
    pub event: String,
    pub from: u32,
    pub to: u32,
    #[serde(flatten)]
    pub change: SchemaChange,
}

impl fmt::Display for BreakingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.change.schema_path.is_empty() {
            "/"
        } else {
            &self.change.schema_path
        };
        write!(
            f,
            "{} v{} -> v{}: {at}: {} [{}]",
            self.event, self.from, self.to, self.change.message, self.change.rule
        )
    }
}

/// Keywords that only annotate: changing them never changes what is valid.
const ANNOTATIONS: [&str; 14] = [
    "$schema",
    "$id",
    "$anchor",
    "$comment",
    "$vocabulary",
    "$defs",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
];

/// Keywords [`compare_schemas`] understands (the rest are compared verbatim).
const UNDERSTOOD: [&str; 23] = [
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "unevaluatedProperties",
    "items",
    "minimum",
    "exclusiveMinimum",
    "minLength",
    "minItems",
    "minProperties",
    "maximum",
    "exclusiveMaximum",
    "maxLength",
    "maxItems",
    "maxProperties",
    "multipleOf",
    "pattern",
    "format",
    "uniqueItems",
    "contentEncoding",
];

/// Lists the changes from `old` to `new` that can make an event valid under `old` invalid under
/// `new` ("breaking": an app still sending the old shape without a version is now refused).
///
/// Rules, applied at the root and recursively in `properties.<name>`, `additionalProperties`,
/// `unevaluatedProperties`, `items` and `$defs.<name>`:
/// - `new_required`: a name added to `required`.
/// - `type_narrowed`: `type` added, or a type removed (`integer` -> `number` widens; the reverse narrows).
/// - `enum_added` / `enum_narrowed`: an `enum` or `const` added, or allowed values removed.
/// - `property_removed`: a property dropped from `properties` while additional properties are
///   forbidden (`additionalProperties: false` or `unevaluatedProperties: false`).
/// - `additional_properties_closed`: `additionalProperties` or `unevaluatedProperties` turned false.
/// - `bound_tightened`: a minimum raised or added, a maximum lowered or added (`minimum`,
///   `exclusiveMinimum`, `minLength`, `minItems`, `minProperties`, `maximum`, `exclusiveMaximum`,
///   `maxLength`, `maxItems`, `maxProperties`).
/// - `constraint_added`: `pattern`, `format`, `multipleOf`, `contentEncoding` added or changed,
///   `uniqueItems` turned true.
/// - `schema_false`: the schema became `false`.
/// - `unverifiable`: any other keyword that changed (`$ref`, `allOf`, `anyOf`, `oneOf`, `not`,
///   `if`/`then`/`else`, `patternProperties`, `prefixItems`, `dependentRequired`, ...): cannot be proven
///   compatible, review by hand.
///
/// Compatible (not flagged): new optional properties, widened types and bounds, removed `required`
/// names, added enum values, removed properties while additional properties stay allowed, and
/// annotations (`title`, `description`, `examples`, ...).
pub fn compare_schemas(old: &Value, new: &Value) -> Vec<SchemaChange> {
    let mut changes = Vec::new();
    compare_at(old, new, "", &mut changes);
    changes
}

fn push(out: &mut Vec<SchemaChange>, path: &str, rule: &'static str, message: String) {
    out.push(SchemaChange {
        schema_path: path.to_string(),
        rule,
        message,
    });
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn types_of(schema: &Map<String, Value>) -> Option<BTreeSet<String>> {
    match schema.get("type")? {
        Value::String(single) => Some(BTreeSet::from([single.clone()])),
        Value::Array(many) => Some(
            many.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

fn allowed_values(schema: &Map<String, Value>) -> Option<Vec<&Value>> {
    if let Some(constant) = schema.get("const") {
        return Some(vec![constant]);
    }
    schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|values| values.iter().collect())
}

fn closes_additional(schema: &Map<String, Value>) -> bool {
    schema.get("additionalProperties") == Some(&Value::Bool(false))
        || schema.get("unevaluatedProperties") == Some(&Value::Bool(false))
}

fn compare_at(old: &Value, new: &Value, path: &str, out: &mut Vec<SchemaChange>) {
    if old == new {
        return;
    }
    if *old == Value::Bool(false) {
        return; // nothing was valid before
    }
    if *new == Value::Bool(false) {
        push(
            out,
            path,
            "schema_false",
            "the schema became `false`: every value is now rejected".into(),
        );
        return;
    }
    let empty = Map::new();
    let old_map = old.as_object().unwrap_or(&empty);
    let new_map = new.as_object().unwrap_or(&empty);

    // type
    if let Some(new_types) = types_of(new_map) {
        let old_types = types_of(old_map);
        let covered =
            |t: &String| new_types.contains(t) || (t == "integer" && new_types.contains("number"));
        let narrowed = match &old_types {
            None => true,
            Some(old_types) => !old_types.iter().all(covered),
        };
        if narrowed {
            let before = old_types
                .map(|t| t.into_iter().collect::<Vec<_>>().join(" | "))
                .unwrap_or_else(|| "any".to_string());
            let after = new_types.into_iter().collect::<Vec<_>>().join(" | ");
            push(
                out,
                &format!("{path}/type"),
                "type_narrowed",
                format!("type narrowed from {before} to {after}"),
            );
        }
    }

    // enum / const
    if let Some(new_values) = allowed_values(new_map) {
        let keyword = if new_map.contains_key("const") {
            "const"
        } else {
            "enum"
        };
        match allowed_values(old_map) {
            None => push(
                out,
                &format!("{path}/{keyword}"),
                "enum_added",
                format!("`{keyword}` added: values are now restricted"),
            ),
            Some(old_values) => {
                let removed: Vec<String> = old_values
                    .iter()
                    .filter(|value| !new_values.contains(value))
                    .map(|value| value.to_string())
                    .collect();
                if !removed.is_empty() {
                    push(
                        out,
                        &format!("{path}/{keyword}"),
                        "enum_narrowed",
                        format!("allowed values removed: {}", removed.join(", ")),
                    );
                }
            }
        }
    }

    // required
    let names = |schema: &Map<String, Value>| -> BTreeSet<String> {
        schema
            .get("required")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let old_required = names(old_map);
    for name in names(new_map).difference(&old_required) {
        push(
            out,
            &format!("{path}/required"),
            "new_required",
            format!("`{name}` is now required"),
        );
    }

    // properties
    let old_properties = old_map.get("properties").and_then(Value::as_object);
    let new_properties = new_map.get("properties").and_then(Value::as_object);
    let new_additional = new_map.get("additionalProperties");
    if let Some(old_properties) = old_properties {
        for (name, old_schema) in old_properties {
            let property_path = format!("{path}/properties/{}", escape_pointer(name));
            match new_properties.and_then(|p| p.get(name)) {
                Some(new_schema) => compare_at(old_schema, new_schema, &property_path, out),
                None if closes_additional(new_map) && !new_map.contains_key("patternProperties") => {
                    push(
                        out,
                        &property_path,
                        "property_removed",
                        format!(
                            "property `{name}` removed while additional properties are forbidden: events that send it are now rejected"
                        ),
                    )
                }
                None => {
                    if let Some(additional @ Value::Object(_)) = new_additional {
                        compare_at(old_schema, additional, &format!("{path}/additionalProperties"), out);
                    }
                }
            }
        }
    }

    // additionalProperties / unevaluatedProperties
    for keyword in ["additionalProperties", "unevaluatedProperties"] {
        let old_value = old_map.get(keyword).unwrap_or(&Value::Bool(true));
        let new_value = new_map.get(keyword).unwrap_or(&Value::Bool(true));
        if *new_value == Value::Bool(false) && *old_value != Value::Bool(false) {
            push(
                out,
                &format!("{path}/{keyword}"),
                "additional_properties_closed",
                format!("`{keyword}` turned false: properties not listed are now rejected"),
            );
        } else if new_value.is_object() {
            compare_at(old_value, new_value, &format!("{path}/{keyword}"), out);
        }
    }

    // items
    if let Some(new_items) = new_map.get("items") {
        let old_items = old_map.get("items").unwrap_or(&Value::Bool(true));
        compare_at(old_items, new_items, &format!("{path}/items"), out);
    }

    // bounds
    let number = |schema: &Map<String, Value>, key: &str| schema.get(key).and_then(Value::as_f64);
    for key in [
        "minimum",
        "exclusiveMinimum",
        "minLength",
        "minItems",
        "minProperties",
    ] {
        if let Some(new_bound) = number(new_map, key) {
            let tightened = number(old_map, key).is_none_or(|old_bound| new_bound > old_bound);
            if tightened {
                push(
                    out,
                    &format!("{path}/{key}"),
                    "bound_tightened",
                    format!("`{key}` raised or added ({new_bound})"),
                );
            }
        }
    }
    for key in [
        "maximum",
        "exclusiveMaximum",
        "maxLength",
        "maxItems",
        "maxProperties",
    ] {
        if let Some(new_bound) = number(new_map, key) {
            let tightened = number(old_map, key).is_none_or(|old_bound| new_bound < old_bound);
            if tightened {
                push(
                    out,
                    &format!("{path}/{key}"),
                    "bound_tightened",
                    format!("`{key}` lowered or added ({new_bound})"),
                );
            }
        }
    }
    for key in ["pattern", "format", "multipleOf", "contentEncoding"] {
        if let Some(new_value) = new_map.get(key) {
            if old_map.get(key) != Some(new_value) {
                push(
                    out,
                    &format!("{path}/{key}"),
                    "constraint_added",
                    format!("`{key}` added or changed"),
                );
            }
        }
    }
    if new_map.get("uniqueItems") == Some(&Value::Bool(true))
        && old_map.get("uniqueItems") != Some(&Value::Bool(true))
    {
        push(
            out,
            &format!("{path}/uniqueItems"),
            "constraint_added",
            "`uniqueItems` turned true".into(),
        );
    }

    // $defs: compared by name, since $ref points into them
    if let (Some(old_defs), Some(new_defs)) = (
        old_map.get("$defs").and_then(Value::as_object),
        new_map.get("$defs").and_then(Value::as_object),
    ) {
        for (name, new_def) in new_defs {
            if let Some(old_def) = old_defs.get(name) {
                compare_at(
                    old_def,
                    new_def,
                    &format!("{path}/$defs/{}", escape_pointer(name)),
                    out,
                );
            }
        }
    }

    // everything else: changed means unverifiable
    let keys: BTreeSet<&String> = old_map.keys().chain(new_map.keys()).collect();
    for key in keys {
        if ANNOTATIONS.contains(&key.as_str()) || UNDERSTOOD.contains(&key.as_str()) {
            continue;
        }
        if old_map.get(key) != new_map.get(key) {
            push(
                out,
                &format!("{path}/{}", escape_pointer(key)),
                "unverifiable",
                format!("`{key}` changed: cannot be proven compatible, review by hand"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
