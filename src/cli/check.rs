//! `sluice check` (and `-t`): validate a config file without opening a socket, like
//! `nginx -t`; with `--diff`, also say what a reload from the running file would do.

use crate::config::Config;
use std::path::Path;
use std::process::ExitCode;

/// Exit 0 for a valid config (certificate expiry warnings on stderr), 1 with the error.
pub fn check(path: &Path, running: Option<&Path>, quiet: bool) -> ExitCode {
    // The config, then the files it names that only the daemon writes: an access log that
    // could not be created is refused here (ExecStartPre, systemctl reload), while a reload
    // of the running daemon only warns about it (see src/config/files.rs).
    let loaded = Config::load_with_text(path).and_then(|(config, text)| {
        crate::config::check_access_log_files(
            &text,
            &path.display().to_string(),
            crate::access_log::check_writable,
        )?;
        Ok(config)
    });
    match loaded {
        Ok(config) => {
            if let Some(running) = running {
                match Config::load(running) {
                    Ok(old) => print!("{}", crate::config::diff::diff(&old, &config)),
                    Err(error) => {
                        eprintln!("sluice: running config: {}", crate::error::Chain(&error));
                        return ExitCode::FAILURE;
                    }
                }
            }
            // Valid, but a certificate about to expire is worth a warning (exit status 0).
            let stores = (config.listeners.values())
                .filter_map(|l| l.tls.as_ref())
                .map(|t| &*t.store);
            for warning in crate::tls::store::expiry_warnings(stores, crate::clock::unix_seconds())
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
            eprintln!("sluice: {}", crate::error::Chain(&error));
            ExitCode::FAILURE
        }
    }
}
