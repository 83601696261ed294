//! The `secret-agent` binary: arguments, logging, config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use secret_agent::config::Config;
use secret_agent::server::Application;

/// Serves AWS Secrets Manager secrets to local applications from an in-memory cache.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The YAML configuration file.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "/etc/secret-agent/config.yaml"
    )]
    config: PathBuf,

    /// Validate the configuration, print a summary and exit (0 when valid).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("secret-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        print!("{}", config.summary());
        return ExitCode::SUCCESS;
    }

    // Everything passes env_logger's own filter unless RUST_LOG narrows it;
    // the global maximum level comes from the config, so a reload can move it.
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Trace)
        .parse_env("RUST_LOG")
        .init();
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(config.log_level);
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("secret-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        Application::build(config)
            .await?
            .run_until_stopped()
            .await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("secret-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
