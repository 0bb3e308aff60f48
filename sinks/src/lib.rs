//! Sinks: the `Sink` trait, the durable ingest log, the shared delivery machinery, and one module per sink.
//!
//! A sink only translates a batch to its wire format, sends it, and classifies failures. Everything
//! generic — reading the ingest log at the sink's own cursor, rollout decisions, batching, retries,
//! dead letters and counters — lives once, in [`delivery`].

pub mod breaker;
pub mod clickhouse;
pub mod dead_letter;
pub mod delivery;
pub mod file;
pub mod ga4;
pub mod http;
pub mod log;
pub mod posthog;
pub mod report;
pub mod rollout;
pub mod settings;
pub mod sink;
pub mod statsig;
pub mod webhook;
mod writeback;

pub use settings::{SinkKind, SinkSettings};
pub use sink::{build_sink, SendError, Sink, SinkError};
