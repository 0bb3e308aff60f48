//! The ClickHouse sink (`type = "clickhouse"`): owned event storage. At start it checks the server
//! (naming the URL when it cannot be reached or refuses the credentials), reads its version, applies
//! the versioned migrations (database, events table, rollups) and checks the table's columns; each
//! batch is then one RowBinary insert, LZ4-compressed, over the HTTP interface.
//!
//! The table is a ReplacingMergeTree keyed on the message id, so a batch sent again (a retry after a
//! lost answer, a crash before the cursor commit) collapses to one row under `FINAL`; servers with
//! `insert_deduplication_token` also drop the repeated insert itself.

pub mod errors;
pub mod rows;
pub mod schema;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clickhouse::{Client, Compression};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use switchyard_schemas::Event;

use crate::settings::ClickhouseSinkConfig;
use crate::sink::{SendError, Sink, SinkError};
use errors::{classify, is_credential_code, server_code, shorten};
use rows::{dedup_token, LegacyRow, ModernRow};
use schema::{Features, Layout, Names, ServerVersion};

/// What `start` learnt about the server and the table.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub version: ServerVersion,
    pub features: Features,
    pub layout: Layout,
}

/// Writes events into a ClickHouse table.
pub struct ClickhouseSink {
    name: String,
    config: ClickhouseSinkConfig,
    names: Names,
    /// Client without a default database (the database may not exist yet).
    client: Client,
    /// Client whose default database is the sink's, for inserts.
    insert_client: Client,
    timeout: Duration,
    prepared: Mutex<Option<Prepared>>,
}

impl ClickhouseSink {
    /// A sink for `config`; nothing is contacted until [`Sink::start`].
    pub fn new(name: &str, config: ClickhouseSinkConfig) -> Result<ClickhouseSink, SinkError> {
        let mut client = http_client(&config.url)
            .with_url(config.url.trim_end_matches('/'))
            .with_user(&config.user)
            .with_compression(Compression::Lz4)
            // RowBinary: old servers have no RowBinaryWithNamesAndTypes; `start` checks the
            // table's columns against the row type instead.
            .with_validation(false);
        if let Some(password) = &config.password {
            client = client.with_password(password);
        }
        let insert_client = client.clone().with_database(&config.database);
        Ok(ClickhouseSink {
            name: name.to_string(),
            names: Names::new(&config.database, &config.table),
            timeout: Duration::from_secs(config.request_timeout_secs),
            config,
            client,
            insert_client,
            prepared: Mutex::new(None),
        })
    }

