//! The `secret-agent` binary: arguments, logging, config, run.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use secret_agent::exec::{EnvVar, Exec, ExecSignals, OnChange, exit};
use secret_agent::{Application, Config, Serving, Signals};

/// The YAML read when no `--config` is given (and no `-l`).
const DEFAULT_CONFIG: &str = "/etc/secret-agent/config.yaml";

/// The AWS Secrets Manager Agent's binary names: installed under one of
/// them, the agent starts as it does without `--config`, on its defaults,
/// so that its wrappers (`secrets-manager-agent` in its Lambda extension)
/// run unchanged.
const AWS_AGENT_NAMES: [&str; 4] = [
    "secrets-manager-agent",
    "aws_secretsmanager_agent",
    "aws-secretsmanager-agent",
    "aws-workload-credentials-provider",
];

/// `--version`: the crate's version and the commit it was built from
/// (build.rs asks git; "unknown" when built outside a git checkout).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SECRET_AGENT_COMMIT"),
    ")"
);

/// Serves AWS Secrets Manager secrets to local applications from an in-memory cache.
#[derive(Parser)]
#[command(version = VERSION, about)]
struct Cli {
    /// The configuration file: this agent's YAML [default:
    /// /etc/secret-agent/config.yaml], or the AWS Secrets Manager Agent's
    /// TOML (a name ending in .toml), which serves as the AWS agent would.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Lambda mode, as the AWS agent's -l: nothing is served or fetched
    /// until GET /start_serving. Without --config, the AWS agent's defaults.
    #[arg(short = 'l', long)]
    lambda: bool,

    /// Validate the configuration, print a summary and exit (0 when valid).
    #[arg(long)]
    check: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The AWS Workload Credentials Provider's Secrets Manager commands.
    Sm {
        #[command(subcommand)]
        action: SmAction,
    },
    /// Print the YAML equivalent of an AWS Secrets Manager Agent TOML config.
    ConvertAwsAgentConfig {
        /// The AWS agent's config file (TOML).
        #[arg(value_name = "FILE.toml")]
        file: PathBuf,
        /// The AWS account whose secrets are served (12 digits); else the
        /// YAML says `caller`, the identity's own account, learnt at start.
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// The region of the secrets when the file sets none.
        #[arg(long, value_name = "REGION")]
        region: Option<String>,
    },
    /// Run PROGRAM (without a shell) with secrets in its environment, kept
    /// fresh. Exits with PROGRAM's exit code (128 + the signal's number when
    /// a signal killed it); 2 when the arguments or the config are not
    /// valid, 125 when a value cannot be read (PROGRAM is then not started),
    /// 126 when PROGRAM cannot be run, 127 when there is no such program.
    Exec(ExecArgs),
}

