//! The `sluice` binary: parse the command line, set up logging, dispatch to the command in
//! `sluice::cli`, and print an error with its causes. The only place anyhow appears.

use anyhow::Result;
use clap::Parser;
use sluice::cli::args::{Cli, Command, DEFAULT_CONFIG};
use sluice::cli::{about, actions, check, daemon, ready, register, status};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

// mimalloc instead of glibc's malloc: fewer instructions per request and less memory per idle
// connection (figures in the commit that made the change).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let code = match cli.command {
        _ if cli.check => check::check(&file(None), None, cli.quiet),
        Some(Command::Check {
            file: own,
            quiet,
            diff,
        }) => check::check(&file(own.config), diff.as_deref(), quiet),
        Some(Command::Demo { listen }) => daemon::demo(listen)?,
        Some(Command::Version) => {
            print!("{}", about::build_description());
            ExitCode::SUCCESS
        }
        Some(Command::Man { dir }) => {
            about::man(dir.as_deref())?;
            ExitCode::SUCCESS
        }
        Some(Command::Ready {
            admin,
            config,
            timeout,
        }) => {
            // keepalived runs this every second: with --admin, no config file is parsed.
            let admin = match admin {
                Some(admin) => admin,
                None => sluice::cli::admin::admin_target(None, &file(config)).0,
            };
            ready::ready(admin, timeout)
        }
        Some(Command::Status { admin }) => status::status(&admin, &file(admin.config.clone()))?,
        Some(Command::Reload { admin, token }) => {
            actions::reload(&admin, &token, &file(admin.config.clone()))?
        }
        Some(Command::Drain {
            target,
            admin,
            token,
        }) => actions::backend_action(
            &target,
            "drain",
            &admin,
            &token,
            &file(admin.config.clone()),
        )?,
        Some(Command::Enable {
            target,
            admin,
            token,
        }) => actions::backend_action(
            &target,
            "enable",
            &admin,
            &token,
            &file(admin.config.clone()),
        )?,
        Some(Command::Backends(args)) => daemon::backends(&args)?,
        Some(Command::Register(args)) => register::register(args)?,
        Some(Command::Run { file: own }) => daemon::run(&file(own.config))?,
        None if top.is_none() && !Path::new(DEFAULT_CONFIG).exists() => {
            tracing::info!("no config file at {DEFAULT_CONFIG} and no -c given: starting the demo");
            daemon::demo(sluice::demo::DEFAULT_DEMO_LISTEN.parse()?)?
        }
        None => daemon::run(&file(None))?,
    };
    Ok(code)
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
