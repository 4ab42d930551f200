//! observer: see which network layer is failing on this host, from passive evidence.

use std::{process::ExitCode, time::Instant};

use clap::Parser as _;
use observer::{cli, config, daemon, present, run};

fn main() -> ExitCode {
    let started = Instant::now();
    // Bad flags: clap prints its message and exits 2.
    let cli = cli::Cli::parse();
    if let Some(cli::Command::Report(args)) = &cli.command {
        return match present::record::summary::run(args, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("observer report: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match &cli.command {
        Some(cli::Command::Daemon(args)) => {
            let args = args.clone();
            return exit(daemon::run(cli, args, started));
        }
        Some(cli::Command::Generate { what }) => {
            return match cli::generate(what, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("observer generate: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(cli::Command::Export(args)) => {
            return match daemon::export::run(&cli, args) {
                Ok(line) => {
                    eprintln!("observer: {line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("observer export: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    if cli.print_config {
        return match config::load(cli.config.as_deref(), &cli.set) {
            Ok(cfg) if cli.config.is_none() && cli.set.is_empty() && cfg == config::Config::default() => {
                print!("{}", config::DEFAULT_TOML);
                ExitCode::SUCCESS
            }
            Ok(cfg) => {
                print!("{}", toml::to_string(&cfg).expect("config serialises"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("observer: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // A daemon runs: attach to it (no privileges needed). Otherwise a probe of our own.
    match daemon::attach::connect(&cli) {
        Ok(Some(stream)) => exit(daemon::attach::run(cli, stream)),
        Ok(None) => exit(run::run(cli, started)),
        Err(e) => exit(Err(e)),
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("observer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
