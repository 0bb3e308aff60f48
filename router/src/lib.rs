//! Switchyard's router: the hyper server, ingest endpoints, enrichment, fan-out engine, admin API,
//! and the pieces of the `switchyard` binary.

pub mod admin;
pub mod admin_client;
pub mod allocator;
pub mod app;
pub mod body;
pub mod cli;
pub mod console;
pub mod cors;
pub mod dedupe;
pub mod demo;
pub mod dry_run;
pub mod engine;
pub mod freeing;
pub mod http;
pub mod ingest;
pub mod kpis;
pub mod limits;
pub mod lz_string;
pub mod metrics;
pub mod plan_stage;
pub mod posthog_capture;
pub mod privacy;
pub mod report;
pub mod run;
pub mod sessions;
pub mod tls;

pub use app::App;
