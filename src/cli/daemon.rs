//! The commands that serve: `sluice run` (the daemon), `demo`, and the hidden `backends`
//! (static HTTP backends for benchmarks); the tokio runtime each runs on and the open file
//! limit raised before it starts.

use super::CliError;
use super::args::BackendsArgs;
use crate::config::{Config, Scheduler};
use crate::server::{DrainOutcome, Server};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

/// `sluice run`: the daemon, until a signal stops it.
pub fn run(path: &Path) -> Result<ExitCode, CliError> {
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

/// `sluice demo`: three hello backends and a listener in front of them.
pub fn demo(listen: SocketAddr) -> Result<ExitCode, CliError> {
    let runtime = runtime(None)?;
    runtime.block_on(async {
        let config = crate::demo::demo_config(listen).await?;
        let server = Server::start(config)
            .await
            .map_err(|source| CliError::Context {
                context: "cannot start the demo listener (is the port free? try --listen \
                          127.0.0.1:8081)"
                    .into(),
                source: Box::new(source),
            })?;
        let addr = server.local_addr("demo").unwrap_or(listen);
        println!("sluice demo: 3 hello backends behind http://{addr}/");
        println!("try:  for i in 1 2 3 4 5 6; do curl -s http://{addr}/; done");
        println!("stop: Ctrl-C");
        let outcome = server.run_until_signal().await?;
        Ok(exit_code(outcome))
    })
}

/// `sluice backends`: static HTTP backends on consecutive ports until Ctrl-C.
pub fn backends(args: &BackendsArgs) -> Result<ExitCode, CliError> {
    let runtime = runtime(Some(cpus()))?;
    runtime.block_on(async {
        let body = if args.json {
            crate::demo::json_body(args.body_size)
        } else {
            bytes::Bytes::from(vec![b'x'; args.body_size])
        };
        for number in 0..args.count {
            let port = u16::try_from(number)
                .ok()
                .and_then(|n| args.first_port.checked_add(n))
                .ok_or_else(|| CliError::Usage("port out of range".into()))?;
            let bind = SocketAddr::new(args.ip, port);
            let addr = if args.json {
                crate::demo::spawn_counting_json_backend(number + 1, bind, body.clone()).await?
            } else {
                crate::demo::spawn_counting_backend(number + 1, bind, body.clone()).await?
            };
            println!("{addr}");
        }
        tokio::signal::ctrl_c()
            .await
            .map_err(|source| crate::error::Error::Io {
                context: "cannot wait for Ctrl-C".into(),
                source,
            })?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Every proxied connection costs two descriptors; the usual soft limit of 1024 would cap
/// sluice near 500 clients. Raise the soft limit to the hard one, as nginx/HAProxy advise.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
    }
}

fn runtime(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime, CliError> {
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
    builder.build().map_err(super::runtime_error)
}

/// The CPUs this process may run on (1 when unknown): the default thread count.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A drain that hit its deadline is still a clean, requested stop: exit 0 as nginx does.
fn exit_code(_outcome: DrainOutcome) -> ExitCode {
    ExitCode::SUCCESS
}
