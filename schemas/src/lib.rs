//! The canonical Switchyard event, its JSON Schema, and normalisation of Segment-spec messages into it.

pub mod event;
pub mod json_writer;
pub mod plan;
pub mod posthog;
pub mod segment;
pub mod time;

pub use event::{Event, EventType, JsonMap};
pub use segment::{
    normalize_message, BatchEnvelope, InboundMessage, MessageDefaults, NormalizeError,
};
