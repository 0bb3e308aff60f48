//! `switchyard-loadgen`: drives a running Switchyard over loopback with `/v1/batch` requests built
//! from the shared corpus, flat out or at a fixed rate, for a bounded time, and reports accepted
//! events/s, requests/s, latency percentiles (HdrHistogram), errors by status, the sinks' delivered
//! events/s end to end (from `/metrics` or `/admin/sinks`, waiting a bounded time for the sinks to
//! drain), and the server's RSS and CPU time when given its pid.
//!
//! Latency at a fixed rate is measured from each request's scheduled send time (wrk2-style), so a
//! stalled server is not hidden by the generator waiting for it (coordinated omission). Only the
//! lateness of the generator's own timer is left out (tokio's timer wakes up to a millisecond after
//! the time asked for): see `TIMER_RESOLUTION`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use switchyard_benches::corpus::{self, BatchTemplate};

/// tokio's timer resolution: a sleep ends up to this long after its deadline. At most this much of a
/// late wake-up is left out of a fixed-rate request's latency; anything later (a generator starved
/// of CPU) still counts.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// Load generator for a running Switchyard (loopback only).
#[derive(Debug, Parser)]
#[command(name = "switchyard-loadgen", version)]
struct Args {
    /// Base URL of the Switchyard to drive; must be a loopback address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent connections (one request in flight on each).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Target events per second across all connections; 0 sends flat out.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Tokio worker threads of the generator (it shares the machine with the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write key sent as the HTTP Basic username (when the server has [sources]).
    #[arg(long)]
    write_key: Option<String>,
    /// Read the sinks' counters from `/admin/sinks` with this token instead of `/metrics`.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// At most this many seconds to wait after the run for every sink to drain (lag 0).
    #[arg(long, default_value_t = 60.0)]
    drain_timeout: f64,
    /// Pid of the switchyard process: its RSS (VmRSS) and CPU time are sampled during the run.
    #[arg(long)]
    pid: Option<u32>,
    /// Print a progress line every this many seconds (0: none).
    #[arg(long, default_value_t = 10.0)]
    report_every: f64,
    /// Print each request slower than this many milliseconds to stderr with its scheduled time
    /// since the start, to find what a latency tail lines up with (0: none).
    #[arg(long, default_value_t = 0.0)]
    trace_slow_ms: f64,
    /// Corpus seed (the same seed sends the same events, with fresh message ids).
    #[arg(long, default_value_t = corpus::DEFAULT_SEED)]
    seed: u64,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Every worker's counts and latencies.
struct Shared {
    requests_ok: AtomicU64,
    events_ok: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram<u64>>,
    stop: AtomicBool,
}

impl Shared {
    fn error(&self, kind: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(kind).or_default() += 1;
    }
}

struct Target {
    addr: SocketAddr,
    host: String,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("switchyard-loadgen: {message}");
    ExitCode::from(2)
}

/// Parses `http://host:port` and refuses anything that is not loopback.
fn target(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {url}: only http:// URLs are supported"))?;
    let host = rest.split('/').next().unwrap_or_default().to_string();
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("--url {url}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url}: no address"))?;
    let loopback = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    if !loopback {
        return Err(format!(
            "--url {url}: only loopback addresses are allowed (got {})",
            addr.ip()
        ));
    }
    Ok(Target { addr, host })
}

