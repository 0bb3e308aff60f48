//! Tests of config parsing, substitution and validation.

use super::*;
use switchyard_sinks::settings::{RolloutKey, RolloutMode};

fn no_env(_: &str) -> Option<String> {
    None
}

fn problems(text: &str) -> Vec<String> {
    match parse(text, &no_env) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn default_config_is_valid() {
    let config = parse(DEFAULT_CONFIG, &no_env).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8080");
    let local = &config.sinks["local"];
    assert_eq!(local.kind.type_name(), "file");
    assert_eq!(local.common.rollout.percent, 100.0);
}

#[test]
fn full_contract_example_parses() {
    let text = r#"
        [server]
        listen = "127.0.0.1:8080"
        max_body_bytes = 524288
        max_event_bytes = 32768
        data_dir = "./switchyard-data"

        [sources.web]
        write_keys = ["wk_web_1"]

        [[sanitizers]]
        type = "pii"

        [sinks.local]
        type = "file"
        path = "${DATA}/events"

        [sinks.local.batch]
        max_events = 1000
        max_wait_ms = 500

        [sinks.local.rollout]
        percent = 12.5
        mode = "shadow"
        by = "message_id"
    "#;
    let config = parse(text, &|name| {
        (name == "DATA").then(|| "/var/lib/sy".to_string())
    })
    .unwrap();
    let local = &config.sinks["local"];
    let SinkKind::File(file) = &local.kind else {
        panic!("expected a file sink, got {}", local.kind.type_name())
    };
    assert_eq!(file.path, std::path::PathBuf::from("/var/lib/sy/events"));
    assert_eq!(local.common.rollout.mode, RolloutMode::Shadow);
    assert_eq!(local.common.rollout.by, RolloutKey::MessageId);
    assert_eq!(local.common.rollout.basis_points(), 1250);
    assert_eq!(config.sources["web"].write_keys, vec!["wk_web_1"]);
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let found = problems(
        r#"
        [server]
        listen = "nowhere"
        colour = "blue"

        [sources.web]
        write_keys = []

        [delivery]
        cache_mb = 0

        [sinks.local]
        type = "file"
        path = "${MISSING_DIR}/x"
        [sinks.local.batch]
        max_events = 0
        max_concurrent_requests = 0
        [sinks.local.rollout]
        percent = 101

        [sinks.bad]
        type = "carrier_pigeon"

        [sinks.typo]
        type = "file"
        path = "x"
        colour = "red"

        [sinks.untyped]
        path = "x"

        [[sanitizers]]
        type = "hash_ids"
        fields = ["email"]

        [bogus]
        "#,
    );
    let expected = [
        "server.colour: unknown field",
        "sinks.local.path: environment variable MISSING_DIR is not set",
        "sinks.local.batch.max_events: must be > 0",
        "sinks.local.batch.max_concurrent_requests: must be 1..=64",
        "delivery.cache_mb: must be 1..=1048576",
        "sinks.local.rollout.percent: must be between 0 and 100",
        "sinks.bad.type: unknown variant `carrier_pigeon`",
        "sinks.typo: unknown field `colour`",
        "sinks.untyped.type: missing",
        "sanitizers[0].fields[0]: unknown id field `email`",
        "bogus: unknown section",
        "sources.web.write_keys: must list at least one key",
    ];
    for prefix in expected {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "no `{prefix}` in {found:#?}"
        );
    }
}

#[test]
fn listen_is_checked_when_the_section_parses() {
    let found = problems("[server]\nlisten = \"nowhere\"\n");
    assert_eq!(
        found,
        vec!["server.listen: `nowhere` is not an address like 127.0.0.1:8080"]
    );
}

#[test]
fn duplicate_write_keys_across_sources_are_refused() {
    let found = problems("[sources.a]\nwrite_keys = [\"k\"]\n[sources.b]\nwrite_keys = [\"k\"]\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("also listed for source `a`"));
}

#[test]
fn syntax_errors_name_the_line() {
    let found = problems("[server\nlisten = 1");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("TOML syntax"), "{found:?}");
    assert!(found[0].contains("line 1"), "{found:?}");
}

#[test]
fn rollout_percent_allows_two_decimals_only() {
    assert!(problems(
        "[sinks.s]\ntype = \"file\"\npath = \"x\"\n[sinks.s.rollout]\npercent = 0.01\n"
    )
    .is_empty());
    let found =
        problems("[sinks.s]\ntype = \"file\"\npath = \"x\"\n[sinks.s.rollout]\npercent = 0.015\n");
    assert_eq!(
        found,
        vec!["sinks.s.rollout.percent: must have at most two decimals"]
    );
}

