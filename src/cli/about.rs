//! What the binary says about itself: `sluice version` (what is compiled in) and
//! `sluice man` (the man pages, rendered by `man.rs` from the clap definition in `args.rs`).

use super::CliError;
use super::args::{Cli, EXIT_STATUS};
use std::path::Path;

/// `sluice version`: what this binary is and what is compiled in (every item is built
/// unconditionally: sluice has no cargo features).
pub fn build_description() -> String {
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

/// `sluice man`: sluice(8) to stdout, or with a directory every page into it.
pub fn man(dir: Option<&Path>) -> Result<(), CliError> {
    let command = <Cli as clap::CommandFactory>::command();
    let write_error = |context: String| move |source| crate::error::Error::Io { context, source };
    match dir {
        Some(dir) => {
            for page in super::man::pages(command, EXIT_STATUS) {
                let path = dir.join(&page.file_name);
                std::fs::write(&path, page.roff)
                    .map_err(write_error(format!("cannot write {}", path.display())))?;
            }
        }
        None => {
            use std::io::Write;
            let page = super::man::main_page(command, EXIT_STATUS);
            std::io::stdout()
                .write_all(page.roff.as_bytes())
                .map_err(write_error("cannot write the man page".into()))?;
        }
    }
    Ok(())
}