async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One request; the status and body on an answer.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(TABLE[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Worker {
    index: usize,
    target: Arc<Target>,
    templates: Arc<Vec<BatchTemplate>>,
    next_id: Arc<AtomicU64>,
    shared: Arc<Shared>,
    authorization: Option<String>,
    deadline: Instant,
    /// Seconds between this worker's requests at a fixed rate.
    interval: Option<f64>,
    start: Instant,
    batch: usize,
    concurrency: usize,
    /// Requests slower than this are printed (see `--trace-slow-ms`).
    trace_slow_micros: Option<u64>,
}

impl Worker {
    async fn run(self) {
        let mut histogram = match Histogram::<u64>::new_with_bounds(1, 120_000_000, 3) {
            Ok(h) => h,
            Err(_) => return,
        };
        let mut sender: Option<SendRequest<Full<Bytes>>> = None;
        let mut sent = 0u64;
        let mut body = Vec::new();
        // Stagger the workers over one interval at a fixed rate.
        let offset = self
            .interval
            .map(|i| i * self.index as f64 / self.concurrency.max(1) as f64)
            .unwrap_or(0.0);
        while !self.shared.stop.load(Ordering::Relaxed) {
            let scheduled = match self.interval {
                Some(interval) => {
                    let at = self.start + Duration::from_secs_f64(offset + interval * sent as f64);
                    if at >= self.deadline {
                        break;
                    }
                    if Instant::now() < at {
                        tokio::time::sleep_until(at.into()).await;
                        // Woken up to a timer tick late: that delay is the generator's, not the
                        // server's, so the request is timed from when it could first be sent. A
                        // worker already past `at` (its previous answer came late) times from `at`.
                        Instant::now().min(at + TIMER_RESOLUTION)
                    } else {
                        at
                    }
                }
                None => Instant::now(),
            };
            if Instant::now() >= self.deadline {
                break;
            }
            sent += 1;
            let mut ready = match sender.take() {
                Some(ready) => ready,
                None => match connect(&self.target).await {
                    Ok(ready) => ready,
                    Err(error) => {
                        self.shared.error(error);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let template = &self.templates[(self.index + sent as usize) % self.templates.len()];
            let first_id = self.next_id.fetch_add(self.batch as u64, Ordering::Relaxed);
            template.fill(&mut body, first_id);
            let mut request = Request::post("/v1/batch")
                .header(HOST, self.target.host.as_str())
                .header(CONTENT_TYPE, "application/json");
            if let Some(authorization) = &self.authorization {
                request = request.header(AUTHORIZATION, authorization.as_str());
            }
            let request = match request.body(Full::new(Bytes::from(std::mem::take(&mut body)))) {
                Ok(request) => request,
                Err(error) => {
                    self.shared.error(format!("request: {error}"));
                    break;
                }
            };
            match send(&mut ready, request).await {
                Ok((status, answer)) => {
                    let micros = scheduled.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                    histogram.saturating_record(micros.max(1));
                    if self.trace_slow_micros.is_some_and(|slow| micros > slow) {
                        eprintln!(
                            "slow request: scheduled at {:.3} s, {:.2} ms, connection {}",
                            scheduled
                                .saturating_duration_since(self.start)
                                .as_secs_f64(),
                            micros as f64 / 1000.0,
                            self.index
                        );
                    }
                    if status == 200 {
                        let accepted = serde_json::from_slice::<Value>(&answer)
                            .ok()
                            .and_then(|v| v["accepted"].as_u64())
                            .unwrap_or(0);
                        if accepted != self.batch as u64 {
                            self.shared
                                .error(format!("200 with accepted {accepted} of {}", self.batch));
                        }
                        self.shared.requests_ok.fetch_add(1, Ordering::Relaxed);
                        self.shared.events_ok.fetch_add(accepted, Ordering::Relaxed);
                    } else {
                        self.shared.error(format!("HTTP {status}"));
                    }
                    sender = Some(ready);
                }
                Err(error) => self.shared.error(error),
            }
        }
        let mut total = self
            .shared
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _ = total.add(&histogram);
    }
}

/// The sinks' counters as the server reports them.
#[derive(Debug, Clone, Default)]
struct SinkCounters {
    /// sink -> delivered events.
    delivered: BTreeMap<String, u64>,
    /// sink -> log records not yet passed.
    lag: BTreeMap<String, u64>,
    /// Events accepted by the server (every source).
    accepted: u64,
}

async fn get(target: &Target, path: &str, token: Option<&str>) -> Result<(u16, Bytes), String> {
    let mut sender = connect(target).await?;
    let mut request = Request::get(path).header(HOST, target.host.as_str());
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    send(&mut sender, request).await
}

/// `name{a="x",b="y"} 12` -> (name, labels, value).
fn parse_metric(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}')),
        None => (series, ""),
    };
    let labels = labels
        .split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.trim(), value.trim().trim_matches('"')))
        })
        .collect();
    Some((name, labels, value))
}