#[test]
fn env_substitution_escapes_and_reports() {
    let lookup = |name: &str| (name == "A").then(|| "1".to_string());
    assert_eq!(env::substitute("x${A}y$${A}", &lookup).unwrap(), "x1y${A}");
    assert!(env::substitute("${B} ${C}", &lookup)
        .unwrap_err()
        .contains("B, C"));
    assert!(env::substitute("${A", &lookup).is_err());
    assert_eq!(env::substitute("cost: $5", &lookup).unwrap(), "cost: $5");
}

#[test]
fn ip_ranges_match() {
    let net = IpNet::parse("10.0.0.0/8").unwrap();
    assert!(net.contains("10.1.2.3".parse().unwrap()));
    assert!(!net.contains("11.1.2.3".parse().unwrap()));
    assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
    assert!(IpNet::parse("::1")
        .unwrap()
        .contains("::1".parse().unwrap()));
    assert!(IpNet::parse("10.0.0.0/33").is_none());
}

#[test]
fn posthog_tokens_identify_a_source_and_are_checked() {
    let config = parse("[sources.web]\nposthog_tokens = [\"phc_web\"]\n", &no_env).unwrap();
    assert!(config.sources["web"].write_keys.is_empty());
    assert_eq!(config.sources["web"].posthog_tokens, vec!["phc_web"]);
    let found = problems(
        "[sources.a]\nwrite_keys = [\"k\"]\nposthog_tokens = [\"phc_1\", \" \"]\n\
         [sources.b]\nposthog_tokens = [\"phc_1\", \"phx_personal\"]\n[sources.c]\n",
    );
    let expected = [
        "sources.a.posthog_tokens[1]: must not be empty",
        "sources.b.posthog_tokens[0]: the same token is also listed for source `a`",
        "sources.b.posthog_tokens[1]: a personal API key",
        "sources.c.write_keys: must list at least one key (or set posthog_tokens)",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for prefix in expected {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "no `{prefix}` in {found:#?}"
        );
    }
    // A write key and a PostHog token live in different namespaces.
    assert!(problems(
        "[sources.a]\nwrite_keys = [\"same\"]\n[sources.b]\nposthog_tokens = [\"same\"]\n"
    )
    .is_empty());
}

#[test]
fn batch_defaults_depend_on_the_sink_type() {
    let text = r#"
        [sinks.warehouse]
        type = "clickhouse"
        url = "http://127.0.0.1:8123"
        [sinks.warehouse.batch]
        max_wait_ms = 250

        [sinks.local]
        type = "file"
        path = "x"
    "#;
    let config = parse(text, &no_env).unwrap();
    let warehouse = &config.sinks["warehouse"].common.batch;
    assert_eq!(warehouse.max_events, 10_000, "ClickHouse default");
    assert_eq!(warehouse.max_wait_ms, 250, "the user's value wins");
    assert_eq!(config.sinks["local"].common.batch.max_events, 1000);
}

#[test]
fn demo_example_is_valid_and_enables_kpis() {
    let text = include_str!("../examples/demo.toml");
    let lookup = |name: &str| match name {
        "CLICKHOUSE_URL" => Some("http://127.0.0.1:8123".to_string()),
        "SWITCHYARD_ADMIN_TOKEN" => Some("demo-admin-token-0123456789".to_string()),
        _ => None,
    };
    let config = parse(text, &lookup).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.kpis.sink.as_deref(), Some("warehouse"));
    assert_eq!(config.sinks["candidate"].common.rollout.percent, 10.0);
}

#[test]
fn kpis_section_is_checked() {
    let found = problems(
        r#"
        [sinks.local]
        type = "file"
        path = "/tmp/x"
        [kpis]
        sink = "local"
        max_range_days = 0
        funnel = "magic"
        "#,
    );
    assert!(found.iter().any(|p| p.contains("funnel")), "{found:?}");
    let found = problems(
        r#"
        [sinks.local]
        type = "file"
        path = "/tmp/x"
        [kpis]
        sink = "local"
        max_range_days = 0
        "#,
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found
        .iter()
        .any(|p| p.contains("kpis.sink") && p.contains("file sink")));
    assert!(found.iter().any(|p| p.contains("kpis.max_range_days")));
}