#[derive(clap::Args)]
struct ExecArgs {
    /// This agent's YAML [default: the --config before `exec`, else
    /// /etc/secret-agent/config.yaml].
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Sets the variable NAME to the value of RESOURCE (a configured name,
    /// or a name under a pattern), or of its JSON key KEY, resolved as
    /// GET /secrets/RESOURCE[/KEY] resolves it. Repeat for more variables.
    #[arg(long = "env", value_name = "NAME=RESOURCE[/KEY]")]
    env: Vec<EnvVar>,

    /// What to do when a value changes: none (the values are read once),
    /// restart (SIGTERM, wait up to service.shutdown-timeout, then SIGKILL;
    /// start PROGRAM again with the new values), exit (stop PROGRAM as
    /// restart does and exit with its code), or signal:NAME (send HUP, INT,
    /// QUIT, TERM, USR1, USR2 or WINCH; PROGRAM's environment cannot
    /// change, so this is for programs that re-read something else).
    #[arg(long, value_name = "ACTION", default_value = "none")]
    on_change: OnChange,

    /// Also serve the config's listeners (service.tcp, service.uds) while
    /// PROGRAM runs; without it, exec listens nowhere.
    #[arg(long)]
    listen: bool,

    /// PROGRAM and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    command: Vec<OsString>,
}

#[derive(clap::Subcommand)]
enum SmAction {
    /// Serve as the AWS Workload Credentials Provider's `sm start`: its
    /// TOML (nested or flat), or its defaults without --config.
    Start {
        /// The provider's config file (TOML).
        #[arg(short, long, value_name = "FILE.toml")]
        config: Option<PathBuf>,
    },
}

/// The packaging commands (.ci/package), parsed apart from [`Cli`] so that
/// neither `--help`, the man page nor the completions list them.
#[derive(Parser)]
#[command(name = "secret-agent")]
enum Packaging {
    /// Writes the man pages (secret-agent.1, one per subcommand) into DIR.
    GenerateMan {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// SHELL's completion script on standard output.
    GenerateCompletions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Packaging {
    /// The names [`Packaging`]'s commands go by, as the first argument.
    const NAMES: [&str; 2] = ["generate-man", "generate-completions"];

    /// Made from [`Cli`] itself, so they never drift from `--help`.
    fn run(self) -> ExitCode {
        use anyhow::Context;
        use clap::CommandFactory;
        use std::io::Write;
        let written = match self {
            Packaging::GenerateMan { dir } => clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display())),
            Packaging::GenerateCompletions { shell } => {
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "secret-agent", &mut script);
                let mut out = std::io::stdout().lock();
                out.write_all(&script)
                    .and_then(|()| out.flush())
                    .context("cannot write the completions")
            }
        };
        match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("secret-agent: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// `convert-aws-agent-config`: the YAML on standard output, notes on
/// standard error; exit 2 when the file cannot be read or converted.
fn convert(file: &std::path::Path, account: Option<&str>, region: Option<&str>) -> ExitCode {
    let shown = file.display().to_string();
    let text = match secret_agent::read_config_file(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("secret-agent: {e}");
            return ExitCode::from(2);
        }
    };
    match secret_agent::convert_aws_agent_config(&shown, &text, account, region) {
        Ok(conversion) => {
            print!("{}", conversion.yaml);
            for note in &conversion.notes {
                eprintln!("secret-agent: note: {note}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("secret-agent: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| Packaging::NAMES.iter().any(|name| first == *name))
    {
        return Packaging::parse().run();
    }
    let cli = Cli::parse();
    if let Some(Command::ConvertAwsAgentConfig {
        file,
        account,
        region,
    }) = &cli.command
    {
        return convert(file, account.as_deref(), region.as_deref());
    }
    if let Some(Command::Exec(args)) = &cli.command {
        return exec(&cli, args);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("secret-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        // No signal handlers here: SIGTERM and SIGINT end a check at once,
        // whatever it is reading.
        return match load(&cli, &runtime) {
            Ok(config) => print_summary(&config.summary()),
            Err(code) => code,
        };
    }
    // First, before anything slow: a SIGHUP, SIGTERM or SIGINT that arrives
    // while the agent starts must not kill it with the default action.
    let signals = match runtime.block_on(async { Signals::install() }) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("secret-agent: cannot watch for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match load(&cli, &runtime) {
        Ok(config) => config,
        Err(code) => return code,
    };

    secret_agent::install_logging(config.log_level);

    let result = runtime.block_on(async {
        let serving = if cli.lambda {
            Serving::OnStartServing
        } else {
            Serving::Now
        };
        Application::build(config, signals, serving)
            .await?
            .run_until_stopped()
            .await?;
        anyhow::Ok(())
    });
    // A reload's read abandoned on a hung file system must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
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

/// `secret-agent exec`: wiring only; the library runs the program.
fn exec(cli: &Cli, args: &ExecArgs) -> ExitCode {
    if cli.lambda || cli.check {
        eprintln!("secret-agent: exec does not take -l or --check");
        return ExitCode::from(exit::USAGE);
    }
    let Some((program, rest)) = args.command.split_first() else {
        eprintln!("secret-agent: exec: give the program to run after `--`");
        return ExitCode::from(exit::USAGE);
    };
    let exec = Exec {
        env: args.env.clone(),
        on_change: args.on_change,
        program: program.clone(),
        args: rest.to_vec(),
    };
    if let Err(e) = exec.validate() {
        eprintln!("secret-agent: exec: {e}");
        return ExitCode::from(exit::USAGE);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("secret-agent: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    // First: a signal that arrives while exec starts goes to the program,
    // or stops exec before it starts one.
    let signals = match runtime.block_on(async { ExecSignals::install() }) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("secret-agent: cannot watch for signals: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let file = args.config.as_deref().or(cli.config.as_deref());
    let config = match load_from(file, false, false, &runtime) {
        Ok(config) => config,
        Err(code) => return code,
    };
    secret_agent::install_logging(config.log_level);
    let code = runtime.block_on(async {
        match Application::build_for_exec(config, args.listen).await {
            Ok(app) => app.exec(exec, signals).await,
            Err(e) => {
                eprintln!("secret-agent: exec: {e:#}");
                exit::FAILED
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

/// The config `cli` names; on error, says why and gives exit code 2.
fn load(cli: &Cli, runtime: &tokio::runtime::Runtime) -> Result<Config, ExitCode> {
    let as_aws_agent = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|path| Some(path.file_name()?.to_str()?.to_owned()))
        .is_some_and(|name| AWS_AGENT_NAMES.contains(&name.as_str()));
    if let Some(Command::Sm {
        action: SmAction::Start { config },
    }) = &cli.command
    {
        if cli.config.is_some() {
            eprintln!("secret-agent: give the file once, as `sm start --config FILE.toml`");
            return Err(ExitCode::from(2));
        }
        return load_from(config.as_deref(), true, cli.check, runtime);
    }
    load_from(
        cli.config.as_deref(),
        cli.lambda || as_aws_agent,
        cli.check,
        runtime,
    )
}

/// `file`, or without one the AWS agent's defaults when `aws_defaults`,
/// else [`DEFAULT_CONFIG`], its `caller` account learnt unless `check`;
/// on error, says why and gives exit code 2.
fn load_from(
    file: Option<&Path>,
    aws_defaults: bool,
    check: bool,
    runtime: &tokio::runtime::Runtime,
) -> Result<Config, ExitCode> {
    let loaded = match (file, aws_defaults) {
        (Some(file), _) if is_toml(file) => runtime
            .block_on(secret_agent::aws_agent_config(Some(file)))
            .map_err(|e| format!("{e:#}")),
        (Some(file), _) => Config::load(file).map_err(|e| e.to_string()),
        (None, true) => runtime
            .block_on(secret_agent::aws_agent_config(None))
            .map_err(|e| format!("{e:#}")),
        (None, false) => Config::load(DEFAULT_CONFIG.as_ref()).map_err(|e| e.to_string()),
    };
    // `caller` ARNs: the account, asked of STS once (not by --check).
    let resolved = loaded.and_then(|config| {
        runtime
            .block_on(secret_agent::resolve_caller_account(config, check))
            .map_err(|e| format!("{e:#}"))
    });
    resolved.map_err(|e| {
        eprintln!("secret-agent: {e}");
        ExitCode::from(2)
    })
}

/// Whether `file` is the AWS agent's TOML rather than this agent's YAML.
fn is_toml(file: &Path) -> bool {
    file.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"))
}

/// Prints the `--check` summary; a reader that stops early (`| head -1`) is
/// not an error.
fn print_summary(summary: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(summary.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secret-agent: cannot print the summary: {e}");
            ExitCode::FAILURE
        }
    }
}
