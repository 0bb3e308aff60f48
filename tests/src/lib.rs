//! End-to-end test harness: starts the real switchyard command on 127.0.0.1 with a config in a temp
//! dir, talks to it over HTTP, and reads what its sinks wrote.

pub mod clickhouse;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod fakes;

/// Path of the switchyard command built for these tests. Cargo builds the package's binaries before
/// its integration tests, next to the `deps/` folder the test executable runs from.
pub fn binary() -> PathBuf {
    let test_exe = std::env::current_exe().expect("current test executable");
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> folder");
    let binary = profile_dir.join(format!("switchyard-e2e{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test`",
        binary.display()
    );
    binary
}

/// A running switchyard process with its own data dir.
pub struct Switchyard {
    pub child: Child,
    pub base_url: String,
    pub admin_url: Option<String>,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    stderr_path: PathBuf,
}

/// A config with one file sink and the admin API (token [`ADMIN_TOKEN`]): the smallest setup for
/// tests of the admin, KPI and console endpoints.
pub const FILE_SINK_WITH_ADMIN: &str = r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{dir}/data"
[admin]
token = "${ADMIN_TOKEN}"
[sinks.local]
type = "file"
path = "{dir}/events"
"#;

/// The admin token the harness configures when a config asks for `${ADMIN_TOKEN}`.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

impl Switchyard {
    /// Writes `config` (where `{dir}` stands for the data dir) and starts switchyard on it.
    pub fn start(dir: &Path, config: &str) -> Switchyard {
        let config_path = dir.join("switchyard.toml");
        std::fs::write(
            &config_path,
            config.replace("{dir}", &dir.display().to_string()),
        )
        .unwrap();
        Switchyard::start_with_file(dir, &config_path)
    }

    /// Starts switchyard on an existing config file.
    pub fn start_with_file(dir: &Path, config_path: &Path) -> Switchyard {
        let stderr_path = dir.join(format!("stderr-{}.log", std::process::id()));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .unwrap();
        let mut child = Command::new(binary())
            .arg("run")
            .arg("--config")
            .arg(config_path)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn switchyard");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut base_url = None;
        let mut admin_url = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(url) = line.strip_prefix("switchyard listening on ") {
                base_url = Some(url.trim().to_string());
            } else if let Some(url) = line.strip_prefix("switchyard admin listening on ") {
                admin_url = Some(url.trim().to_string());
            }
            if base_url.is_some() && (admin_url.is_some() || !config_has_admin_listen(config_path))
            {
                break;
            }
        }
        let Some(base_url) = base_url else {
            let _ = child.kill();
            panic!(
                "switchyard did not start: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Switchyard {
            child,
            base_url,
            admin_url,
            dir: dir.to_path_buf(),
            config_path: config_path.to_path_buf(),
            stderr_path,
        }
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// What the process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let status = wait_with_timeout(&mut self.child, Duration::from_secs(60));
        std::mem::forget(self);
        status
    }

    /// Kills the process with SIGKILL (a crash).
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    /// Sends SIGHUP (reload).
    pub fn hangup(&self) {
        signal(self.child.id(), "HUP");
    }
}

fn config_has_admin_listen(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .map(|text| {
            let mut in_admin = false;
            text.lines().any(|line| {
                let line = line.trim();
                if line.starts_with('[') {
                    in_admin = line == "[admin]";
                }
                in_admin && line.starts_with("listen")
            })
        })
        .unwrap_or(false)
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every NDJSON line in every `events-*.ndjson` file under `dir`, parsed, in file order.
pub fn read_ndjson_dir(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    let mut events = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            events.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad NDJSON line in {}: {e}", file.display())),
            );
        }
    }
    events
}

/// Polls `check` until it returns Some or `timeout` passes.
pub async fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `dir` holds at least `count` events, and returns them.
pub async fn wait_for_events(dir: &Path, count: usize, timeout: Duration) -> Vec<Value> {
    let found = eventually(timeout, || {
        let events = read_ndjson_dir(dir);
        (events.len() >= count).then_some(events)
    })
    .await;
    match found {
        Some(events) => events,
        None => panic!(
            "expected {count} events in {}, found {}",
            dir.display(),
            read_ndjson_dir(dir).len()
        ),
    }
}

/// A track message with the given id.
pub fn track(message_id: &str, user: &str) -> Value {
    serde_json::json!({
        "type": "track", "event": "Order Completed", "userId": user, "messageId": message_id,
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"total": 42.5, "currency": "EUR", "items": [{"sku": "A-1", "qty": 2}]},
        "context": {"library": {"name": "analytics-node", "version": "2.1.0"}, "page": {"path": "/checkout"}}
    })
}

/// An HTTP client for the tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}
