//! The `switchyard` command line: run the router, validate a config, print the event schema.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::admin_client::{self, AdminCallError, AdminTarget};

/// Switchyard: an event router for product analytics.
#[derive(Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router (without --config: the built-in default, one file sink under ./switchyard-data).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config file; exit 0 when valid, 1 with every problem listed otherwise.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the JSON Schema of the canonical event.
    Schema,
    /// Print the built-in default config.
    DefaultConfig,
    /// Dry run of the sanitizer chains: NDJSON events on stdin, what the sink would receive on stdout,
    /// a summary of what was masked or dropped on stderr.
    Sanitize {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Apply this sink's consent category and per-sink chain after the global chain.
        #[arg(long)]
        sink: Option<String>,
    },
    /// Show or change a sink's rollout dial on a running switchyard.
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
    },
    /// Re-deliver retained ingest-log records to one sink (backfill a new sink, or repeat after a fix).
    Replay {
        #[arg(long)]
        sink: String,
        /// Replay records accepted at or after this time (RFC 3339).
        #[arg(long)]
        since: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// The reconciliation report: per sink and hour, offered / delivered / failed / dropped, and each
    /// partial or shadow sink against its reference.
    Report {
        /// Hours at or after this time (RFC 3339; default: the last 24 hours).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        sink: Option<String>,
        /// Print the JSON answer instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List or re-send a sink's dead letters.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Send the seeded synthetic demo events (users, sessions, a Signed Up -> Activated -> Purchased
    /// funnel) to a running switchyard, or print them as NDJSON with --print.
    Demo {
        /// The switchyard ingest address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A source's write key (not needed when no [sources] are configured).
        #[arg(long, env = "SWITCHYARD_WRITE_KEY")]
        write_key: Option<String>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 300)]
        users: usize,
        /// Days of history, ending today (or --end).
        #[arg(long, default_value_t = 56)]
        days: u32,
        /// Last day of the history (YYYY-MM-DD, UTC; default today).
        #[arg(long)]
        end: Option<String>,
        /// Print the events as NDJSON instead of sending them.
        #[arg(long)]
        print: bool,
    },
    /// Tracking plans: check a plan, test events against it, replay quarantined events.
    Plan {
        #[command(subcommand)]
        action: crate::plan_stage::PlanAction,
    },
}

