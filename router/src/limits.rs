//! Protection against floods and hostile input: token-bucket rate limits per client IP and per source
//! (`governor`), and a one-pass scan of JSON nesting depth and member count that runs before parsing.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use switchyard_config::LimitsConfig;

/// The rate limiters of one config.
pub struct Limiters {
    clock: DefaultClock,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_source: Option<DefaultKeyedRateLimiter<String>>,
}

fn quota(per_second: u32, burst: Option<u32>) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl Limiters {
    pub fn new(config: &LimitsConfig) -> Limiters {
        Limiters {
            clock: DefaultClock::default(),
            per_ip: quota(config.requests_per_second_per_ip, config.burst_per_ip)
                .map(RateLimiter::keyed),
            per_source: quota(config.events_per_second_per_source, config.burst_per_source)
                .map(RateLimiter::keyed),
        }
    }

    /// Takes one request from the IP's bucket; Err(wait) when it is empty.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.per_ip else {
            return Ok(());
        };
        limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Takes `events` from the source's bucket; Err(wait) when it does not hold that many.
    pub fn check_source(&self, source: &str, events: usize) -> Result<(), Duration> {
        let Some(limiter) = &self.per_source else {
            return Ok(());
        };
        let Some(count) = NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        match limiter.check_key_n(&source.to_string(), count) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // More events than the whole bucket holds: it can never pass at this rate.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }

    /// Forgets idle keys so per-IP state stays bounded; call now and then.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_source {
            limiter.retain_recent();
        }
    }
}

/// Nesting depth and member count of a JSON text, found in one pass without parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonShape {
    pub max_depth: usize,
    /// Object members (`"key": value` pairs) at any depth.
    pub members: usize,
}

/// Scans `text` (which need not be valid JSON: the parser judges that later).
pub fn json_shape(text: &[u8]) -> JsonShape {
    let mut depth = 0usize;
    let mut shape = JsonShape {
        max_depth: 0,
        members: 0,
    };
    let mut in_string = false;
    let mut escaped = false;
    for byte in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if *byte == b'\\' {
                escaped = true;
            } else if *byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                shape.max_depth = shape.max_depth.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b':' => shape.members += 1,
            _ => {}
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_ignores_brackets_in_strings() {
        let shape = json_shape(br#"{"a": {"b": [1, {"c": "x:{[\"]"}]}, "d": 2}"#);
        assert_eq!(
            shape,
            JsonShape {
                max_depth: 4,
                members: 4
            }
        );
        assert_eq!(json_shape(&[b'['; 10_000]).max_depth, 10_000);
        assert_eq!(json_shape(b"").max_depth, 0);
    }

    #[test]
    fn ip_and_source_buckets() {
        let limiters = Limiters::new(&LimitsConfig {
            requests_per_second_per_ip: 2,
            events_per_second_per_source: 100,
            ..LimitsConfig::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiters.check_ip(ip).is_ok());
        assert!(limiters.check_ip(ip).is_ok());
        let wait = limiters.check_ip(ip).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(
            limiters.check_ip("192.0.2.2".parse().unwrap()).is_ok(),
            "per IP"
        );
        assert!(limiters.check_source("web", 60).is_ok());
        assert!(limiters.check_source("web", 60).is_err());
        assert!(limiters.check_source("ios", 60).is_ok(), "per source");
        assert!(
            limiters.check_source("web", 1000).is_err(),
            "over the bucket size"
        );
        let open = Limiters::new(&LimitsConfig::default());
        assert!((0..1000).all(|_| open.check_ip(ip).is_ok()));
    }
}
