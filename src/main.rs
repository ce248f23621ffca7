//! The `sluice` command line: run a config, check one, or start the built-in demo.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use sluice::config::Scheduler;
use sluice::{Config, DrainOutcome, Server};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

// mimalloc instead of glibc's malloc: fewer instructions per request and less memory per idle
// connection (figures in the commit that made the change).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG: &str = "/etc/sluice/sluice.yaml";

/// How `sluice` exits, shown in `--help` and in the man page's EXIT STATUS.
const EXIT_STATUS: &str = "\
Exit status:
  0  success: the config is valid (check), the daemon stopped cleanly (run, demo), the
     running sluice did what was asked (status, reload, drain, enable) or is ready (ready)
  1  failure: an invalid config, a daemon that could not start, a reload or an action the
     running sluice refused, an admin listener that could not be reached
  2  usage error: an unknown command or option, a missing or malformed argument
  register with a COMMAND exits with that command's status";

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "An L4/L7 load balancer daemon",
    long_about = "An L4/L7 load balancer daemon: HTTP and TCP listeners, backend pools, health \
checks, hot reload. Without a command it runs the config file; without a config file and \
without -c, it starts the demo.",
    after_help = EXIT_STATUS
)]
struct Cli {
    /// Config file to run or check (default: /etc/sluice/sluice.yaml; without it and without
    /// a command, the demo runs).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the config and exit 0 (valid) or 1 (invalid), like `nginx -t` (`sluice check`).
    #[arg(short = 't', long = "check", alias = "test")]
    check: bool,
    /// With -t: print nothing on success.
    #[arg(short = 'q', long = "quiet", requires = "check")]
    quiet: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `-c FILE` for the commands that read the config file.
#[derive(Args)]
struct ConfigFile {
    /// Config file (default: /etc/sluice/sluice.yaml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// How the operator commands find the running sluice, and what they print.
#[derive(Args)]
struct AdminArgs {
    /// Admin address (default: admin.bind from the config file, else 127.0.0.1:9900).
    #[arg(long, value_name = "IP:PORT")]
    admin: Option<SocketAddr>,
    /// Config file whose admin.bind to use (default: /etc/sluice/sluice.yaml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the admin API's JSON answer instead of text (for scripts).
    #[arg(long)]
    json: bool,
}

/// The admin token the actions send (`reload`, `drain`, `enable`).
#[derive(Args)]
struct TokenArgs {
    /// File holding the admin token to send as `Authorization: Bearer TOKEN`. Without it: the
    /// token in the SLUICE_ADMIN_TOKEN environment variable, else the file named by the config
    /// file's admin.token_file, else none (enough on loopback while the daemon has no token).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon with the config file (the default command).
    Run {
        #[command(flatten)]
        file: ConfigFile,
    },
    /// Validate the config file and exit 0/1 without opening any socket.
    Check {
        #[command(flatten)]
        file: ConfigFile,
        /// Print nothing on success.
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
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
        /// Answer that many bytes of JSON (`application/json`) instead of `x`s.
        #[arg(long)]
        json: bool,
        /// Address to bind. 0.0.0.0 answers on every 127.x.y.z, so that a benchmark can
        /// name thousands of distinct backends with a few sockets (loadtest.py's `scale`).
        #[arg(long, default_value = "127.0.0.1")]
        ip: std::net::IpAddr,
    },
    /// Exit 0 if a running sluice answers /ready on its admin listener within the timeout,
    /// else 1; prints nothing on success (for keepalived's track_script and other probes).
    Ready {
        /// Admin address (default: admin.bind from the config file, else 127.0.0.1:9900).
        #[arg(long, value_name = "IP:PORT")]
        admin: Option<SocketAddr>,
        /// Config file whose admin.bind to use (default: /etc/sluice/sluice.yaml).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// How long to wait for the answer: a hung daemon counts as not ready.
        #[arg(long, default_value = "1s", value_parser = parse_ttl)]
        timeout: std::time::Duration,
    },
    /// Show pools and backends of a running sluice (state, reason, load) as a table.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Ask a running sluice to reload its config file now (like SIGHUP, but answers).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Stop sending new work to a backend (in-flight work finishes); kept across reloads.
    Drain {
        /// The pool's name.
        pool: String,
        /// IP:PORT or unix:/path.
        backend: sluice::config::BackendAddress,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Undo a drain.
    Enable {
        /// The pool's name.
        pool: String,
        /// IP:PORT or unix:/path.
        backend: sluice::config::BackendAddress,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Print the version and what this binary was built with.
    Version,
    /// Print the man page sluice(8) (roff) to stdout, or write it and one page per command
    /// (sluice-run(8), sluice-check(8), ...) into a directory.
    Man {
        /// Write sluice.8 and sluice-COMMAND.8 here instead of printing sluice.8.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Register a backend in etcd (a key under a lease), Consul (a service instance with a
    /// TTL check) or ZooKeeper (an ephemeral znode) for as long as this runs (or while COMMAND
    /// runs); SIGTERM/SIGINT or the command's exit deregisters it.
    #[command(group(clap::ArgGroup::new("registry").required(true).args(["etcd", "consul", "zookeeper"])))]
    Register {
        /// etcd endpoint, http://HOST:PORT (repeat or comma-separate for several).
        #[arg(long = "etcd", value_delimiter = ',', requires = "prefix")]
        etcd: Vec<String>,
        /// With --etcd: key directory the pool's etcd source follows, e.g. /services/app/.
        #[arg(long)]
        prefix: Option<String>,
        /// Consul agent, http://HOST:PORT or https://HOST:PORT (usually the local agent).
        #[arg(long, value_name = "URL", requires = "service")]
        consul: Option<String>,
        /// With --consul: the service name the pool's consul source follows.
        #[arg(long)]
        service: Option<String>,
        /// With --consul: a tag of the instance (repeat for several).
        #[arg(long = "tag", requires = "consul")]
        tags: Vec<String>,
        /// With --consul: file holding the ACL token sent as X-Consul-Token.
        #[arg(long, value_name = "FILE", requires = "consul")]
        token_file: Option<PathBuf>,
        /// With an https:// --consul: trust only this CA bundle (PEM) instead of the public roots.
        #[arg(long, value_name = "FILE", requires = "consul")]
        ca: Option<PathBuf>,
        /// ZooKeeper servers, HOST:PORT (repeat or comma-separate for several).
        #[arg(
            long = "zookeeper",
            value_delimiter = ',',
            value_name = "HOSTS",
            requires = "path"
        )]
        zookeeper: Vec<String>,
        /// With --zookeeper: the znode the pool's zookeeper source follows, e.g. /services/app.
        #[arg(long)]
        path: Option<String>,
        /// The backend's address, IP:PORT (the etcd key is PREFIX + ADDRESS, the znode
        /// PATH/ADDRESS).
        #[arg(long)]
        address: SocketAddr,
        /// The backend's weight (etcd/ZooKeeper: {"weight": N}, 1 stores an empty value;
        /// Consul: Weights.Passing).
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// A registrant killed outright is removed after this long: the etcd lease TTL, the
        /// Consul check TTL (critical, then removed after 1 min), the ZooKeeper session timeout.
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
    sluice::memory::without_huge_pages();
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
    // `sluice -c FILE check` still works: a command's own -c wins over the top-level one.
    let top = cli.config;
    let file = |own: Option<PathBuf>| {
        own.or_else(|| top.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    };
    match cli.command {
        _ if cli.check => Ok(check(&file(None), None, cli.quiet)),
        Some(Command::Check {
            file: own,
            quiet,
            diff,
        }) => Ok(check(&file(own.config), diff.as_deref(), quiet)),
        Some(Command::Demo { listen }) => run_demo(listen),
        Some(Command::Version) => {
            print!("{}", build_description());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Man { dir }) => {
            let command = <Cli as clap::CommandFactory>::command();
            match dir {
                Some(dir) => {
                    for page in sluice::cli::man::pages(command, EXIT_STATUS) {
                        let path = dir.join(&page.file_name);
                        std::fs::write(&path, page.roff)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                }
                None => {
                    use std::io::Write;
                    let page = sluice::cli::man::main_page(command, EXIT_STATUS);
                    std::io::stdout()
                        .write_all(page.roff.as_bytes())
                        .context("cannot write the man page")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Ready {
            admin,
            config,
            timeout,
        }) => {
            // keepalived runs this every second: with --admin, no config file is parsed.
            let admin = match admin {
                Some(admin) => admin,
                None => admin_target(None, &file(config)).0,
            };
            Ok(ready(admin, timeout))
        }
        Some(Command::Status { admin: args }) => {
            let (admin, _) = admin_target(args.admin, &file(args.config));
            let (status, body) = admin_call(admin, http::Method::GET, "/status", None)?;
            if args.json {
                print!("{body}");
            } else if (200..300).contains(&status) {
                let value: serde_json::Value = serde_json::from_str(&body)
                    .with_context(|| format!("unexpected answer from {admin}"))?;
                print!("{}", sluice::cli::status_table(&value));
            } else {
                eprintln!("sluice: {admin} answered {status}: {}", body.trim_end());
            }
            Ok(exit_status(status))
        }
        Some(Command::Reload { admin: args, token }) => {
            let (admin, config_token) = admin_target(args.admin, &file(args.config));
            let token = action_token(&token, config_token.as_deref())?;
            let (status, body) =
                admin_call(admin, http::Method::POST, "/reload", token.as_deref())?;
            if args.json {
                print!("{body}");
            } else {
                human_answer(status, &sluice::cli::reload_outcome(status, &body));
            }
            Ok(exit_status(status))
        }
        Some(Command::Drain {
            pool,
            backend,
            admin: args,
            token,
        }) => backend_action(
            &pool,
            &backend,
            "drain",
            &args,
            &token,
            &file(args.config.clone()),
        ),
        Some(Command::Enable {
            pool,
            backend,
            admin: args,
            token,
        }) => backend_action(
            &pool,
            &backend,
            "enable",
            &args,
            &token,
            &file(args.config.clone()),
        ),
        Some(Command::Backends {
            count,
            first_port,
            body_size,
            json,
            ip,
        }) => run_backends(count, first_port, body_size, json, ip),
        Some(Command::Register {
            etcd,
            prefix,
            consul,
            service,
            tags,
            token_file,
            ca,
            zookeeper,
            path,
            address,
            weight,
            ttl,
            command,
        }) => {
            use sluice::discovery::register::{
                ConsulOptions, EtcdOptions, RegisterOptions, ZooKeeperOptions,
            };
            let options = if let Some(consul) = consul {
                let service = service.unwrap_or_default();
                RegisterOptions::Consul(
                    ConsulOptions::new(&consul, &service, address, weight, ttl, tags)?
                        .with_credentials(token_file, ca)?,
                )
            } else if !zookeeper.is_empty() {
                let path = path.unwrap_or_default();
                RegisterOptions::ZooKeeper(ZooKeeperOptions::new(
                    &zookeeper, &path, address, weight, ttl,
                )?)
            } else {
                let prefix = prefix.unwrap_or_default();
                RegisterOptions::Etcd(EtcdOptions::new(etcd, &prefix, address, weight, ttl)?)
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let code = runtime.block_on(sluice::discovery::register::run(options, &command))?;
            Ok(ExitCode::from(code))
        }
        Some(Command::Run { file: own }) => run(&file(own.config)),
        None if top.is_none() && !Path::new(DEFAULT_CONFIG).exists() => {
            tracing::info!("no config file at {DEFAULT_CONFIG} and no -c given: starting the demo");
            run_demo(sluice::demo::DEFAULT_DEMO_LISTEN.parse()?)
        }
        None => run(&file(None)),
    }
}

/// `sluice version`: what this binary is and what is compiled in (every item is built
/// unconditionally: sluice has no cargo features).
fn build_description() -> String {
    format!(
        "sluice {version}\n\
         build: {profile}, {arch}-{os}\n\
         TLS: rustls with the ring provider, TLS 1.2 and 1.3, ALPN h2 and http/1.1 (termination, passthrough by SNI, to backends with mutual TLS)\n\
         HTTP: HTTP/1.0, HTTP/1.1, HTTP/2 (h2c and over TLS; to backends: protocol h2, gRPC), WebSocket and Upgrade tunnels\n\
         L4: TCP with splice(2), unix sockets, PROXY protocol v1 and v2\n\
         discovery: DNS (SRV, A/AAAA), file, etcd (v3 JSON gateway), ZooKeeper\n\
         config: YAML (serde-saphyr); logs: stderr or journald, access logs combined or JSON; metrics: Prometheus\n",
        version = env!("CARGO_PKG_VERSION"),
        profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        arch = std::env::consts::ARCH,
        os = std::env::consts::OS,
    )
}

/// Exit 0 for a 2xx answer of the admin API, 1 otherwise.
/// `sluice ready`: 0 when `/ready` answers 200 within `timeout`; else 1 with one line on
/// stderr (keepalived logs a script's exit status only).
fn ready(admin: SocketAddr, timeout: std::time::Duration) -> ExitCode {
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime.block_on(async {
                let request = sluice::cli::admin_request(admin, http::Method::GET, "/ready", None);
                match tokio::time::timeout(timeout, request).await {
                    Ok(Ok((status, body))) => Ok((status, body)),
                    Ok(Err(error)) => Err(sluice::error::chain(&error)),
                    Err(_) => Err(format!("{admin}: no answer in {timeout:?}")),
                }
            })
        });
    match answer {
        Ok((200, _)) => ExitCode::SUCCESS,
        Ok((status, body)) => {
            eprintln!(
                "sluice: not ready: {admin} answered {status}: {}",
                body.trim_end()
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("sluice: not ready: {error}");
            ExitCode::FAILURE
        }
    }
}

fn exit_status(status: u16) -> ExitCode {
    if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Success to stdout, failure to stderr (after "sluice: ", like every other error).
fn human_answer(status: u16, text: &str) {
    if (200..300).contains(&status) {
        print!("{text}");
    } else {
        eprint!("sluice: {text}");
    }
}

/// `sluice drain` / `enable`: POSTs the action and says what the backend is now.
fn backend_action(
    pool: &str,
    backend: &sluice::config::BackendAddress,
    action: &str,
    args: &AdminArgs,
    token: &TokenArgs,
    config_path: &Path,
) -> Result<ExitCode> {
    let (admin, config_token) = admin_target(args.admin, config_path);
    let token = action_token(token, config_token.as_deref())?;
    let path = format!("/pools/{pool}/backends/{}/{action}", path_segment(backend));
    let (status, body) = admin_call(admin, http::Method::POST, &path, token.as_deref())?;
    if args.json {
        print!("{body}");
    } else {
        human_answer(
            status,
            &sluice::cli::backend_outcome(status, &body, pool, action),
        );
    }
    Ok(exit_status(status))
}

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    sluice::config::parse_duration(text)
}

/// A backend address as one URL path segment (a unix path's slashes escaped; the admin API
/// decodes them).
fn path_segment(backend: &sluice::config::BackendAddress) -> String {
    backend.to_string().replace('/', "%2F")
}

/// The admin address (given, else the config file's `admin.bind`, else the default) and the
/// config file's `admin.token_file`, if it has one.
fn admin_target(given: Option<SocketAddr>, config_path: &Path) -> (SocketAddr, Option<PathBuf>) {
    let admin = Config::load(config_path).ok().and_then(|c| c.admin);
    let token_file = admin.as_ref().and_then(|a| a.token_file.clone());
    let address = given.or_else(|| admin.map(|a| a.bind)).unwrap_or_else(|| {
        sluice::config::DEFAULT_ADMIN_BIND
            .parse()
            .expect("the default admin address is valid")
    });
    (address, token_file)
}

/// The token an action sends: `--token-file`, else SLUICE_ADMIN_TOKEN, else the config's file.
fn action_token(args: &TokenArgs, config_token_file: Option<&Path>) -> Result<Option<String>> {
    let from_env = std::env::var(sluice::cli::TOKEN_ENV).ok();
    Ok(sluice::cli::admin_token(
        args.token_file.as_deref(),
        from_env,
        config_token_file,
    )?)
}

fn admin_call(
    admin: SocketAddr,
    method: http::Method,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(sluice::cli::admin_request(admin, method, path, token))?)
}

fn check(path: &Path, running: Option<&Path>, quiet: bool) -> ExitCode {
    // The config, then the files it names that only the daemon writes: an access log that
    // could not be created is refused here (ExecStartPre, systemctl reload), while a reload
    // of the running daemon only warns about it (see src/config/files.rs).
    let loaded = Config::load_with_text(path).and_then(|(config, text)| {
        sluice::config::check_access_log_files(
            &text,
            &path.display().to_string(),
            sluice::access_log::check_writable,
        )?;
        Ok(config)
    });
    match loaded {
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
            // Valid, but a certificate about to expire is worth a warning (exit status 0).
            let stores = (config.listeners.values())
                .filter_map(|l| l.tls.as_ref())
                .map(|t| &*t.store);
            for warning in
                sluice::tls::store::expiry_warnings(stores, sluice::clock::unix_seconds())
            {
                eprintln!("sluice: warning: {warning}");
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

fn run_backends(
    count: usize,
    first_port: u16,
    body_size: usize,
    json: bool,
    ip: std::net::IpAddr,
) -> Result<ExitCode> {
    let runtime = runtime(Some(cpus()))?;
    runtime.block_on(async {
        let body = if json {
            sluice::demo::json_body(body_size)
        } else {
            bytes::Bytes::from(vec![b'x'; body_size])
        };
        for number in 0..count {
            let port = first_port
                .checked_add(number as u16)
                .context("port out of range")?;
            let bind = SocketAddr::new(ip, port);
            let addr = if json {
                sluice::demo::spawn_counting_json_backend(number + 1, bind, body.clone()).await?
            } else {
                sluice::demo::spawn_counting_backend(number + 1, bind, body.clone()).await?
            };
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
    fn the_command_line_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }

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
