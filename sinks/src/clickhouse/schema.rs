//! The ClickHouse sink's schema: the server version and what it supports, the column layout of the
//! events table (DateTime64 on modern servers, DateTime plus a milliseconds column on old ones), and
//! the versioned migrations that create the events table and its rollups.

use std::fmt;

/// A server version as reported by `SELECT version()` (`18.16.1`, `23.8.2.7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub text: String,
}

impl ServerVersion {
    /// Parses `major.minor[.anything]`; None for anything else.
    pub fn parse(text: &str) -> Option<ServerVersion> {
        let text = text.trim();
        let mut parts = text.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(ServerVersion {
            major,
            minor,
            text: text.to_string(),
        })
    }

    /// Whether this version is `major.minor` or later.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What the server offers that the schema and inserts can use. The thresholds are conservative:
/// a feature is used only from a version where it is enabled without experimental settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `DateTime64(3, 'UTC')` (20.1+); otherwise `DateTime('UTC')` plus a `<column>_ms UInt16`.
    pub datetime64: bool,
    /// `LowCardinality(String)` for repetitive columns (20.1+).
    pub low_cardinality: bool,
    /// Table `TTL` for `retention_days` (19.6+).
    pub ttl: bool,
    /// A `bloom_filter` data-skipping index on `person_id` (21.1+).
    pub person_index: bool,
    /// `insert_deduplication_token` with `non_replicated_deduplication_window` (22.2+).
    pub insert_dedup_token: bool,
}

impl Features {
    /// The features of a server version.
    pub fn of(version: &ServerVersion) -> Features {
        Features {
            datetime64: version.at_least(20, 1),
            low_cardinality: version.at_least(20, 1),
            ttl: version.at_least(19, 6),
            person_index: version.at_least(21, 1),
            insert_dedup_token: version.at_least(22, 2),
        }
    }
}

/// How the timestamps of an events table are stored, which decides the row type of inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `DateTime64(3, 'UTC')` columns.
    Modern,
    /// `DateTime('UTC')` columns (seconds) with a `<column>_ms UInt16` beside each.
    Legacy,
}

impl Layout {
    /// The layout a new table gets on a server with `features`.
    pub fn for_features(features: &Features) -> Layout {
        if features.datetime64 {
            Layout::Modern
        } else {
            Layout::Legacy
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::Modern => "datetime64",
            Layout::Legacy => "datetime+ms",
        }
    }
}

/// The names of the database objects of one sink, all quoted and qualified.
#[derive(Debug, Clone)]
pub struct Names {
    pub database: String,
    pub table: String,
}

impl Names {
    pub fn new(database: &str, table: &str) -> Names {
        Names {
            database: database.to_string(),
            table: table.to_string(),
        }
    }

    /// `` `db`.`name` ``.
    pub fn qualified(&self, name: &str) -> String {
        format!("`{}`.`{}`", self.database, name)
    }

    pub fn events(&self) -> String {
        self.qualified(&self.table)
    }

    pub fn daily(&self) -> String {
        self.qualified(&format!("{}_daily", self.table))
    }

    pub fn daily_view(&self) -> String {
        self.qualified(&format!("{}_daily_mv", self.table))
    }

    pub fn by_person(&self) -> String {
        self.qualified(&format!("{}_by_person", self.table))
    }

    pub fn by_person_view(&self) -> String {
        self.qualified(&format!("{}_by_person_mv", self.table))
    }

    pub fn migrations(&self) -> String {
        self.qualified(MIGRATIONS_TABLE)
    }
}

/// The table, per database, recording which migrations were applied to which events table.
pub const MIGRATIONS_TABLE: &str = "switchyard_migrations";

/// Column types for a table being created.
struct Types {
    features: Features,
}

impl Types {
    fn low(&self) -> &'static str {
        if self.features.low_cardinality {
            "LowCardinality(String)"
        } else {
            "String"
        }
    }

    fn time(&self) -> &'static str {
        if self.features.datetime64 {
            "DateTime64(3, 'UTC')"
        } else {
            "DateTime('UTC')"
        }
    }

    fn nullable_time(&self) -> &'static str {
        if self.features.datetime64 {
            "Nullable(DateTime64(3, 'UTC'))"
        } else {
            "Nullable(DateTime('UTC'))"
        }
    }

    /// `timestamp <type>` plus, on legacy servers, `timestamp_ms UInt16`.
    fn time_columns(&self, name: &str, nullable: bool) -> Vec<(String, String)> {
        let kind = if nullable {
            self.nullable_time()
        } else {
            self.time()
        };
        let mut columns = vec![(name.to_string(), kind.to_string())];
        if !self.features.datetime64 {
            columns.push((format!("{name}_ms"), "UInt16".to_string()));
        }
        columns
    }
}

