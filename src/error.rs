//! Error types shared by the library (thiserror only; `anyhow` stays in `main.rs`).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where in the operator's file a config problem is, so the message can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    pub line: u32,
    pub column: u32,
}

/// A config the daemon refuses, with enough context to fix it without guessing:
/// `conf/sluice.yaml:12:7: pools.app.backends[1].address: invalid socket address "x"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub position: Option<SourcePosition>,
    /// Dotted field path from the document root, e.g. `listeners.web.pool`.
    pub path: String,
    pub message: String,
    /// The offending source line with a caret under the column, when known.
    pub snippet: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(position) = &self.position {
            write!(f, ":{}:{}", position.line, position.column)?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)?;
        } else {
            write!(f, ": {}: {}", self.path, self.message)?;
        }
        if let Some(snippet) = &self.snippet {
            write!(f, "\n{snippet}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Everything that can stop the daemon from starting or a config from loading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    ReadConfig { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot bind listener {name} on {addr}: {source}")]
    Bind {
        name: String,
        /// `IP:PORT` or `unix:/path`.
        addr: String,
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}
