//! The `switchyard` command line: run the router, validate a config, print the event schema.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    }
}
