//! The per-sink circuit breaker: Closed → Open → HalfOpen → Closed.
//!
//! When to open, and for how long, is decided by `failsafe` failure policies (consecutive failures, or
//! a success rate over a time window, each with an exponential open duration that grows with repeated
//! failed probes and resets once a probe succeeds). The state transitions and the open timer are ours and
//! run on tokio's clock, so the delivery runner can wait on it (and tests can pause time). While open,
//! the sink's runner simply waits: no calls to a dead destination, no memory growth (events wait in
//! the ingest log). One runner per sink means exactly one probe at a time in half-open.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use failsafe::backoff::{self, Exponential};
use failsafe::failure_policy::{
    self, ConsecutiveFailures, FailurePolicy, OrElse, SuccessRateOverTimeWindow,
};
use serde::Serialize;
use tokio::time::Instant;

use crate::settings::CircuitBreakerConfig;

/// The longest an open breaker waits before a probe, however often probes fail.
const MAX_OPEN: Duration = Duration::from_secs(300);

type Policy = OrElse<ConsecutiveFailures<Exponential>, SuccessRateOverTimeWindow<Exponential>>;

/// A breaker state as shown in status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of the `switchyard_sink_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// The breaker's state as published to readers outside the runner.
#[derive(Debug, Default)]
pub struct BreakerView {
    state: AtomicU8,
    /// Times the breaker opened.
    pub opened: AtomicU64,
}

impl BreakerView {
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Relaxed) {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    fn publish(&self, state: BreakerState) {
        self.state.store(state.as_gauge() as u8, Ordering::Relaxed);
    }
}

enum State {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// A sink's breaker, owned by its runner.
pub struct Breaker {
    policy: Policy,
    state: State,
    view: Arc<BreakerView>,
}

impl Breaker {
    pub fn new(config: &CircuitBreakerConfig, view: Arc<BreakerView>) -> Breaker {
        let open = Duration::from_secs(config.open_secs.max(1));
        let max_open = MAX_OPEN.max(open);
        let consecutive = failure_policy::consecutive_failures(
            config.consecutive_failures.max(1),
            backoff::exponential(open, max_open),
        );
        let rate = failure_policy::success_rate_over_time_window(
            (1.0 - config.failure_rate).clamp(0.0, 1.0),
            config.consecutive_failures.max(1),
            Duration::from_secs(config.window_secs.max(1)),
            backoff::exponential(open, max_open),
        );
        view.publish(BreakerState::Closed);
        Breaker {
            policy: consecutive.or_else(rate),
            state: State::Closed,
            view,
        }
    }

    /// The state now (an open breaker whose wait is over counts as half-open).
    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// When the next call may be made: None = now. Moves an expired open breaker to half-open.
    pub fn blocked_until(&mut self) -> Option<Instant> {
        if let State::Open { until } = self.state {
            if Instant::now() < until {
                return Some(until);
            }
            self.state = State::HalfOpen;
            self.view.publish(BreakerState::HalfOpen);
        }
        None
    }

    /// The destination answered (a delivered batch, or a permanent refusal: it is reachable).
    pub fn on_success(&mut self) {
        self.policy.record_success();
        if !matches!(self.state, State::Closed) {
            self.policy.revived();
            self.state = State::Closed;
            self.view.publish(BreakerState::Closed);
            tracing::info!("circuit breaker closed");
        }
    }

    /// A transient failure (network, timeout, 5xx, rate limit).
    pub fn on_failure(&mut self) {
        let open_for = match self.state {
            // A failed probe re-opens at once, for the policy's next (longer) duration.
            State::HalfOpen => Some(self.policy.mark_dead_on_failure().unwrap_or(MAX_OPEN)),
            _ => self.policy.mark_dead_on_failure(),
        };
        if let Some(duration) = open_for {
            self.state = State::Open {
                until: Instant::now() + duration,
            };
            self.view.publish(BreakerState::Open);
            self.view.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                open_ms = duration.as_millis() as u64,
                "circuit breaker opened"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(consecutive: u32, open_secs: u64) -> (Breaker, Arc<BreakerView>) {
        let view = Arc::new(BreakerView::default());
        let config = CircuitBreakerConfig {
            consecutive_failures: consecutive,
            failure_rate: 1.0,
            window_secs: 30,
            open_secs,
        };
        (Breaker::new(&config, view.clone()), view)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_after_the_wait() {
        let (mut breaker, view) = breaker(3, 10);
        for _ in 0..2 {
            breaker.on_failure();
            assert_eq!(breaker.state(), BreakerState::Closed);
            assert!(breaker.blocked_until().is_none());
        }
        breaker.on_failure();
        assert_eq!(view.state(), BreakerState::Open);
        let until = breaker.blocked_until().expect("open blocks calls");
        assert_eq!(until - Instant::now(), Duration::from_secs(10));

        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(breaker.blocked_until().is_some(), "still open after 9 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(breaker.blocked_until().is_none(), "one probe allowed");
        assert_eq!(view.state(), BreakerState::HalfOpen);

        breaker.on_success();
        assert_eq!(view.state(), BreakerState::Closed);
        assert_eq!(view.opened.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_reopen_for_longer_and_success_resets() {
        let (mut breaker, view) = breaker(1, 10);
        breaker.on_failure();
        let first = breaker.blocked_until().unwrap() - Instant::now();
        tokio::time::advance(first).await;
        assert!(breaker.blocked_until().is_none());
        breaker.on_failure(); // the probe fails
        assert_eq!(view.state(), BreakerState::Open);
        let second = breaker.blocked_until().unwrap() - Instant::now();
        assert!(second > first, "backoff grows: {first:?} then {second:?}");
        tokio::time::advance(second).await;
        assert!(breaker.blocked_until().is_none());
        breaker.on_success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        // After recovery the first wait is short again.
        breaker.on_failure();
        let again = breaker.blocked_until().unwrap() - Instant::now();
        assert_eq!(again, first);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_keep_it_closed() {
        let (mut breaker, view) = breaker(3, 10);
        for _ in 0..10 {
            breaker.on_failure();
            breaker.on_failure();
            breaker.on_success();
        }
        assert_eq!(view.state(), BreakerState::Closed);
        assert_eq!(view.opened.load(Ordering::Relaxed), 0);
    }
}
