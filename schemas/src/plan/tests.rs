//! Tests of tracking-plan loading, validation and the compatibility check.

use super::*;
use crate::segment::{normalize_message, InboundMessage, MessageDefaults};
use serde_json::json;

fn write(root: &Path, relative: &str, content: &str) {
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

fn event(json: Value) -> Event {
    let defaults = MessageDefaults {
        implied_type: None,
        received_at: crate::time::parse_timestamp("2024-05-01T12:00:00Z").unwrap(),
        batch_sent_at: None,
        batch_context: None,
        source: "web",
        request_id: "r",
        ip: None,
        user_agent: None,
    };
    normalize_message(
        InboundMessage::from_json(&json.to_string()).unwrap(),
        &defaults,
    )
    .unwrap()
}

/// Product Viewed v1 needs product_id; v2 also needs a numeric price; _common needs context.app.
fn web_plan() -> (tempfile::TempDir, TrackingPlan) {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "Product Viewed/v1.json",
        &json!({
            "$schema": DRAFT_2020_12,
            "type": "object",
            "properties": {
                "event": {"const": "Product Viewed"},
                "properties": {
                    "type": "object",
                    "required": ["product_id"],
                    "properties": {"product_id": {"type": "string"}, "price": {}}
                }
            }
        })
        .to_string(),
    );
    write(
        dir.path(),
        "Product Viewed/v2.json",
        &json!({
            "type": "object",
            "properties": {
                "properties": {
                    "type": "object",
                    "required": ["product_id", "price"],
                    "properties": {
                        "product_id": {"type": "string"},
                        "price": {"type": "number", "minimum": 0}
                    },
                    "additionalProperties": false
                }
            }
        })
        .to_string(),
    );
    write(
        dir.path(),
        "_common.json",
        &json!({
            "type": "object",
            "properties": {"context": {"type": "object", "required": ["app"]}}
        })
        .to_string(),
    );
    write(dir.path(), "README.md", "notes are ignored");
    let plan = TrackingPlan::load(dir.path()).unwrap();
    (dir, plan)
}

fn viewed(properties: Value, context: Value) -> Event {
    event(json!({
        "type": "track", "event": "Product Viewed", "userId": "u1",
        "properties": properties, "context": context
    }))
}

#[test]
fn versions_are_selected_and_validated_with_their_own_rules() {
    let (_dir, plan) = web_plan();
    assert_eq!(
        plan.event_versions(),
        vec![("Product Viewed".to_string(), vec![1, 2])]
    );
    let app = json!({"name": "shop"});

    // v1 accepts an event without a price.
    let v1 = plan.check(&viewed(
        json!({"product_id": "p1"}),
        json!({"app": app, "schema_version": 1}),
    ));
    assert!(v1.is_valid(), "{v1:?}");
    assert_eq!(v1.schema, Some(("Product Viewed".to_string(), 1)));

    // The same event without a version is checked against the latest (v2), which needs a price.
    let latest = plan.check(&viewed(json!({"product_id": "p1"}), json!({"app": app})));
    assert_eq!(latest.schema, Some(("Product Viewed".to_string(), 2)));
    assert_eq!(latest.violations.len(), 1, "{latest:?}");
    let missing = &latest.violations[0];
    assert_eq!(missing.schema, "Product Viewed/v2.json");
    assert_eq!(missing.instance_path, "/properties");
    assert_eq!(missing.keyword, "required");
    assert_eq!(missing.schema_path, "/properties/properties/required");
    assert!(missing.message.contains("price"), "{missing:?}");

    // v2 accepts a complete event; "v2" and "2" select it too, also from properties.$schema_version,
    // which is not itself validated (v2 forbids additional properties).
    for selector in [json!(2), json!("2"), json!("v2")] {
        let checked = plan.check(&viewed(
            json!({"product_id": "p1", "price": 9.5, "$schema_version": selector}),
            json!({"app": app}),
        ));
        assert!(checked.is_valid(), "{selector}: {checked:?}");
        assert_eq!(checked.schema, Some(("Product Viewed".to_string(), 2)));
    }

    // A wrong type names the value's path, the schema keyword, and does not echo the value.
    let wrong = plan.check(&viewed(
        json!({"product_id": "p1", "price": "secret-price-text"}),
        json!({"app": app, "schema_version": "v2"}),
    ));
    assert_eq!(wrong.violations.len(), 1, "{wrong:?}");
    let violation = &wrong.violations[0];
    assert_eq!(violation.instance_path, "/properties/price");
    assert_eq!(violation.keyword, "type");
    assert_eq!(
        violation.schema_path,
        "/properties/properties/properties/price/type"
    );
    assert!(
        !violation.message.contains("secret-price-text"),
        "{violation:?}"
    );
    assert!(wrong
        .describe()
        .starts_with("Product Viewed v2: /properties/price:"));

    // An extra property is refused by v2 but fine under v1.
    let extra = json!({"product_id": "p1", "price": 1, "colour": "red"});
    assert!(!plan
        .check(&viewed(
            extra.clone(),
            json!({"app": app, "schema_version": 2})
        ))
        .is_valid());
    assert!(plan
        .check(&viewed(extra, json!({"app": app, "schema_version": 1})))
        .is_valid());
}

