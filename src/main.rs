//! The `sluice` command line: run a config, check one, or start the built-in demo.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice::config::Scheduler;
use sluice::{Config, DrainOutcome, Server};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

const DEFAULT_CONFIG: &str = "/etc/sluice/sluice.yaml";

#[derive(Parser)]
#[command(name = "sluice", version, about = "An L4/L7 load balancer daemon")]
struct Cli {
    /// Config file (default: /etc/sluice/sluice.yaml; without it and without a command, the demo runs).
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    /// Validate the config and exit 0 (valid) or 1 (invalid), like `nginx -t`.
    #[arg(short = 't', long = "check", alias = "test")]
    check: bool,
    /// Print nothing on success with --check.
    #[arg(short = 'q', long = "quiet", global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon with the config file (the default command).
    Run,
    /// Validate the config file and exit 0/1 without opening any socket.
    Check {
        /// Also print what reloading from this running config file to the checked one would do.
        #[arg(long, value_name = "RUNNING_CONFIG")]
        diff: Option<PathBuf>,
    },
    /// Run N static HTTP backends on consecutive loopback ports (for benchmarks); prints
    /// their addresses, one a line. Each answers `GET /_backend/requests` with the number of
    /// requests it served (not counting that one or health checks at `/health`).
    #[command(hide = true)]
    Backends {
        /// How many backends.
        #[arg(long, default_value_t = 4)]
        count: usize,
        /// First port; the others follow.
        #[arg(long)]
        first_port: u16,
        /// Response body size in bytes.
        #[arg(long, default_value_t = 13)]
        body_size: usize,
    },
    /// Show pools and backends of a running sluice (state, reason, load) as a table.
    Status {
        /// Admin address (default: admin.bind from the config file, else 127.0.0.1:9900).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Print the raw JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running sluice to reload its config file now (like SIGHUP, but answers).
    Reload {
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Stop sending new work to a backend (in-flight work finishes); kept across reloads.
    Drain {
        pool: String,
        /// IP:PORT or unix:/path.
        backend: sluice::config::BackendAddress,
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Undo a drain.
    Enable {
        pool: String,
        /// IP:PORT or unix:/path.
        backend: sluice::config::BackendAddress,
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Print the version and how this binary was built.
    Version,
    /// Print the man page (roff) to stdout: `sluice man > sluice.8`.
    #[command(hide = true)]
    Man,
    /// Register a backend in etcd under a lease kept alive while this runs (or while COMMAND
    /// runs); SIGTERM/SIGINT or the command's exit deletes the key.
    Register {
        /// etcd endpoint, http://HOST:PORT (repeat or comma-separate for several).
        #[arg(long = "etcd", required = true, value_delimiter = ',')]
        etcd: Vec<String>,
        /// Key directory the pool's etcd source follows, e.g. /services/app/.
        #[arg(long)]
        prefix: String,
        /// The backend's address, IP:PORT (the key is PREFIX + ADDRESS).
        #[arg(long)]
        address: SocketAddr,
        /// The backend's weight (stored as {"weight": N}; 1 stores an empty value).
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Lease TTL: a registrant killed outright is removed after this long.
        #[arg(long, default_value = "10s", value_parser = parse_ttl)]
        ttl: std::time::Duration,
        /// Command to run; the registration lasts while it runs and its exit status is ours.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Start three hello backends and a listener in front of them.
    Demo {
        /// Where the demo listener binds.
        #[arg(long, default_value = sluice::demo::DEFAULT_DEMO_LISTEN)]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sluice: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once, rendered as the library renders every error
/// (`sluice::error::chain`): anyhow's `{:#}` would repeat a cause that a foreign error type
/// already prints in its own message.
fn describe(error: &anyhow::Error) -> String {
    sluice::error::chain(error.as_ref())
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd, stderr is a journal stream: send records to journald natively instead, so
    // each has its priority (`journalctl -p warning` works) and a multi-line message (a config
    // error with its caret snippet) stays one entry.
    if stderr_is_journal()
        && let Ok(journal) = tracing_journald::layer()
    {
        let journal = journal.with_syslog_identifier("sluice".to_owned());
        tracing_subscriber::registry()
            .with(filter)
            .with(journal)
            .init();
        return;
    }
    // Plain lines without ANSI colours unless on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM` names its device
/// and inode, as systemd.exec(5) says to check): not merely inherited by a child process.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.split_once(':') else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse() == Ok(stderr.dev()) && inode.parse() == Ok(stderr.ino())
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let explicit = cli.config.clone();
    let config_path = explicit
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match cli.command {
        _ if cli.check => Ok(check(&config_path, None, cli.quiet)),
        Some(Command::Check { diff }) => Ok(check(&config_path, diff.as_deref(), cli.quiet)),
        Some(Command::Demo { listen }) => run_demo(listen),
        Some(Command::Version) => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            println!(
                "built for {} ({}), TLS: none yet, YAML: serde-saphyr",
                std::env::consts::ARCH,
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Man) => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).section("8");
            page.render(&mut std::io::stdout())
                .context("cannot write the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Status { admin, json }) => {
            let admin = admin_address(admin, &config_path);
            let (_, body) = admin_call(admin, http::Method::GET, "/status")?;
            if json {
                print!("{body}");
            } else {
                let value: serde_json::Value = serde_json::from_str(&body)
                    .with_context(|| format!("unexpected answer from {admin}"))?;
                print!("{}", sluice::cli::status_table(&value));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Reload { admin }) => {
            admin_action(admin_address(admin, &config_path), "/reload")
        }
        Some(Command::Drain {
            pool,
            backend,
            admin,
        }) => admin_action(
            admin_address(admin, &config_path),
            &format!("/pools/{pool}/backends/{}/drain", path_segment(&backend)),
        ),
        Some(Command::Enable {
            pool,
            backend,
            admin,
        }) => admin_action(
            admin_address(admin, &config_path),
            &format!("/pools/{pool}/backends/{}/enable", path_segment(&backend)),
        ),
        Some(Command::Backends {
            count,
            first_port,
            body_size,
        }) => run_backends(count, first_port, body_size),
        Some(Command::Register {
            etcd,
            prefix,
            address,
            weight,
            ttl,
            command,
        }) => {
            let options = sluice::discovery::register::RegisterOptions::new(
                etcd, &prefix, address, weight, ttl,
            )?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let code = runtime.block_on(sluice::discovery::register::run(options, &command))?;
            Ok(ExitCode::from(code))
        }
        Some(Command::Run) => run(&config_path),
        None if explicit.is_none() && !config_path.exists() => {
            tracing::info!("no config file at {DEFAULT_CONFIG} and no -c given: starting the demo");
            run_demo(sluice::demo::DEFAULT_DEMO_LISTEN.parse()?)
        }
        None => run(&config_path),
    }
}

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    sluice::config::parse_duration(text)
}

/// The admin address: given, else the config file's `admin.bind`, else the default.
/// A backend address as one URL path segment (a unix path's slashes escaped; the admin API
/// decodes them).
fn path_segment(backend: &sluice::config::BackendAddress) -> String {
    backend.to_string().replace('/', "%2F")
}

fn admin_address(given: Option<SocketAddr>, config_path: &Path) -> SocketAddr {
    given
        .or_else(|| {
            Config::load(config_path)
                .ok()
                .and_then(|c| c.admin.map(|a| a.bind))
        })
        .unwrap_or_else(|| {
            sluice::config::DEFAULT_ADMIN_BIND
                .parse()
                .expect("the default admin address is valid")
        })
}

fn admin_call(admin: SocketAddr, method: http::Method, path: &str) -> Result<(u16, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(sluice::cli::admin_request(admin, method, path))?)
}

/// POSTs an admin action and prints the answer; exit 1 unless it succeeded.
fn admin_action(admin: SocketAddr, path: &str) -> Result<ExitCode> {
    let (status, body) = admin_call(admin, http::Method::POST, path)?;
    print!("{body}");
    Ok(if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check(path: &Path, running: Option<&Path>, quiet: bool) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            if let Some(running) = running {
                match Config::load(running) {
                    Ok(old) => print!("{}", sluice::config::diff::diff(&old, &config)),
                    Err(error) => {
                        eprintln!("sluice: running config: {}", sluice::error::Chain(&error));
                        return ExitCode::FAILURE;
                    }
                }
            }
            if !quiet {
                println!(
                    "sluice: configuration file {} is valid ({} listeners, {} pools)",
                    path.display(),
                    config.listeners.len(),
                    config.pools.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sluice: {}", sluice::error::Chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Every proxied connection costs two descriptors; the usual soft limit of 1024 would cap
/// sluice near 500 clients. Raise the soft limit to the hard one, as nginx/HAProxy advise.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
    }
}

fn runtime(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    raise_fd_limit();
    // One worker: a current-thread runtime serves everything from the main thread, with no
    // work-stealing bookkeeping and no cross-thread wake-ups (what nginx's and HAProxy's
    // single event loop do). More: the multi-thread scheduler.
    let mut builder = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().thread_name("sluice-worker");
    if let Some(threads) = worker_threads.filter(|&n| n > 1) {
        builder.worker_threads(threads);
    }
    builder.build().context("cannot start the async runtime")
}

fn run(path: &Path) -> Result<ExitCode> {
    // The runtime's thread count comes from the config, so the file is read before it starts,
    // once; the server runs exactly that config.
    let (mut config, text) = Config::load_with_text(path)?;
    let threads = config.runtime.worker_threads.unwrap_or_else(cpus);
    config.runtime.worker_threads = Some(threads);
    let runtime = match config.runtime.scheduler {
        // This thread runs the control plane (reloads, probes, discovery, admin, signals);
        // the server starts `threads` worker threads for the connections (none for one: this
        // thread serves them too, as HAProxy's single thread does).
        Scheduler::PerThread => runtime(Some(1))?,
        Scheduler::WorkStealing => runtime(Some(threads))?,
    };
    runtime.block_on(async {
        let server = Server::start_loaded(config, path, text).await?;
        let outcome = server.run_until_signal().await?;
        Ok(exit_code(outcome))
    })
}

fn run_demo(listen: SocketAddr) -> Result<ExitCode> {
    let runtime = runtime(None)?;
    runtime.block_on(async {
        let config = sluice::demo::demo_config(listen).await?;
        let server = Server::start(config).await.context(
            "cannot start the demo listener (is the port free? try --listen 127.0.0.1:8081)",
        )?;
        let addr = server.local_addr("demo").unwrap_or(listen);
        println!("sluice demo: 3 hello backends behind http://{addr}/");
        println!("try:  for i in 1 2 3 4 5 6; do curl -s http://{addr}/; done");
        println!("stop: Ctrl-C");
        let outcome = server.run_until_signal().await?;
        Ok(exit_code(outcome))
    })
}

fn run_backends(count: usize, first_port: u16, body_size: usize) -> Result<ExitCode> {
    let runtime = runtime(Some(cpus()))?;
    runtime.block_on(async {
        let body = bytes::Bytes::from(vec![b'x'; body_size]);
        for number in 0..count {
            let port = first_port
                .checked_add(number as u16)
                .context("port out of range")?;
            let bind = SocketAddr::from(([127, 0, 0, 1], port));
            let addr = sluice::demo::spawn_counting_backend(number + 1, bind, body.clone()).await?;
            println!("{addr}");
        }
        tokio::signal::ctrl_c().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The CPUs this process may run on (1 when unknown): the default thread count.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A drain that hit its deadline is still a clean, requested stop: exit 0 as nginx does.
fn exit_code(_outcome: DrainOutcome) -> ExitCode {
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn each_cause_is_said_once() {
        let bind = sluice::Error::Bind {
            name: "web".into(),
            addr: "127.0.0.1:80".into(),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use"),
        };
        let error = anyhow::Error::from(bind);
        assert_eq!(
            describe(&error),
            "cannot bind listener web on 127.0.0.1:80: Address already in use"
        );
        // A context anyhow adds keeps the cause it wraps.
        let wrapped =
            anyhow::Error::from(std::io::Error::other("no threads")).context("cannot start");
        assert_eq!(describe(&wrapped), "cannot start: no threads");
    }
}