async fn read_counters(target: &Target, token: Option<&str>) -> Result<SinkCounters, String> {
    let mut counters = SinkCounters::default();
    let (status, body) = get(target, "/metrics", None).await?;
    if status != 200 {
        return Err(format!("GET /metrics answered {status}"));
    }
    let text = String::from_utf8_lossy(&body);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, labels, value)) = parse_metric(line) else {
            continue;
        };
        match name {
            "switchyard_sink_events_total" if labels.get("outcome") == Some(&"delivered") => {
                if let Some(sink) = labels.get("sink") {
                    counters.delivered.insert(sink.to_string(), value as u64);
                }
            }
            "switchyard_sink_lag_records" => {
                if let Some(sink) = labels.get("sink") {
                    counters.lag.insert(sink.to_string(), value as u64);
                }
            }
            "switchyard_ingest_events_accepted_total" => counters.accepted += value as u64,
            _ => {}
        }
    }
    if let Some(token) = token {
        let (status, body) = get(target, "/admin/sinks", Some(token)).await?;
        if status != 200 {
            return Err(format!("GET /admin/sinks answered {status}"));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        counters.delivered.clear();
        counters.lag.clear();
        for sink in answer["sinks"].as_array().into_iter().flatten() {
            let name = sink["name"].as_str().unwrap_or_default().to_string();
            counters.delivered.insert(
                name.clone(),
                sink["counters"]["delivered"].as_u64().unwrap_or(0),
            );
            counters
                .lag
                .insert(name, sink["lag_records"].as_u64().unwrap_or(0));
        }
    }
    Ok(counters)
}

/// VmRSS in kB, and utime + stime in clock ticks, of `pid`.
fn process_sample(pid: u32) -> Option<(u64, u64)> {
    let (rss, (user, system)) = process_sample_split(pid)?;
    Some((rss, user + system))
}

/// VmRSS in kB, and (utime, stime) in clock ticks, of `pid`.
fn process_sample_split(pid: u32) -> Option<(u64, (u64, u64))> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((rss, cpu_split(&format!("/proc/{pid}/stat"))?))
}

fn cpu_ticks(path: &str) -> Option<u64> {
    cpu_split(path).map(|(user, system)| user + system)
}

/// (utime, stime) in clock ticks from a /proc stat file.
fn cpu_split(path: &str) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at ") ".
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Default, Clone)]
struct RssSamples {
    /// (seconds since start, kB)
    samples: Vec<(f64, u64)>,
}

impl RssSamples {
    fn max_mb(&self) -> f64 {
        self.samples.iter().map(|s| s.1).max().unwrap_or(0) as f64 / 1024.0
    }