#[test]
fn bad_versions_unknown_events_and_common_rules() {
    let (_dir, plan) = web_plan();
    let app = json!({"name": "shop"});
    let unknown_version = plan.check(&viewed(
        json!({"product_id": "p1"}),
        json!({"app": app, "schema_version": 7}),
    ));
    assert_eq!(unknown_version.violations[0].keyword, "schema_version");
    assert!(unknown_version.violations[0].message.contains("no v7"));
    let malformed = plan.check(&viewed(
        json!({"product_id": "p1"}),
        json!({"app": app, "schema_version": "latest"}),
    ));
    assert_eq!(
        malformed.violations[0].instance_path,
        "/context/schema_version"
    );

    let signed_up = event(
        json!({"type": "track", "event": "Signed Up", "userId": "u", "context": {"app": app}}),
    );
    let checked = plan.check(&signed_up);
    assert!(checked.unknown && checked.violations.is_empty());
    assert!(!checked.is_valid());

    // identify has no event schema: only _common applies.
    let identify = event(json!({"type": "identify", "userId": "u"}));
    let checked = plan.check(&identify);
    assert!(!checked.unknown);
    assert_eq!(checked.schema, None);
    assert_eq!(checked.violations.len(), 1);
    assert_eq!(checked.violations[0].schema, "_common.json");
    assert_eq!(checked.violations[0].instance_path, "/context");
    let identify_ok = event(json!({"type": "identify", "userId": "u", "context": {"app": app}}));
    assert!(plan.check(&identify_ok).is_valid());

    // A page is looked up by its name; a nameless page needs only _common.
    let page =
        event(json!({"type": "page", "name": "Home", "userId": "u", "context": {"app": app}}));
    assert!(plan.check(&page).unknown);
    let nameless = event(json!({"type": "page", "userId": "u", "context": {"app": app}}));
    assert!(plan.check(&nameless).is_valid());
}

#[test]
fn checking_in_place_leaves_the_event_as_it_was() {
    let (_dir, plan) = web_plan();
    let mut original = viewed(
        json!({"product_id": "p1", "price": "bad", "$schema_version": "v2", "z": 1}),
        json!({"app": {"name": "shop"}, "locale": "de"}),
    );
    original.traits.insert("plan".into(), json!("pro"));
    original.integrations.insert("All".into(), json!(false));
    let mut event = original.clone();
    let in_place = plan.check_in_place(&mut event);
    assert_eq!(event, original);
    assert_eq!(in_place, plan.check(&original));
    assert_eq!(in_place.schema, Some(("Product Viewed".to_string(), 2)));
    assert!(!in_place.is_valid());
}

