//! The `Sink` trait every destination implements, and the failure classification the delivery layer acts on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchyard_schemas::Event;

use crate::settings::SinkKind;

/// Why a send failed, which decides what the delivery layer does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A transient failure (network, timeout, 5xx): retried with backoff.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The destination asked us to slow down (429/503); retried after `retry_after` when given.
    #[error("rate limited: {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// The destination refused the batch itself (bad data, schema mismatch): never retried, the batch
    /// goes to the sink's dead-letter store with this message.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A sink could not be built or started (bad settings, unreachable at start-up).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}")]
    Setup(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A destination for events. Implementations translate and send; they do not retry or batch.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Prepares the destination (creates directories, tables) and checks it is reachable.
    async fn start(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Sends one batch. Either the whole batch is accepted, or the error says what to do with it.
    async fn send(&self, batch: &[Arc<Event>]) -> Result<(), SendError>;

    /// Like [`Sink::send`], with each event's canonical JSON as the ingest log holds it where the
    /// sink's own stage left the event unchanged (`None` where it changed it, or the bytes are not
    /// at hand). A sink that writes the canonical JSON overrides this to reuse the bytes instead of
    /// encoding every event again; the others keep this default.
    async fn send_with_json(
        &self,
        batch: &[Arc<Event>],
        json: &[Option<bytes::Bytes>],
    ) -> Result<(), SendError> {
        let _ = json;
        self.send(batch).await
    }

    /// A cheap reachability check for `/ready`.
    async fn health(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Deletes every stored event of a person (userId or anonymousId equal to `id`), for a privacy
    /// erasure request. `Ok(None)`: this sink keeps no queryable store (the default).
    async fn erase_person(&self, _id: &str) -> Result<Option<String>, SinkError> {
        Ok(None)
    }

    /// Every stored event of a person as JSON objects, oldest first, at most `limit`. `Ok(None)`: this
    /// sink keeps no queryable store (the default).
    async fn export_person(
        &self,
        _id: &str,
        _limit: usize,
    ) -> Result<Option<Vec<serde_json::Value>>, SinkError> {
        Ok(None)
    }
}

/// Builds the sink for a configured type. `name` is only used in error messages; sinks that split a
/// batch into several requests send up to `batch.max_concurrent_requests` of them at once.
pub fn build_sink(
    name: &str,
    kind: &SinkKind,
    batch: &crate::settings::BatchConfig,
) -> Result<Arc<dyn Sink>, SinkError> {
    let concurrent = batch.max_concurrent_requests;
    match kind {
        SinkKind::File(config) => Ok(Arc::new(crate::file::FileSink::new(name, config.clone()))),
        SinkKind::Clickhouse(config) => Ok(Arc::new(crate::clickhouse::ClickhouseSink::new(
            name,
            config.clone(),
        )?)),
        SinkKind::Posthog(config) => Ok(Arc::new(crate::posthog::PosthogSink::new(
            name,
            config.clone(),
            concurrent,
        )?)),
        SinkKind::Statsig(config) => Ok(Arc::new(crate::statsig::StatsigSink::new(
            name,
            config.clone(),
            concurrent,
        )?)),
        SinkKind::Ga4(config) => Ok(Arc::new(crate::ga4::Ga4Sink::new(
            name,
            config.clone(),
            concurrent,
        )?)),
        SinkKind::Webhook(config) => Ok(Arc::new(crate::webhook::WebhookSink::new(
            name,
            config.clone(),
        )?)),
    }
}
