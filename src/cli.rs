//! The `sluice` command line, one module a command family; `main.rs` parses `args::Cli`,
//! sets up logging and dispatches here. `args` defines every command and option (clap) and
//! `man` renders them as man pages; `daemon` runs the server (`run`, `demo`, `backends`),
//! `check` validates a config; `status`, `actions` (`reload`, `drain`, `enable`) and `ready`
//! talk to a running sluice through its admin listener (`admin`: address, token, request);
//! `register` keeps a backend in a registry; `about` is `version` and `man`.
//!
//! Errors are `CliError` (thiserror); anyhow stays in `main.rs`. Nothing in the library
//! imports this module: it is the top of the dependency graph.

pub mod about;
pub mod actions;
pub mod admin;
pub mod args;
pub mod check;
pub mod daemon;
pub mod man;
pub mod ready;
pub mod register;
pub mod status;

pub use admin::{TOKEN_ENV, admin_request, admin_token};

use crate::discovery::register::RegisterError;
use crate::error::Error;
use std::process::ExitCode;

/// Why a command could not do its work (exit status 1); `crate::error::chain` renders it
/// with its causes.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Sluice(#[from] Error),
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// A cause from elsewhere (a JSON parser, the server) with what was being done.
    #[error("{context}")]
    Context {
        context: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An argument clap could not check.
    #[error("{0}")]
    Usage(String),
}

/// Exit 0 for a 2xx answer of the admin API, 1 otherwise.
pub fn exit_status(status: u16) -> ExitCode {
    if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The runtime of a one-shot command (an admin request, a registration).
fn current_thread_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(runtime_error)
}

fn runtime_error(source: std::io::Error) -> CliError {
    CliError::Sluice(Error::Io {
        context: "cannot start the async runtime".into(),
        source,
    })
}
