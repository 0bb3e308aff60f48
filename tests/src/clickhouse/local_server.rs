//! A throw-away ClickHouse server for tests: `clickhouse-server` on free loopback ports with its own
//! temporary data directory and a minimal config written here (nothing from /etc/clickhouse-server,
//! no systemd). A small supervisor shell stops the server when the test process exits, however it
//! exits. Only std and tempfile: this file is also compiled into the sinks crate's tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password of the `switchyard` user the config defines (the `default` user has none).
pub const PASSWORD_USER: (&str, &str) = ("switchyard", "s3cret-for-tests");

/// How long a server may take to answer `/ping` after being started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Watches the test process and the server; stops the server when either is gone or on TERM.
/// Arguments: the test's pid, the server command, the config file, the log file, and a directory
/// to remove once the server has exited ("" for none).
const SUPERVISOR: &str = r#"
owner="$1"; cleanup="$6"
"$2" $5 --config-file="$3" >>"$4" 2>&1 &
server=$!
stop() { kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null; [ -n "$cleanup" ] && rm -rf "$cleanup"; exit 0; }
trap stop TERM INT
while kill -0 "$owner" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.2; done
stop
"#;

/// A running (or stopped) local ClickHouse server.
pub struct LocalClickhouse {
    root: PathBuf,
    /// Deletes `root` on drop; None when the supervisor deletes it instead.
    _temp: Option<tempfile::TempDir>,
    cleanup_by_supervisor: bool,
    http_port: u16,
    tcp_port: u16,
    supervisor: Option<Child>,
}

/// The server binary: `clickhouse-server` (Debian's package), or `clickhouse server`.
fn server_command() -> Result<(PathBuf, &'static str), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    for (name, argument) in [("clickhouse-server", ""), ("clickhouse", "server")] {
        if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
            return Ok((found, argument));
        }
    }
    Err(
        "no clickhouse-server binary found: install the Debian package `clickhouse-server` \
         (./scripts/test.sh does)"
            .to_string(),
    )
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn config_xml(root: &Path, http_port: u16, tcp_port: u16) -> String {
    let root = root.display();
    format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{root}/log/server.log</log>
        <errorlog>{root}/log/error.log</errorlog>
        <size>10M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{root}/data/</path>
    <tmp_path>{root}/tmp/</tmp_path>
    <user_files_path>{root}/user_files/</user_files_path>
    <format_schema_path>{root}/format_schemas/</format_schema_path>
    <users_config>{root}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <keep_alive_timeout>3</keep_alive_timeout>
</yandex>
"#
    )
}

fn users_xml() -> String {
    let (user, password) = PASSWORD_USER;
    let networks = "<networks><ip>127.0.0.1</ip><ip>::1</ip></networks>";
    format!(
        r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage><log_queries>1</log_queries></default></profiles>
    <users>
        <default><password></password>{networks}<profile>default</profile><quota>default</quota></default>
        <{user}><password>{password}</password>{networks}<profile>default</profile><quota>default</quota></{user}>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#
    )
}

impl LocalClickhouse {
    /// Starts a server owned by the caller: stopped and deleted on drop.
    pub fn start() -> Result<LocalClickhouse, String> {
        LocalClickhouse::start_with(false)
    }

    /// Starts a server meant to live as long as the test process (a shared `static`): the
    /// supervisor stops it and deletes its data when the process exits.
    pub fn start_for_process() -> Result<LocalClickhouse, String> {
        LocalClickhouse::start_with(true)
    }

    fn start_with(cleanup_by_supervisor: bool) -> Result<LocalClickhouse, String> {
        let temp = tempfile::Builder::new()
            .prefix("switchyard-clickhouse-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let root = temp.path().to_path_buf();
        let temp = if cleanup_by_supervisor {
            // The supervisor removes the directory after the server exits.
            let _ = temp.keep();
            None
        } else {
            Some(temp)
        };
        let mut last_error = String::new();
        // A port picked as free can be taken before the server binds it: try a few times.
        for _ in 0..3 {
            let mut server = LocalClickhouse {
                root: root.clone(),
                _temp: None,
                cleanup_by_supervisor,
                http_port: free_port()?,
                tcp_port: free_port()?,
                supervisor: None,
            };
            if server.http_port == server.tcp_port {
                continue;
            }
            // (Again on every try: a failed try's supervisor may have removed the directory.)
            for sub in ["log", "data", "tmp", "user_files", "format_schemas"] {
                std::fs::create_dir_all(root.join(sub)).map_err(|e| format!("{sub}: {e}"))?;
            }
            std::fs::write(root.join("users.xml"), users_xml()).map_err(|e| e.to_string())?;
            std::fs::write(
                root.join("config.xml"),
                config_xml(&root, server.http_port, server.tcp_port),
            )
            .map_err(|e| e.to_string())?;
            match server.launch() {
                Ok(()) => {
                    server._temp = temp;
                    return Ok(server);
                }
                Err(error) => {
                    server.stop();
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    /// Spawns the supervisor and waits for `/ping`.
    fn launch(&mut self) -> Result<(), String> {
        let (binary, argument) = server_command()?;
        let cleanup = if self.cleanup_by_supervisor {
            self.root.display().to_string()
        } else {
            String::new()
        };
        let child = Command::new("bash")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("supervisor")
            .arg(std::process::id().to_string())
            .arg(&binary)
            .arg(self.root.join("config.xml"))
            .arg(self.root.join("log/stdout.log"))
            .arg(argument)
            .arg(cleanup)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run bash to start {}: {e}", binary.display()))?;
        self.supervisor = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.ping() {
                return Ok(());
            }
            if let Some(child) = self.supervisor.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "clickhouse-server did not start on port {}: {}",
            self.http_port,
            self.log_tail()
        ))
    }

    /// Whether the server answers `GET /ping` with `Ok.`.
    pub fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.http_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("Ok.")
    }

    /// The last lines of the server's logs (for failure messages).
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        for name in ["log/stdout.log", "log/error.log"] {
            let content = std::fs::read_to_string(self.root.join(name)).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            text.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
            text.push('\n');
        }
        text
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The native protocol port, for `clickhouse-client --port`.
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// Stops the server (SIGTERM, then waits); the data stays for [`LocalClickhouse::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.supervisor.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // A stopped server must not accept connections any more.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same ports and data.
    pub fn restart(&mut self) -> Result<(), String> {
        if self.cleanup_by_supervisor {
            return Err("a process-wide server is not restarted (its data goes with it)".into());
        }
        self.stop();
        self.launch()
    }
}

impl Drop for LocalClickhouse {
    fn drop(&mut self) {
        self.stop();
    }
}
