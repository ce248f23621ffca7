//! The command line's definition (clap derive): every command, option and help text, the exit
//! status text the help and the man page show, and the default config path. The binary parses
//! it; `man.rs` renders it. Parsing only: what a command does is in its own module.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the daemon and the operator commands look for the config file without `-c`.
pub const DEFAULT_CONFIG: &str = "/etc/sluice/sluice.yaml";

/// How `sluice` exits, shown in `--help` and in the man page's EXIT STATUS.
pub const EXIT_STATUS: &str = "\
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
pub struct Cli {
    /// Config file to run or check (default: /etc/sluice/sluice.yaml; without it and without
    /// a command, the demo runs).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the config and exit 0 (valid) or 1 (invalid), like `nginx -t` (`sluice check`).
    #[arg(short = 't', long = "check", alias = "test")]
    pub check: bool,
    /// With -t: print nothing on success.
    #[arg(short = 'q', long = "quiet", requires = "check")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `-c FILE` for the commands that read the config file.
#[derive(Args)]
pub struct ConfigFile {
    /// Config file (default: /etc/sluice/sluice.yaml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How the operator commands find the running sluice, and what they print.
#[derive(Args)]
pub struct AdminArgs {
    /// Admin address (default: admin.bind from the config file, else 127.0.0.1:9900).
    #[arg(long, value_name = "IP:PORT")]
    pub admin: Option<SocketAddr>,
    /// Config file whose admin.bind to use (default: /etc/sluice/sluice.yaml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the admin API's JSON answer instead of text (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// The admin token the actions send (`reload`, `drain`, `enable`).
#[derive(Args)]
pub struct TokenArgs {
    /// File holding the admin token to send as `Authorization: Bearer TOKEN`. Without it: the
    /// token in the SLUICE_ADMIN_TOKEN environment variable, else the file named by the config
    /// file's admin.token_file, else none (enough on loopback while the daemon has no token).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
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
    Backends(BackendsArgs),
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
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Show a running sluice's backends (state, reason, load, latency, origin) and discovery.
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
        #[command(flatten)]
        target: BackendTarget,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Undo a drain.
    Enable {
        #[command(flatten)]
        target: BackendTarget,
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
    Register(RegisterArgs),
    /// Start three hello backends and a listener in front of them.
    Demo {
        /// Where the demo listener binds.
        #[arg(long, default_value = crate::demo::DEFAULT_DEMO_LISTEN)]
        listen: SocketAddr,
    },
}

// `sluice drain` / `enable`: which backend (no doc comment: the command's own text is its help).
#[derive(Args)]
pub struct BackendTarget {
    /// The pool's name.
    pub pool: String,
    /// IP:PORT or unix:/path.
    pub backend: crate::config::BackendAddress,
}

// `sluice backends` (hidden; for benchmarks).
#[derive(Args)]
pub struct BackendsArgs {
    /// How many backends.
    #[arg(long, default_value_t = 4)]
    pub count: usize,
    /// First port; the others follow.
    #[arg(long)]
    pub first_port: u16,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 13)]
    pub body_size: usize,
    /// Answer that many bytes of JSON (`application/json`) instead of `x`s.
    #[arg(long)]
    pub json: bool,
    /// Address to bind. 0.0.0.0 answers on every 127.x.y.z, so that a benchmark can
    /// name thousands of distinct backends with a few sockets (loadtest.py's `scale`).
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: std::net::IpAddr,
}

// `sluice register`: one registry of three, the instance, and an optional command.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("registry").required(true).args(["etcd", "consul", "zookeeper"])))]
pub struct RegisterArgs {
    /// etcd endpoint, http://HOST:PORT (repeat or comma-separate for several).
    #[arg(long = "etcd", value_delimiter = ',', requires = "prefix")]
    pub etcd: Vec<String>,
    /// With --etcd: key directory the pool's etcd source follows, e.g. /services/app/.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Consul agent, http://HOST:PORT or https://HOST:PORT (usually the local agent).
    #[arg(long, value_name = "URL", requires = "service")]
    pub consul: Option<String>,
    /// With --consul: the service name the pool's consul source follows.
    #[arg(long)]
    pub service: Option<String>,
    /// With --consul: a tag of the instance (repeat for several).
    #[arg(long = "tag", requires = "consul")]
    pub tags: Vec<String>,
    /// With --consul: file holding the ACL token sent as X-Consul-Token.
    #[arg(long, value_name = "FILE", requires = "consul")]
    pub token_file: Option<PathBuf>,
    /// With an https:// --consul: trust only this CA bundle (PEM) instead of the public roots.
    #[arg(long, value_name = "FILE", requires = "consul")]
    pub ca: Option<PathBuf>,
    /// ZooKeeper servers, HOST:PORT (repeat or comma-separate for several).
    #[arg(
        long = "zookeeper",
        value_delimiter = ',',
        value_name = "HOSTS",
        requires = "path"
    )]
    pub zookeeper: Vec<String>,
    /// With --zookeeper: the znode the pool's zookeeper source follows, e.g. /services/app.
    #[arg(long)]
    pub path: Option<String>,
    /// The backend's address, IP:PORT (the etcd key is PREFIX + ADDRESS, the znode
    /// PATH/ADDRESS).
    #[arg(long)]
    pub address: SocketAddr,
    /// The backend's weight (etcd/ZooKeeper: {"weight": N}, 1 stores an empty value;
    /// Consul: Weights.Passing).
    #[arg(long, default_value_t = 1)]
    pub weight: u32,
    /// A registrant killed outright is removed after this long: the etcd lease TTL, the
    /// Consul check TTL (critical, then removed after --deregister-critical-after), the
    /// ZooKeeper session timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// With --consul: how long Consul keeps an instance whose check went critical before
    /// removing it (DeregisterCriticalServiceAfter; at least 1m, Consul's minimum).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_duration, requires = "consul")]
    pub deregister_critical_after: Duration,
    /// Command to run; the registration lasts while it runs and its exit status is ours.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