    /// What `start` found, once it succeeded.
    pub fn prepared(&self) -> Option<Prepared> {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn url(&self) -> &str {
        &self.config.url
    }

    /// Runs `future` bounded by the request timeout.
    async fn bounded<T>(
        &self,
        future: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> clickhouse::error::Result<T> {
        tokio::time::timeout(self.timeout, future)
            .await
            .unwrap_or(Err(clickhouse::error::Error::TimedOut))
    }

    /// A start-up or health-check failure, worded for the operator, naming the URL and never the
    /// password.
    fn setup_error(&self, what: &str, error: &clickhouse::error::Error) -> SinkError {
        use clickhouse::error::Error;
        let url = self.url();
        let message = match error {
            Error::Network(_) => format!("ClickHouse at {url} is unreachable: {error}"),
            Error::TimedOut => format!(
                "ClickHouse at {url} did not answer within {}s",
                self.timeout.as_secs()
            ),
            Error::BadResponse(text) if server_code(text).is_some_and(is_credential_code) => {
                format!(
                    "ClickHouse at {url} refused user '{}' (check user and password): {}",
                    self.config.user,
                    shorten(text)
                )
            }
            Error::BadResponse(text) => {
                format!("ClickHouse at {url} failed to {what}: {}", shorten(text))
            }
            other => format!("ClickHouse at {url} failed to {what}: {other}"),
        };
        SinkError::Setup(message)
    }

    /// `SELECT version()`: the health check and the version detection in one request.
    async fn server_version(&self) -> Result<ServerVersion, SinkError> {
        let text = self
            .bounded(self.client.query("SELECT version()").fetch_one::<String>())
            .await
            .map_err(|e| self.setup_error("answer SELECT version()", &e))?;
        ServerVersion::parse(&text).ok_or_else(|| {
            SinkError::Setup(format!(
                "ClickHouse at {} reported an unknown version {text:?}",
                self.url()
            ))
        })
    }

    async fn execute(&self, sql: &str) -> Result<(), SinkError> {
        self.bounded(self.client.query(sql).execute())
            .await
            .map_err(|e| self.setup_error("run the schema migration", &e))
    }

    /// Creates the database and migrations table, then applies every migration not yet recorded
    /// for this table. Safe to run concurrently and repeatedly: every statement is `IF NOT EXISTS`
    /// and a migration recorded twice collapses under `FINAL`.
    async fn migrate(&self, version: &ServerVersion, features: &Features) -> Result<(), SinkError> {
        for statement in schema::bootstrap(&self.names) {
            self.execute(&statement).await?;
        }
        let applied: Vec<u32> = self
            .bounded(
                self.client
                    .query(&format!(
                        "SELECT version FROM {} FINAL WHERE table_name = ? ORDER BY version",
                        self.names.migrations()
                    ))
                    .bind(&self.config.table)
                    .fetch_all::<u32>(),
            )
            .await
            .map_err(|e| self.setup_error("read the applied migrations", &e))?;
        for migration in schema::migrations(&self.names, features, self.config.retention_days) {
            if applied.contains(&migration.version) {
                continue;
            }
            for statement in &migration.statements {
                self.execute(statement).await?;
            }
            self.bounded(
                self.client
                    .query(&format!(
                        "INSERT INTO {} (table_name, version, name, server_version) VALUES (?, ?, ?, ?)",
                        self.names.migrations()
                    ))
                    .bind(&self.config.table)
                    .bind(migration.version)
                    .bind(migration.name)
                    .bind(&version.text)
                    .execute(),
            )
            .await
            .map_err(|e| self.setup_error("record the migration", &e))?;
            tracing::info!(
                sink = %self.name,
                database = %self.config.database,
                table = %self.config.table,
                migration = migration.version,
                name = migration.name,
                "applied ClickHouse migration"
            );
        }
        Ok(())
    }

    /// Reads the events table's columns and checks them against the row types.
    async fn inspect_table(&self) -> Result<Layout, SinkError> {
        let columns: Vec<(String, String)> = self
            .bounded(
                self.client
                    .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
                    .bind(&self.config.database)
                    .bind(&self.config.table)
                    .fetch_all::<(String, String)>(),
            )
            .await
            .map_err(|e| self.setup_error("list the table's columns", &e))?;
        if columns.is_empty() {
            return Err(SinkError::Setup(format!(
                "ClickHouse at {}: table {} does not exist (set create_schema = true to create it)",
                self.url(),
                self.names.events()
            )));
        }
        schema::check_table(&columns).map_err(|problem| {
            SinkError::Setup(format!(
                "ClickHouse at {}: table {} does not match the sink's schema: {problem}",
                self.url(),
                self.names.events()
            ))
        })
    }

    /// Health check, version detection, migrations (with `create_schema`), table check.
    async fn prepare(&self) -> Result<Prepared, SinkError> {
        let version = self.server_version().await?;
        let features = Features::of(&version);
        if self.config.create_schema {
            self.migrate(&version, &features).await?;
        }
        let layout = self.inspect_table().await?;
        if self.config.retention_days.is_some() && !features.ttl {
            tracing::warn!(
                sink = %self.name,
                server_version = %version,
                "this ClickHouse version has no TTL: retention_days is not applied"
            );
        }
        let prepared = Prepared {
            version,
            features,
            layout,
        };
        tracing::info!(
            sink = %self.name,
            url = %self.url(),
            server_version = %prepared.version,
            database = %self.config.database,
            table = %self.config.table,
            layout = prepared.layout.name(),
            "ClickHouse sink ready"
        );
        *self.prepared.lock().unwrap_or_else(|p| p.into_inner()) = Some(prepared.clone());
        Ok(prepared)
    }

    /// Inserts a batch as rows of type `R`, built by `row_of`; returns how many timestamps were
    /// clamped to the column type's range.
    async fn insert<'e, R: clickhouse::RowWrite>(
        &self,
        batch: &'e [Arc<Event>],
        prepared: &Prepared,
        row_of: impl Fn(&'e Event) -> (R::Value<'e>, u32),
    ) -> Result<u32, clickhouse::error::Error> {
        let mut insert = self
            .insert_client
            .insert::<R>(&self.config.table)
            .await?
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        if prepared.features.insert_dedup_token {
            insert = insert
                .with_setting(
                    "insert_deduplication_token",
                    dedup_token(batch.iter().map(|e| e.message_id.as_str())),
                )
                .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1");
        }
        let mut clamped = 0;
        for event in batch {
            let (row, row_clamped) = row_of(event.as_ref());
            clamped += row_clamped;
            insert.write(&row).await?;
        }
        insert.end().await?;
        Ok(clamped)
    }
}

/// The HTTP transport. For `http://` it is the crate's default with `TCP_NODELAY` set: the default
/// connector leaves Nagle's algorithm on, so the last frame of a streamed insert body waits for the
/// server's delayed ACK (about 40 ms per insert). `https://` uses the crate's rustls transport.
fn http_client(url: &str) -> Client {
    if url.starts_with("http://") {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let transport = HyperClient::builder(TokioExecutor::new())
            // Below the server's keep-alive (3 s on old servers, 10 s on new ones).
            .pool_idle_timeout(Duration::from_secs(2))
            .build(connector);
        Client::with_http_client(transport)
    } else {
        Client::default()
    }
}

#[async_trait]
impl Sink for ClickhouseSink {
    async fn start(&self) -> Result<(), SinkError> {
        self.prepare().await.map(|_| ())
    }