    /// Least-squares slope over the samples after the first fifth, in MB per minute.
    fn slope_mb_per_minute(&self) -> f64 {
        let skip = self.samples.len() / 5;
        let points = &self.samples[skip..];
        if points.len() < 3 {
            return 0.0;
        }
        let n = points.len() as f64;
        let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_r = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
        let numerator: f64 = points
            .iter()
            .map(|p| (p.0 - mean_t) * (p.1 as f64 - mean_r))
            .sum();
        let denominator: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
        if denominator == 0.0 {
            0.0
        } else {
            numerator / denominator * 60.0 / 1024.0
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.batch == 0 || args.concurrency == 0 || args.threads == 0 {
        return fail("--batch, --concurrency and --threads must be at least 1");
    }
    if !(args.duration > 0.0 && args.duration <= 24.0 * 3600.0) {
        return fail("--duration must be between 0 and 86400 seconds");
    }
    if args.rate < 0.0 || !args.rate.is_finite() {
        return fail("--rate must be 0 (flat out) or a positive number of events per second");
    }
    if !(0.0..=3600.0).contains(&args.drain_timeout) {
        return fail("--drain-timeout must be between 0 and 3600 seconds");
    }
    let target = match target(&args.url) {
        Ok(target) => Arc::new(target),
        Err(error) => return fail(error),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("tokio runtime: {error}")),
    };
    runtime.block_on(run(args, target))
}

async fn run(args: Args, target: Arc<Target>) -> ExitCode {
    // Templates: the corpus in batches of `--batch`, ids patched per request.
    let wanted = args.batch.max(1000).div_ceil(args.batch) * args.batch;
    let messages = corpus::messages(wanted.max(args.batch * 4), args.seed);
    let run_id = format!(
        "{:08x}",
        (chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64) & 0xffff_ffff
    );
    let templates: Arc<Vec<BatchTemplate>> = Arc::new(
        messages
            .chunks(args.batch)
            .filter(|chunk| chunk.len() == args.batch)
            .map(|chunk| BatchTemplate::new(chunk, &run_id))
            .collect(),
    );
    let body_bytes = templates.first().map(|t| t.body.len()).unwrap_or(0);
    let token = args.admin_token.as_deref();
    let before = match read_counters(&target, token).await {
        Ok(counters) => counters,
        Err(error) => return fail(format!("cannot read the server's counters: {error}")),
    };
    let mode = if args.rate > 0.0 {
        format!("{} events/s", args.rate)
    } else {
        "flat out".to_string()
    };
    println!(
        "switchyard-loadgen: {} for {}s, batch {} (~{} KB/request), {} connections, {} generator thread(s), sinks {:?}",
        mode,
        args.duration,
        args.batch,
        body_bytes / 1024,
        args.concurrency,
        args.threads,
        before.delivered.keys().collect::<Vec<_>>()
    );

    let shared = Arc::new(Shared {
        requests_ok: AtomicU64::new(0),
        events_ok: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
        latency: Mutex::new(match Histogram::new_with_bounds(1, 120_000_000, 3) {
            Ok(h) => h,
            Err(error) => return fail(format!("histogram: {error}")),
        }),
        stop: AtomicBool::new(false),
    });
    let authorization = args
        .write_key
        .as_ref()
        .map(|key| format!("Basic {}", base64(format!("{key}:").as_bytes())));
    let interval =
        (args.rate > 0.0).then(|| args.concurrency as f64 * args.batch as f64 / args.rate);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let next_id = Arc::new(AtomicU64::new(0));
    let self_ticks_start = cpu_ticks("/proc/self/stat").unwrap_or(0);
    let server_start = args.pid.and_then(process_sample_split);
    let mut workers = Vec::new();
    for index in 0..args.concurrency {
        let worker = Worker {
            index,
            target: target.clone(),
            templates: templates.clone(),
            next_id: next_id.clone(),
            shared: shared.clone(),
            authorization: authorization.clone(),
            deadline,
            interval,
            start,
            batch: args.batch,
            concurrency: args.concurrency,
            trace_slow_micros: (args.trace_slow_ms > 0.0)
                .then_some((args.trace_slow_ms * 1000.0) as u64),
        };
        workers.push(tokio::spawn(worker.run()));
    }

    // Progress and RSS sampling until the deadline.
    let mut rss = RssSamples::default();
    let mut last_report = start;
    let mut last_events = 0u64;
    let report_every = Duration::from_secs_f64(args.report_every.max(0.0));
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250).min(deadline - Instant::now())).await;
        let elapsed = start.elapsed().as_secs_f64();
        let sample = args.pid.and_then(process_sample);
        if let Some((kb, _)) = sample {
            rss.samples.push((elapsed, kb));
        }
        if !report_every.is_zero() && last_report.elapsed() >= report_every {
            let events = shared.events_ok.load(Ordering::Relaxed);
            let rate = (events - last_events) as f64 / last_report.elapsed().as_secs_f64();
            let rss_text = sample
                .map(|(kb, _)| format!(", RSS {:.1} MB", kb as f64 / 1024.0))
                .unwrap_or_default();
            println!("  t={elapsed:6.1}s  accepted {rate:>10.0} events/s{rss_text}");
            last_report = Instant::now();
            last_events = events;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let sent_seconds = start.elapsed().as_secs_f64();
    let self_cpu = cpu_ticks("/proc/self/stat")
        .unwrap_or(0)
        .saturating_sub(self_ticks_start) as f64
        / TICKS_PER_SECOND;
    let server_end = args.pid.and_then(process_sample_split);
    let at_end = read_counters(&target, token).await.ok();

    // Wait (bounded) for every sink to pass everything appended.
    let drain_started = Instant::now();
    let drain_deadline = drain_started + Duration::from_secs_f64(args.drain_timeout);
    let mut after = at_end.clone();
    let mut drained = false;
    loop {
        if let Some(counters) = &after {
            if counters.lag.values().all(|lag| *lag == 0) {
                drained = true;
                break;
            }
        }
        if Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some((kb, _)) = args.pid.and_then(process_sample) {
            rss.samples.push((start.elapsed().as_secs_f64(), kb));
        }
        after = read_counters(&target, token).await.ok();
    }
    let drain_seconds = drain_started.elapsed().as_secs_f64();

    let events = shared.events_ok.load(Ordering::Relaxed);
    let requests = shared.requests_ok.load(Ordering::Relaxed);
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let latency = shared
        .latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let events_per_second = events as f64 / sent_seconds;
    println!("\n== client side ({sent_seconds:.1} s of sending)");
    println!(
        "accepted   {events} events in {requests} requests: {events_per_second:.0} events/s, {:.0} requests/s",
        requests as f64 / sent_seconds
    );
    println!(
        "latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} samples{})",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1000.0,
        latency.len(),
        if interval.is_some() {
            ", from scheduled send times"
        } else {
            ""
        }
    );
    if errors.is_empty() {
        println!("errors     none");
    } else {
        println!("errors     {errors:?}");
    }
    println!(
        "generator  {self_cpu:.1} CPU-s ({:.0}% of one core)",
        self_cpu / sent_seconds * 100.0
    );

    let mut sinks_json = serde_json::Map::new();
    println!("\n== server side");
    if let (Some(end), Some(after)) = (&at_end, &after) {
        let accepted_server = after.accepted.saturating_sub(before.accepted);
        println!("accepted (server counter) {accepted_server} events");
        for (sink, delivered_after) in &after.delivered {
            let base = before.delivered.get(sink).copied().unwrap_or(0);
            let in_run = end
                .delivered
                .get(sink)
                .copied()
                .unwrap_or(0)
                .saturating_sub(base);
            let total = delivered_after.saturating_sub(base);
            let end_to_end =
                total as f64 / (sent_seconds + if drained { drain_seconds } else { 0.0 });
            println!(
                "sink {sink:<12} delivered {total} events ({:.0}/s within the run, {:.0}/s end to end incl. {:.1} s drain{}), lag now {} records",
                in_run as f64 / sent_seconds,
                end_to_end,
                drain_seconds,
                if drained { "" } else { ", NOT drained" },
                after.lag.get(sink).copied().unwrap_or(0),
            );
            sinks_json.insert(
                sink.clone(),
                json!({"delivered": total, "delivered_in_run": in_run,
                       "delivered_per_second_in_run": in_run as f64 / sent_seconds,
                       "delivered_per_second_end_to_end": end_to_end,
                       "lag_records": after.lag.get(sink)}),
            );
        }
        println!(
            "drain      {} after {drain_seconds:.1} s",
            if drained { "complete" } else { "INCOMPLETE" }
        );
    } else {
        println!("(could not read the server's counters after the run)");
    }
    let mut server_cpu = None;
    if let (Some((_, (user_start, system_start))), Some((_, (user_end, system_end)))) =
        (server_start, server_end)
    {
        let user = user_end.saturating_sub(user_start) as f64 / TICKS_PER_SECOND;
        let system = system_end.saturating_sub(system_start) as f64 / TICKS_PER_SECOND;
        let cpu = user + system;
        server_cpu = Some(cpu);
        println!(
            "server CPU {cpu:.1} CPU-s during the run ({:.0}% of one core; {:.1} us/event; user {user:.1} s, kernel {system:.1} s)",
            cpu / sent_seconds * 100.0,
            cpu * 1e6 / events.max(1) as f64
        );
    }
    if !rss.samples.is_empty() {
        println!(
            "server RSS first {:.1} MB, max {:.1} MB, last {:.1} MB, slope {:+.2} MB/min ({} samples)",
            rss.samples[0].1 as f64 / 1024.0,
            rss.max_mb(),
            rss.samples[rss.samples.len() - 1].1 as f64 / 1024.0,
            rss.slope_mb_per_minute(),
            rss.samples.len()
        );
    }
    if let Some(path) = &args.json {
        let summary = json!({
            "duration_s": sent_seconds, "batch": args.batch, "concurrency": args.concurrency,
            "rate_target": args.rate, "events": events, "requests": requests,
            "events_per_second": events_per_second,
            "requests_per_second": requests as f64 / sent_seconds,
            "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
                           "max": latency.max() as f64 / 1000.0},
            "errors": errors, "sinks": sinks_json, "drained": drained, "drain_s": drain_seconds,
            "generator_cpu_s": self_cpu, "server_cpu_s": server_cpu,
            "rss_mb": {"max": rss.max_mb(), "slope_mb_per_min": rss.slope_mb_per_minute(),
                       "first": rss.samples.first().map(|s| s.1 as f64 / 1024.0),
                       "last": rss.samples.last().map(|s| s.1 as f64 / 1024.0)},
        });
        if let Err(error) = std::fs::write(path, summary.to_string()) {
            eprintln!(
                "switchyard-loadgen: cannot write {}: {error}",
                path.display()
            );
        }
    }
    if events == 0 {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_lines() {
        let (name, labels, value) =
            parse_metric(r#"switchyard_sink_events_total{sink="local",outcome="delivered"} 42"#)
                .unwrap();
        assert_eq!(name, "switchyard_sink_events_total");
        assert_eq!(labels["sink"], "local");
        assert_eq!(labels["outcome"], "delivered");
        assert_eq!(value, 42.0);
    }

    #[test]
    fn only_loopback_targets() {
        assert!(target("http://127.0.0.1:8080").is_ok());
        assert!(target("http://10.0.0.1:8080").is_err());
        assert!(target("https://127.0.0.1:8080").is_err());
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b"wk_web_1:"), "d2tfd2ViXzE6");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