/// Every column of the events table written by the sink, in table order, as (name, type).
pub fn event_columns(features: &Features) -> Vec<(String, String)> {
    let types = Types {
        features: *features,
    };
    let low = types.low();
    let mut columns: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, kind: &str| columns.push((name.to_string(), kind.to_string()));
    add("message_id", "String");
    add("type", low);
    add("event", low);
    add("name", "Nullable(String)");
    add("user_id", "Nullable(String)");
    add("anonymous_id", "Nullable(String)");
    add("person_id", "String");
    add("group_id", "Nullable(String)");
    add("previous_id", "Nullable(String)");
    add("session_id", "Nullable(String)");
    for (name, nullable) in [
        ("timestamp", false),
        ("original_timestamp", true),
        ("sent_at", true),
        ("received_at", false),
    ] {
        columns.extend(types.time_columns(name, nullable));
    }
    let mut add = |name: &str, kind: &str| columns.push((name.to_string(), kind.to_string()));
    add("properties", "String");
    add("traits", "String");
    add("context", "String");
    add("integrations", "String");
    add("source", low);
    add("request_id", "String");
    add("ip", "Nullable(String)");
    add("user_agent", "Nullable(String)");
    add("page_path", "String");
    add("page_url", "String");
    add("page_referrer", "String");
    add("library_name", low);
    add("library_version", low);
    add("locale", low);
    columns
}

/// The `TTL` clause for `retention_days`, when set and supported.
fn ttl_clause(features: &Features, retention_days: Option<u32>) -> String {
    match retention_days {
        Some(days) if features.ttl => {
            let time = if features.datetime64 {
                "toDateTime(timestamp)"
            } else {
                "timestamp"
            };
            format!("\nTTL {time} + INTERVAL {days} DAY")
        }
        _ => String::new(),
    }
}

/// A migration: a version, a name, and its statements (each idempotent on its own).
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: Vec<String>,
}

/// The migrations, in order, for a server with `features`. Every statement is `IF NOT EXISTS`, so a
/// migration interrupted half-way is simply applied again.
pub fn migrations(
    names: &Names,
    features: &Features,
    retention_days: Option<u32>,
) -> Vec<Migration> {
    let types = Types {
        features: *features,
    };
    let ttl = ttl_clause(features, retention_days);
    let columns = event_columns(features)
        .into_iter()
        .map(|(name, kind)| format!("    `{name}` {kind}"))
        .collect::<Vec<_>>()
        .join(",\n");
    let person_index = if features.person_index {
        ",\n    INDEX person_idx person_id TYPE bloom_filter(0.01) GRANULARITY 4"
    } else {
        ""
    };
    let mut settings = "index_granularity = 8192".to_string();
    if features.insert_dedup_token {
        settings.push_str(", non_replicated_deduplication_window = 1000");
    }
    let events = format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n{columns},\n    `inserted_at` DateTime('UTC') DEFAULT now(){person_index}\n)\n\
         ENGINE = ReplacingMergeTree\n\
         PARTITION BY toYYYYMM(timestamp)\n\
         ORDER BY (type, event, toDate(timestamp), person_id, message_id){ttl}\n\
         SETTINGS {settings}",
        table = names.events(),
    );

    let low = types.low();
    let daily = format!(
        "CREATE TABLE IF NOT EXISTS {daily} (\n    `day` Date,\n    `source` {low},\n    `type` {low},\n    \
         `event` {low},\n    `events` AggregateFunction(count),\n    `users` AggregateFunction(uniq, String)\n)\n\
         ENGINE = AggregatingMergeTree\nPARTITION BY toYYYYMM(day)\nORDER BY (day, source, type, event)",
        daily = names.daily(),
    );
    let daily_view = format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO {daily} AS\n\
         SELECT toDate(timestamp) AS day, source, type, event, countState() AS events, uniqState(person_id) AS users\n\
         FROM {events}\nGROUP BY day, source, type, event",
        view = names.daily_view(),
        daily = names.daily(),
        events = names.events(),
    );

    let mut person_columns = vec![("person_id".to_string(), "String".to_string())];
    person_columns.extend(types.time_columns("timestamp", false));
    for (name, kind) in [
        ("message_id", "String"),
        ("type", low),
        ("event", low),
        ("name", "Nullable(String)"),
        ("session_id", "Nullable(String)"),
        ("source", low),
    ] {
        person_columns.push((name.to_string(), kind.to_string()));
    }
    let selected = person_columns
        .iter()
        .map(|(name, _)| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let person_table_columns = person_columns
        .iter()
        .map(|(name, kind)| format!("    `{name}` {kind}"))
        .collect::<Vec<_>>()
        .join(",\n");
    let by_person = format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n{person_table_columns}\n)\nENGINE = ReplacingMergeTree\n\
         PARTITION BY toYYYYMM(timestamp)\nORDER BY (person_id, timestamp, message_id){ttl}",
        table = names.by_person(),
    );
    let by_person_view = format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO {table} AS\nSELECT {selected}\nFROM {events}",
        view = names.by_person_view(),
        table = names.by_person(),
        events = names.events(),
    );

    vec![
        Migration {
            version: 1,
            name: "create_events_table",
            statements: vec![events],
        },
        Migration {
            version: 2,
            name: "create_daily_rollup",
            statements: vec![daily, daily_view],
        },
        Migration {
            version: 3,
            name: "create_by_person_rollup",
            statements: vec![by_person, by_person_view],
        },
    ]
}