#[test]
fn violations_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let properties: Map<String, Value> = (0..30)
        .map(|i| (format!("p{i}"), json!({"type": "string"})))
        .collect();
    write(
        dir.path(),
        "Big/v1.json",
        &json!({"properties": {"properties": {"properties": properties}}}).to_string(),
    );
    let plan = TrackingPlan::load(dir.path()).unwrap();
    let values: Map<String, Value> = (0..30).map(|i| (format!("p{i}"), json!(i))).collect();
    let checked = plan.check(&event(
        json!({"type": "track", "event": "Big", "userId": "u", "properties": values}),
    ));
    assert_eq!(checked.violations.len(), MAX_VIOLATIONS);
}

#[test]
fn load_reports_every_problem_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "Broken JSON/v1.json", "{\"type\": ");
    write(root, "Bad Type/v1.json", r#"{"type": "strng"}"#);
    write(root, "Bad Name/version1.json", "{}");
    write(root, "Gap/v1.json", "{}");
    write(root, "Gap/v3.json", "{}");
    write(
        root,
        "Old Draft/v1.json",
        r#"{"$schema": "http://json-schema.org/draft-07/schema#"}"#,
    );
    write(
        root,
        "Renamed/v1.json",
        r#"{"properties": {"event": {"const": "Something Else"}}}"#,
    );
    write(
        root,
        "Pinned/v2.json",
        r#"{"properties": {"context": {"properties": {"schema_version": {"const": 1}}}}}"#,
    );
    write(root, "Pinned/v1.json", "{}");
    write(root, "Remote Ref/v1.json", r#"{"$ref": "other.json"}"#);
    write(root, "stray.json", "{}");
    std::fs::create_dir_all(root.join("Empty")).unwrap();
    let errors = TrackingPlan::load(root).unwrap_err();
    let text = errors.to_string();
    let expect = [
        ("Broken JSON/v1.json", "not valid JSON"),
        ("Bad Type/v1.json", "does not compile"),
        ("Bad Name/version1.json", "unexpected file"),
        ("Bad Name", "no schema"),
        ("Gap", "missing v2.json"),
        ("Old Draft/v1.json", "draft 2020-12"),
        ("Renamed/v1.json", "must match"),
        ("Pinned/v2.json", "must match"),
        ("Remote Ref/v1.json", "does not compile"),
        ("stray.json", "unexpected file"),
        ("Empty", "no schema"),
    ];
    for (file, message) in expect {
        assert!(
            errors
                .0
                .iter()
                .any(|p| p.file == root.join(file) && p.message.contains(message)),
            "expected `{file}: {message}` in:\n{text}"
        );
    }
    assert_eq!(errors.0.len(), expect.len(), "{text}");
    assert!(TrackingPlan::load(&root.join("missing")).is_err());
}

fn rules(old: Value, new: Value) -> Vec<&'static str> {
    compare_schemas(&old, &new)
        .into_iter()
        .map(|c| c.rule)
        .collect()
}

