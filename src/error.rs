//! Error types shared by the library (thiserror only; `anyhow` stays in `main.rs`), and
//! `Chain`, the one way an error is rendered with its causes for an operator.
//!
//! The convention for error types: a variant that keeps an inner error as its `source` says
//! what failed and leaves the inner error's text to the renderer ("connect failed", not
//! "connect failed: {0}"); a variant that only forwards uses `#[error(transparent)]`. Logs,
//! `/status`, the CLI and error bodies render through `Chain`, which also says a cause only
//! once when a foreign type (hyper, etcd...) repeats its source's text in its own message.

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

/// An error and its causes, each said once: "connect failed: Connection refused (os error
/// 111)". A cause whose text the message already holds is skipped, and one that holds the
/// whole message so far replaces it, so types that print their source themselves do not
/// double it either.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

/// Causes followed at most (a guard against a source chain that loops).
const MAX_CAUSES: usize = 16;

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        let mut followed = 0;
        while let Some(inner) = cause
            && followed < MAX_CAUSES
        {
            let said = inner.to_string();
            if said.contains(text.as_str()) {
                text = said;
            } else if !said.is_empty() && !text.contains(said.as_str()) {
                text.push_str(": ");
                text.push_str(&said);
            }
            cause = inner.source();
            followed += 1;
        }
        f.write_str(&text)
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `Chain` as a `String`.
pub fn chain(error: &dyn std::error::Error) -> String {
    Chain(error).to_string()
}

/// Everything that can stop the daemon from starting or a config from loading.
/// Render it with `Chain` (or `{:#}` through anyhow) to include the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}")]
    ReadConfig { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind listener {name} on {addr}")]
    Bind {
        name: String,
        /// `IP:PORT` or `unix:/path`.
        addr: String,
        source: io::Error,
    },
    #[error("{context}")]
    Io { context: String, source: io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message with an optional cause; `echo` also prints the cause, as some crates do.
    #[derive(Debug)]
    struct Layer {
        message: &'static str,
        cause: Option<Box<dyn std::error::Error + 'static>>,
        echo: bool,
    }

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.message)?;
            match &self.cause {
                Some(cause) if self.echo => write!(f, ": {cause}"),
                _ => Ok(()),
            }
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.cause.as_deref()
        }
    }

    fn layer(message: &'static str, cause: Option<Layer>, echo: bool) -> Layer {
        Layer {
            message,
            cause: cause.map(|c| Box::new(c) as Box<dyn std::error::Error>),
            echo,
        }
    }

    fn refused() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        )
    }

    #[test]
    fn each_cause_is_said_once() {
        let bind = Error::Bind {
            name: "web".into(),
            addr: "127.0.0.1:80".into(),
            source: io::Error::new(io::ErrorKind::AddrInUse, "Address already in use"),
        };
        assert_eq!(
            chain(&bind),
            "cannot bind listener web on 127.0.0.1:80: Address already in use"
        );
        // hyper's own text, twice in a row (a wrapper printing its source, then the source).
        let body = "error reading a body from connection";
        let reset = layer("Connection reset by peer (os error 104)", None, false);
        let hyper = layer(body, Some(reset), false);
        let wrapper = layer(body, Some(hyper), false);
        assert_eq!(
            chain(&wrapper),
            "error reading a body from connection: Connection reset by peer (os error 104)"
        );
        // A type that prints its source itself ("connect failed: {0}" with #[source]).
        let echoing = Layer {
            message: "connect failed",
            cause: Some(Box::new(refused())),
            echo: true,
        };
        assert_eq!(
            chain(&echoing),
            "connect failed: Connection refused (os error 111)"
        );
        // A cause that repeats the whole message so far and adds to it.
        let inner = layer("timed out", Some(layer("deadline", None, false)), true);
        let outer = layer("timed out", Some(inner), false);
        assert_eq!(chain(&outer), "timed out: deadline");
        // No cause: the message alone; a config error: its own text, position included.
        assert_eq!(chain(&refused()), "Connection refused (os error 111)");
        let config = Error::from(ConfigError {
            file: "t.yaml".into(),
            position: None,
            path: "pools".into(),
            message: "missing".into(),
            snippet: None,
        });
        assert_eq!(chain(&config), "t.yaml: pools: missing");
        assert_eq!(format!("{}", Chain(&config)), "t.yaml: pools: missing");
    }
}