/// The statements creating the database and the migrations table.
pub fn bootstrap(names: &Names) -> Vec<String> {
    vec![
        format!("CREATE DATABASE IF NOT EXISTS `{}`", names.database),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n    `table_name` String,\n    `version` UInt32,\n    \
             `name` String,\n    `server_version` String,\n    `applied_at` DateTime('UTC') DEFAULT now()\n)\n\
             ENGINE = ReplacingMergeTree\nORDER BY (table_name, version)",
            names.migrations()
        ),
    ]
}

/// The RowBinary wire shape of a column type: wrappers that do not change the encoding
/// (`LowCardinality`) and time zones are dropped, so `LowCardinality(String)` is `String` and
/// `Nullable(DateTime64(3, 'UTC'))` is `Nullable(DateTime64(3))`.
pub fn wire_type(kind: &str) -> String {
    let kind = kind.trim();
    if let Some(inner) = unwrap_type(kind, "LowCardinality") {
        return wire_type(inner);
    }
    if let Some(inner) = unwrap_type(kind, "Nullable") {
        return format!("Nullable({})", wire_type(inner));
    }
    if let Some(args) = unwrap_type(kind, "DateTime64") {
        let precision = args.split(',').next().unwrap_or_default().trim();
        return format!("DateTime64({precision})");
    }
    if kind == "DateTime" || unwrap_type(kind, "DateTime").is_some() {
        return "DateTime".to_string();
    }
    kind.to_string()
}

fn unwrap_type<'a>(kind: &'a str, wrapper: &str) -> Option<&'a str> {
    kind.strip_prefix(wrapper)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