#[derive(Subcommand)]
enum RolloutAction {
    /// Every sink with its rollout, breaker, lag and counters.
    Status {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Set a sink's percent (0 stops it) and optionally its mode.
    Set {
        sink: String,
        percent: f64,
        #[arg(long)]
        mode: Option<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// Count and show dead letters per sink, read from the data dir (works while switchyard is down).
    List {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        sink: Option<String>,
        /// Print every dead letter as NDJSON instead of a summary.
        #[arg(long)]
        full: bool,
    },
    /// Re-send a sink's dead letters through the running switchyard.
    Replay {
        #[arg(long)]
        sink: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// Posts `events` to `{url}/v1/batch` in batches of 500; stops at the first refused batch.
async fn send_demo(
    url: &str,
    write_key: Option<&str>,
    events: &[serde_json::Value],
) -> Result<(), String> {
    let client = reqwest::Client::new();
    let endpoint = format!("{}/v1/batch", url.trim_end_matches('/'));
    for chunk in events.chunks(500) {
        let mut request = client
            .post(&endpoint)
            .json(&serde_json::json!({ "batch": chunk }));
        if let Some(key) = write_key {
            request = request.basic_auth(key, Some(""));
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach {endpoint}: {}", e.without_url()))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("{endpoint} answered {status}: {body}"));
        }
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if answer["rejected"].as_array().is_some_and(|r| !r.is_empty()) {
            return Err(format!("some demo events were rejected: {body}"));
        }
    }
    Ok(())
}

fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, std::io::Error> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future))
}

fn print_admin_result(
    result: Result<Result<serde_json::Value, AdminCallError>, std::io::Error>,
    render: impl Fn(&serde_json::Value) -> String,
) -> ExitCode {
    match result {
        Ok(Ok(value)) => {
            println!("{}", render(&value));
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn list_dead_letters(config: Option<&PathBuf>, sink: Option<&str>, full: bool) -> ExitCode {
    let config = match crate::run::load_config(config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let dir = config.server.data_dir.join("dead-letters");
    let mut names: Vec<String> = match sink {
        Some(sink) => vec![sink.to_string()],
        None => config.sinks.keys().cloned().collect(),
    };
    names.sort();
    for name in names {
        let letters = match switchyard_sinks::dead_letter::read_dead_letters(
            &dir.join(format!("{name}.ndjson")),
        ) {
            Ok(letters) => letters,
            Err(error) => {
                eprintln!("{name}: {error}");
                return ExitCode::FAILURE;
            }
        };
        if full {
            for letter in &letters {
                println!(
                    "{}",
                    serde_json::json!({"sink": name, "dead_letter": letter})
                );
            }
            continue;
        }
        let mut by_error: std::collections::BTreeMap<&str, usize> =
            std::collections::BTreeMap::new();
        for letter in &letters {
            *by_error.entry(letter.error.as_str()).or_default() += 1;
        }
        println!("{name}: {} dead letters", letters.len());
        for (error, count) in by_error {
            println!("  {count:>8}  {error}");
        }
    }
    ExitCode::SUCCESS
}

/// Parses the command line and runs the command; the `switchyard` binary is just this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let loaded = match crate::run::load_config(config.as_ref()) {
                Ok(loaded) => loaded,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(2);
                }
            };
            crate::run::init_logging(loaded.server.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(crate::run::run(loaded, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { config } => match switchyard_config::load_file(&config) {
            Ok(parsed) => match crate::app::Runtime::new(parsed) {
                Ok(_) => {
                    println!("{}: valid", config.display());
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    eprintln!("invalid configuration ({} problems):", problems.len());
                    for problem in problems {
                        eprintln!("  - {problem}");
                    }
                    ExitCode::FAILURE
                }
            },
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Schema => {
            let schema = switchyard_schemas::Event::json_schema();
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("cannot print the schema: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DefaultConfig => {
            print!("{}", switchyard_config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Demo {
            url,
            write_key,
            seed,
            users,
            days,
            end,
            print,
        } => {
            let end = match end
                .as_deref()
                .map(|text| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d"))
            {
                None => chrono::Utc::now().date_naive(),
                Some(Ok(date)) => date,
                Some(Err(_)) => {
                    eprintln!("--end: expected a date like 2024-05-31");
                    return ExitCode::from(2);
                }
            };
            let events = crate::demo::generate(&crate::demo::DemoSpec {
                seed,
                users,
                days,
                end,
            });
            if print {
                for event in &events {
                    println!("{event}");
                }
                return ExitCode::SUCCESS;
            }
            match block_on(send_demo(&url, write_key.as_deref(), &events)) {
                Ok(Ok(())) => {
                    println!(
                        "sent {} demo events ({users} users, {days} days to {end}) to {url}",
                        events.len()
                    );
                    ExitCode::SUCCESS
                }
                Ok(Err(message)) => {
                    eprintln!("demo: {message}");
                    ExitCode::FAILURE
                }
                Err(error) => {
                    eprintln!("demo: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Report {
            since,
            sink,
            json,
            target,
        } => {
            let mut query = Vec::new();
            if let Some(since) = since {
                query.push(format!(
                    "since={}",
                    since.replace('+', "%2B").replace(':', "%3A")
                ));
            }
            if let Some(sink) = sink {
                query.push(format!("sink={sink}"));
            }
            let path = if query.is_empty() {
                "/admin/report".to_string()
            } else {
                format!("/admin/report?{}", query.join("&"))
            };
            let result = block_on(admin_client::call(
                &target,
                reqwest::Method::GET,
                &path,
                None,
            ));
            if json {
                print_admin_result(result, pretty)
            } else {
                print_admin_result(result, crate::report::render_text)
            }
        }
        Command::Sanitize { config, sink } => {
            let config = match crate::run::load_config(config.as_ref()) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(2);
                }
            };
            let stdin = std::io::stdin();
            let stdout = std::io::stdout();
            match crate::dry_run::run(
                &config,
                sink.as_deref(),
                stdin.lock(),
                std::io::BufWriter::new(stdout.lock()),
                std::io::stderr(),
            ) {
                Ok(summary) => {
                    eprintln!("{}", crate::dry_run::describe(&summary));
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Rollout {
            action: RolloutAction::Status { target },
        } => print_admin_result(
            block_on(admin_client::call(
                &target,
                reqwest::Method::GET,
                "/admin/sinks",
                None,
            )),
            admin_client::sinks_table,
        ),
        Command::Rollout {
            action:
                RolloutAction::Set {
                    sink,
                    percent,
                    mode,
                    target,
                },
        } => {
            let mut body = serde_json::json!({"percent": percent});
            if let Some(mode) = mode {
                body["mode"] = serde_json::Value::String(mode);
            }
            print_admin_result(
                block_on(admin_client::call(
                    &target,
                    reqwest::Method::PUT,
                    &format!("/admin/sinks/{sink}/rollout"),
                    Some(body),
                )),
                pretty,
            )
        }
        Command::Replay {
            sink,
            since,
            target,
        } => print_admin_result(
            block_on(admin_client::call(
                &target,
                reqwest::Method::POST,
                &format!("/admin/sinks/{sink}/replay"),
                Some(serde_json::json!({"since": since})),
            )),
            pretty,
        ),
        Command::DeadLetters {
            action: DeadLetterAction::List { config, sink, full },
        } => list_dead_letters(config.as_ref(), sink.as_deref(), full),
        Command::DeadLetters {
            action: DeadLetterAction::Replay { sink, target },
        } => print_admin_result(
            block_on(admin_client::call(
                &target,
                reqwest::Method::POST,
                &format!("/admin/sinks/{sink}/dead-letters/replay"),
                None,
            )),
            pretty,
        ),
        Command::Plan { action } => crate::plan_stage::run_command(action),
    }
}