    async fn send(&self, batch: &[Arc<Event>]) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let prepared = match self.prepared() {
            Some(prepared) => prepared,
            None => self
                .prepare()
                .await
                .map_err(|e| SendError::Retryable(e.to_string()))?,
        };
        let started = Instant::now();
        let what = format!("insert into {}", self.names.events());
        let outcome = match prepared.layout {
            Layout::Modern => {
                self.bounded(self.insert::<ModernRow<'static>>(batch, &prepared, ModernRow::of))
                    .await
            }
            Layout::Legacy => {
                self.bounded(self.insert::<LegacyRow<'static>>(batch, &prepared, LegacyRow::of))
                    .await
            }
        };
        match outcome {
            Ok(clamped) => {
                if clamped > 0 {
                    tracing::warn!(
                        sink = %self.name,
                        timestamps = clamped,
                        "timestamps outside the column type's range were clamped"
                    );
                }
                tracing::debug!(
                    sink = %self.name,
                    rows = batch.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "inserted batch"
                );
                Ok(())
            }
            Err(error) => Err(classify(&what, &error)),
        }
    }

    async fn health(&self) -> Result<(), SinkError> {
        self.bounded(self.client.query("SELECT 1").fetch_one::<u8>())
            .await
            .map(|_| ())
            .map_err(|e| self.setup_error("answer the health check", &e))
    }

    /// `ALTER TABLE ... DELETE` (a mutation, which every supported server version has): the rows go
    /// once ClickHouse has applied it. Rollup tables hold only aggregates (counts, unique-user states)
    /// and keep them.
    async fn erase_person(&self, id: &str) -> Result<Option<String>, SinkError> {
        let table = self.names.events();
        let sql = format!(
            "ALTER TABLE {table} DELETE WHERE person_id = ? OR user_id = ? OR anonymous_id = ?"
        );
        self.bounded(self.client.query(&sql).bind(id).bind(id).bind(id).execute())
            .await
            .map_err(|e| self.setup_error("erase a person", &e))?;
        Ok(Some(format!("deletion submitted as a mutation on {table}")))
    }

    async fn export_person(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Option<Vec<serde_json::Value>>, SinkError> {
        let table = self.names.events();
        let sql = format!(
            "SELECT * FROM {table} FINAL WHERE person_id = ? OR user_id = ? OR anonymous_id = ? ORDER BY received_at LIMIT {limit}"
        );
        let mut cursor = self
            .client
            .query(&sql)
            .bind(id)
            .bind(id)
            .bind(id)
            .fetch_bytes("JSONEachRow")
            .map_err(|e| self.setup_error("export a person", &e))?;
        let bytes = self
            .bounded(cursor.collect())
            .await
            .map_err(|e| self.setup_error("export a person", &e))?;
        let mut rows = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
            let row = serde_json::from_slice(line).map_err(|e| {
                SinkError::Setup(format!("ClickHouse returned an unreadable row: {e}"))
            })?;
            rows.push(row);
        }
        Ok(Some(rows))
    }
}

#[cfg(test)]
mod tests;