/// Checks an existing events table against what the sink writes: works out its layout from the
/// `timestamp` column and requires every written column with the same wire type.
pub fn check_table(columns: &[(String, String)]) -> Result<Layout, String> {
    let find = |wanted: &str| {
        columns
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, kind)| kind.as_str())
    };
    let layout = match find("timestamp").map(wire_type) {
        Some(kind) if kind.starts_with("DateTime64") => Layout::Modern,
        Some(kind) if kind == "DateTime" && find("timestamp_ms").is_some() => Layout::Legacy,
        Some(kind) => {
            return Err(format!(
            "column `timestamp` is {kind}: expected DateTime64(3) or DateTime with `timestamp_ms`"
        ))
        }
        None => return Err("has no `timestamp` column".to_string()),
    };
    let expected = event_columns(&Features {
        datetime64: layout == Layout::Modern,
        low_cardinality: false,
        ttl: false,
        person_index: false,
        insert_dedup_token: false,
    });
    let mut problems = Vec::new();
    for (name, kind) in expected {
        match find(&name) {
            None => problems.push(format!("missing column `{name}` ({kind})")),
            Some(actual) if wire_type(actual) != wire_type(&kind) => {
                problems.push(format!("column `{name}` is {actual}, expected {kind}"))
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(layout)
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(version: &str) -> Features {
        Features::of(&ServerVersion::parse(version).unwrap())
    }

    #[test]
    fn parses_versions_and_picks_features() {
        let old = ServerVersion::parse("18.16.1").unwrap();
        assert_eq!((old.major, old.minor), (18, 16));
        assert!(ServerVersion::parse("unknown").is_none());
        assert!(ServerVersion::parse("23").is_none());
        let legacy = features("18.16.1");
        assert!(!legacy.datetime64 && !legacy.low_cardinality && !legacy.ttl);
        assert!(!legacy.insert_dedup_token && !legacy.person_index);
        assert!(features("19.6.2").ttl);
        assert!(!features("19.6.2").datetime64);
        let modern = features("23.8.2.7");
        assert!(modern.datetime64 && modern.low_cardinality && modern.ttl);
        assert!(modern.insert_dedup_token && modern.person_index);
    }

    #[test]
    fn legacy_schema_uses_only_types_old_servers_have() {
        let names = Names::new("analytics", "events");
        let all = migrations(&names, &features("18.16.1"), Some(30));
        let sql: String = all.iter().flat_map(|m| m.statements.clone()).collect();
        assert!(!sql.contains("DateTime64"));
        assert!(!sql.contains("LowCardinality"));
        assert!(!sql.contains("TTL"), "no TTL on 18.16");
        assert!(!sql.contains("bloom_filter"));
        assert!(sql.contains("`timestamp_ms` UInt16"));
        assert!(sql.contains("ENGINE = ReplacingMergeTree"));
        assert!(sql.contains("PARTITION BY toYYYYMM(timestamp)"));
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS `analytics`.`events` ("));
        assert!(sql.contains("`analytics`.`events_daily_mv` TO `analytics`.`events_daily`"));
        assert_eq!(
            all.iter().map(|m| m.version).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn modern_schema_uses_datetime64_low_cardinality_ttl_and_dedup_window() {
        let names = Names::new("analytics", "events");
        let all = migrations(&names, &features("24.3.1"), Some(395));
        let events = &all[0].statements[0];
        assert!(events.contains("`timestamp` DateTime64(3, 'UTC')"));
        assert!(events.contains("`original_timestamp` Nullable(DateTime64(3, 'UTC'))"));
        assert!(events.contains("`event` LowCardinality(String)"));
        assert!(events.contains("TTL toDateTime(timestamp) + INTERVAL 395 DAY"));
        assert!(events.contains("non_replicated_deduplication_window = 1000"));
        assert!(events.contains("INDEX person_idx person_id TYPE bloom_filter"));
        assert!(!events.contains("timestamp_ms"));
        let without_retention = migrations(&names, &features("24.3.1"), None);
        assert!(!without_retention[0].statements[0].contains("TTL"));
    }

    #[test]
    fn wire_types_ignore_low_cardinality_and_time_zones() {
        assert_eq!(wire_type("LowCardinality(String)"), "String");
        assert_eq!(wire_type("DateTime('UTC')"), "DateTime");
        assert_eq!(wire_type("DateTime"), "DateTime");
        assert_eq!(
            wire_type("Nullable(DateTime64(3, 'UTC'))"),
            "Nullable(DateTime64(3))"
        );
        assert_eq!(
            wire_type("LowCardinality(Nullable(String))"),
            "Nullable(String)"
        );
    }

    #[test]
    fn checks_existing_tables() {
        let legacy = event_columns(&features("18.16.1"));
        assert_eq!(check_table(&legacy), Ok(Layout::Legacy));
        let modern = event_columns(&features("23.8.1"));
        assert_eq!(check_table(&modern), Ok(Layout::Modern));

        let mut missing = legacy.clone();
        missing.retain(|(name, _)| name != "context");
        assert!(check_table(&missing)
            .unwrap_err()
            .contains("missing column `context`"));

        let mut retyped = modern.clone();
        for column in &mut retyped {
            if column.0 == "ip" {
                column.1 = "String".to_string();
            }
        }
        assert!(check_table(&retyped)
            .unwrap_err()
            .contains("column `ip` is String, expected Nullable(String)"));
        assert!(check_table(&[]).unwrap_err().contains("no `timestamp`"));
    }
}