#[test]
fn compatibility_rules_flag_narrowing_changes() {
    let base = json!({"type": "object", "properties": {"properties": {"type": "object",
        "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}}});
    let with = |patch: Value| {
        let mut schema = base.clone();
        let inner = schema["properties"]["properties"].as_object_mut().unwrap();
        for (key, value) in patch.as_object().unwrap() {
            inner.insert(key.clone(), value.clone());
        }
        schema
    };
    assert_eq!(
        rules(base.clone(), with(json!({"required": ["sku"]}))),
        vec!["new_required"]
    );
    assert_eq!(
        rules(base.clone(), with(json!({"additionalProperties": false}))),
        vec!["additional_properties_closed"]
    );
    let closed = with(json!({"additionalProperties": false}));
    let mut without_qty = closed.clone();
    without_qty["properties"]["properties"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("qty");
    let removed = compare_schemas(&closed, &without_qty);
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].rule, "property_removed");
    assert_eq!(
        removed[0].schema_path,
        "/properties/properties/properties/qty"
    );

    let mut narrowed = base.clone();
    narrowed["properties"]["properties"]["properties"]["sku"] =
        json!({"type": "string", "enum": ["a", "b"]});
    assert_eq!(rules(base.clone(), narrowed.clone()), vec!["enum_added"]);
    let mut fewer = narrowed.clone();
    fewer["properties"]["properties"]["properties"]["sku"]["enum"] = json!(["a"]);
    assert_eq!(
        rules(narrowed.clone(), fewer.clone()),
        vec!["enum_narrowed"]
    );
    assert!(
        rules(fewer, narrowed).is_empty(),
        "adding enum values is compatible"
    );

    let mut number_to_integer = base.clone();
    number_to_integer["properties"]["properties"]["properties"]["qty"]["type"] = json!("number");
    assert!(
        rules(base.clone(), number_to_integer.clone()).is_empty(),
        "integer -> number widens"
    );
    assert_eq!(
        rules(number_to_integer, base.clone()),
        vec!["type_narrowed"]
    );

    let mut tighter = base.clone();
    tighter["properties"]["properties"]["properties"]["qty"]["minimum"] = json!(5);
    tighter["properties"]["properties"]["properties"]["sku"]["maxLength"] = json!(10);
    tighter["properties"]["properties"]["properties"]["sku"]["pattern"] = json!("^[A-Z]");
    let mut found = rules(base.clone(), tighter.clone());
    found.sort();
    assert_eq!(
        found,
        vec!["bound_tightened", "bound_tightened", "constraint_added"]
    );
    assert!(
        rules(tighter, base.clone()).is_empty(),
        "loosening is compatible"
    );

    // Compatible evolutions: new optional property, annotations, dropped requirement.
    let mut evolved = with(json!({"description": "now documented"}));
    evolved["properties"]["properties"]["properties"]["colour"] = json!({"type": "string"});
    assert!(rules(base.clone(), evolved).is_empty());
    assert!(rules(with(json!({"required": ["sku"]})), base.clone()).is_empty());

    assert_eq!(
        rules(
            base.clone(),
            with(json!({"anyOf": [{"required": ["sku"]}]}))
        ),
        vec!["unverifiable"]
    );
    assert_eq!(rules(base.clone(), json!(false)), vec!["schema_false"]);
    assert!(rules(json!(false), base).is_empty());
}

#[test]
fn breaking_changes_between_plan_versions() {
    let (_dir, plan) = web_plan();
    let changes = plan.breaking_changes();
    let mut found: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (c.change.rule, c.change.schema_path.as_str()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (
                "additional_properties_closed",
                "/properties/properties/additionalProperties"
            ),
            (
                "bound_tightened",
                "/properties/properties/properties/price/minimum"
            ),
            ("new_required", "/properties/properties/required"),
            (
                "type_narrowed",
                "/properties/properties/properties/price/type"
            ),
        ],
        "{changes:#?}"
    );
    assert!(changes
        .iter()
        .all(|c| c.event == "Product Viewed" && c.from == 1 && c.to == 2));
    assert!(changes[0]
        .to_string()
        .starts_with("Product Viewed v1 -> v2: "));
}

#[test]
fn version_selectors_parse() {
    assert_eq!(parse_version(&json!(3)), Some(3));
    assert_eq!(parse_version(&json!("v12")), Some(12));
    assert_eq!(parse_version(&json!("4")), Some(4));
    for bad in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!("v"),
        json!("x2"),
        json!(true),
    ] {
        assert_eq!(parse_version(&bad), None, "{bad}");
    }
    assert_eq!(parse_version_file("v1.json"), Some(1));
    assert_eq!(parse_version_file("v10.json"), Some(10));
    for bad in ["v0.json", "v01.json", "1.json", "v1.yaml", "v.json"] {
        assert_eq!(parse_version_file(bad), None, "{bad}");
    }
}
