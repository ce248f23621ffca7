//! What `sluice check` verifies beyond the config itself: that the access log files it names
//! could be created. Pure: the file system test is passed in (`src/access_log.rs` has the
//! real one), so this module stays free of I/O and its tests need no directories.
//!
//! Why here and only for `check`: validation (`Config::parse`) is pure and also runs on every
//! reload, where an access log that cannot be opened is not worth refusing a config for (the
//! lines are dropped with a warning until SIGUSR1, as before). `sluice check` is what
//! `ExecStartPre` and `systemctl reload` run, so a wrong path is caught there, before start,
//! with the file, line, column and field path of every other config error.

use super::file::RawConfig;
use super::parse::{known_position, make_error, parse_raw};
use crate::error::ConfigError;
use std::path::Path;

/// Checks every `listeners.NAME.access_log.path` that is a file (not `stdout`) with
/// `writable`, which says why a path could not be created or appended to. The first failure
/// is returned as a config error pointing at the path's value.
pub fn check_access_log_files(
    text: &str,
    file: &str,
    writable: impl Fn(&Path) -> Result<(), String>,
) -> Result<(), ConfigError> {
    let raw: RawConfig = parse_raw(text, file)?;
    let listeners = raw.listeners.map(|l| l.value).unwrap_or_default();
    for (name, listener) in &listeners {
        let Some(path) = listener
            .access_log
            .as_ref()
            .and_then(|log| log.path.as_ref())
        else {
            continue;
        };
        if path.value == "stdout" {
            continue;
        }
        if let Err(message) = writable(Path::new(&path.value)) {
            return Err(make_error(
                text,
                file,
                known_position(path.referenced),
                format!("listeners.{name}.access_log.path"),
                message,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: app\n    \
                          access_log: { path: /var/log/nope/access.log }\n  \
                          out: { bind: 127.0.0.1:0, pool: app, access_log: { path: stdout } }\n\
                          pools:\n  app: { backends: [127.0.0.1:9001] }\n";

    #[test]
    fn a_file_that_cannot_be_created_is_refused_at_its_value() {
        let error = check_access_log_files(CONFIG, "x.yaml", |path| {
            Err(format!("directory {} does not exist", path.display()))
        })
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(
                "x.yaml:5:25: listeners.web.access_log.path: directory /var/log/nope/access.log"
            ),
            "{text}"
        );
    }

    #[test]
    fn stdout_and_writable_files_pass() {
        let seen = std::cell::RefCell::new(Vec::new());
        check_access_log_files(CONFIG, "x.yaml", |path| {
            seen.borrow_mut().push(path.to_path_buf());
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen.into_inner(),
            vec![std::path::PathBuf::from("/var/log/nope/access.log")]
        );
    }
}
