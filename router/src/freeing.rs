//! Freeing an evicted log record's events one at a time while a request decodes its own, so that
//! the memory each freed event gives back is what the next decoded message takes.
//!
//! Why: freeing a whole record (a request's worth of events, ~40 small objects each) before the
//! decode overfills jemalloc's per-thread cache, which then flushes most of the objects to the
//! arenas, and the decode refills the cache from the arenas object by object. Freeing one event per
//! decoded message keeps the cache level: the objects go back out as they came in, while still in
//! the CPU's cache.

use std::cell::RefCell;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use switchyard_schemas::Event;
use switchyard_sinks::log::Record;

thread_local! {
    /// The events of the record being freed on this thread (its capacity is kept between requests).
    static PENDING: RefCell<Vec<Arc<Event>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `decode` (synchronous, so it stays on this thread) while the events of `retired` are freed
/// one per [`free_one_pending`] call; whatever is left is freed when `decode` returns.
pub fn while_freeing<T>(retired: Option<Record>, decode: impl FnOnce() -> T) -> T {
    if let Some(record) = retired {
        PENDING.with_borrow_mut(|pending| pending.extend(record.events.iter().cloned()));
        // The record's own references go here; the events now live only in PENDING (a sink that
        // still held one would keep it alive, which is only slower, never wrong).
        drop(record);
    }
    let decoded = decode();
    // Taken out of the cell before the rest are dropped: an event's drop must not run while the
    // cell is borrowed. The emptied list goes back for the next request, unless it grew huge.
    let mut rest = PENDING.with_borrow_mut(std::mem::take);
    rest.clear();
    if rest.capacity() <= KEEP_CAPACITY_AT_MOST {
        PENDING.with_borrow_mut(|pending| *pending = rest);
    }
    decoded
}

/// Frees one event of the record handed to [`while_freeing`] on this thread, if any is left.
pub fn free_one_pending() {
    let event = PENDING.with_borrow_mut(|pending| pending.pop());
    drop(event);
}

/// Past this many events the list's buffer is not kept (a burst of huge records must not pin
/// memory on every worker thread).
const KEEP_CAPACITY_AT_MOST: usize = 4096;

/// A message that frees one pending event once it is decoded (see [`while_freeing`]).
pub struct FreeingOne<M>(pub M);

impl<'de, M: Deserialize<'de>> Deserialize<'de> for FreeingOne<M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let message = M::deserialize(deserializer)?;
        free_one_pending();
        Ok(FreeingOne(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_schemas::segment::BatchEnvelope;

    fn event(id: &str) -> Arc<Event> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "type": "track", "event": "E", "messageId": id, "userId": "u",
                "timestamp": "2024-01-01T00:00:00Z", "receivedAt": "2024-01-01T00:00:00Z",
                "source": "s"
            }))
            .unwrap(),
        )
    }

    fn record(events: &[Arc<Event>]) -> Record {
        Record {
            seq: 1,
            appended_at_ms: 0,
            bytes: 0,
            events: events.iter().cloned().collect(),
            json: Arc::from(Vec::new()),
            routing_marks: false,
        }
    }

    #[test]
    fn each_decoded_message_frees_one_event_and_the_rest_are_freed_at_the_end() {
        let events: Vec<Arc<Event>> = (0..5).map(|i| event(&format!("m{i}"))).collect();
        // Weak references tell which events have been freed at each step.
        let watch: Vec<_> = events.iter().map(Arc::downgrade).collect();
        let retired = record(&events);
        drop(events);
        let alive = || watch.iter().filter(|w| w.upgrade().is_some()).count();
        let seen = while_freeing(Some(retired), || {
            let mut seen = vec![alive()];
            let body = r#"{"batch": [{"type": "track"}, {"type": "page"}]}"#;
            let decoded: BatchEnvelope<FreeingOne<serde_json::Value>> =
                serde_json::from_str(body).unwrap();
            seen.push(alive());
            assert_eq!(decoded.batch.len(), 2);
            seen
        });
        assert_eq!(seen, vec![5, 3]);
        assert_eq!(alive(), 0);
        PENDING.with_borrow(|pending| assert!(pending.is_empty()));
    }

    #[test]
    fn without_a_retired_record_decoding_frees_nothing_and_still_works() {
        let decoded = while_freeing(None, || {
            free_one_pending();
            serde_json::from_str::<FreeingOne<u32>>("7").unwrap().0
        });
        assert_eq!(decoded, 7);
    }
}
