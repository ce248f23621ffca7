//! The man pages, built from the clap definition of the command line (so an option cannot be
//! documented on one side only): `sluice(8)` with the sections an operator looks for
//! (COMMANDS, SIGNALS, FILES, ADMIN API, EXIT STATUS, ENVIRONMENT, EXAMPLES, SEE ALSO), and
//! one page per visible command, `sluice-check(8)` and so on, as git and systemd ship them.
//! `sluice man` prints the first; `sluice man --dir DIR` writes them all (the package build).
//!
//! Imports nothing of ours: the binary passes its `clap::Command` and exit status text in.

use clap_mangen::Man;

/// One rendered page: its file name (`sluice-check.8`) and roff text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub file_name: String,
    pub roff: String,
}

const SECTION: &str = "8";
const MANUAL: &str = "System Administration";

/// `sluice(8)`: the command, its commands and options, and how to operate it.
pub fn main_page(command: clap::Command, exit_status: &str) -> Page {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let man = Man::new(command.clone()).section(SECTION).manual(MANUAL);
    let mut roff = String::new();
    title(&mut roff, &man);
    render(&mut roff, |w| man.render_name_section(w));
    render(&mut roff, |w| man.render_synopsis_section(w));
    render(&mut roff, |w| man.render_description_section(w));
    render(&mut roff, |w| man.render_options_section(w));
    let mut commands = String::new();
    render(&mut commands, |w| man.render_subcommands_section(w));
    roff.push_str(&commands.replacen(".SH SUBCOMMANDS", ".SH COMMANDS", 1));
    section(&mut roff, "SIGNALS", SIGNALS);
    section(&mut roff, "FILES", FILES);
    section(&mut roff, "ADMIN API", ADMIN_API);
    preformatted(&mut roff, "EXIT STATUS", exit_status);
    section(&mut roff, "ENVIRONMENT", ENVIRONMENT);
    preformatted(&mut roff, "EXAMPLES", EXAMPLES);
    let see_also: Vec<String> = visible(&command)
        .map(|sub| format!("sluice-{}(8)", sub.get_name()))
        .chain(
            ["systemctl(1)", "journalctl(1)", "logrotate(8)"]
                .iter()
                .map(|s| (*s).to_owned()),
        )
        .collect();
    roff.push_str(".SH \"SEE ALSO\"\n");
    roff.push_str(&escape(&format!(
        "{}. The documentation in /usr/share/doc/sluice/ (README.md, docs/) and the \
         reference configuration /usr/share/doc/sluice/examples/sluice.yaml.",
        see_also.join(", ")
    )));
    roff.push('\n');
    Page {
        file_name: format!("sluice.{SECTION}"),
        roff,
    }
}

/// `sluice(8)` and one page per visible command.
pub fn pages(command: clap::Command, exit_status: &str) -> Vec<Page> {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let source = format!("sluice {}", command.get_version().unwrap_or_default());
    let mut pages = vec![main_page(command.clone(), exit_status)];
    for sub in visible(&command) {
        let name = format!("sluice-{}", sub.get_name());
        let man = Man::new(sub.clone())
            .title(name.clone())
            .section(SECTION)
            .source(source.clone())
            .manual(MANUAL);
        let mut roff = String::new();
        title(&mut roff, &man);
        render(&mut roff, |w| man.render_name_section(w));
        render(&mut roff, |w| man.render_synopsis_section(w));
        render(&mut roff, |w| man.render_description_section(w));
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            render(&mut roff, |w| man.render_options_section(w));
        }
        preformatted(&mut roff, "EXIT STATUS", exit_status);
        roff.push_str(".SH \"SEE ALSO\"\nsluice(8)\n");
        pages.push(Page {
            file_name: format!("{name}.{SECTION}"),
            roff,
        });
    }
    pages
}

fn visible(command: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    command.get_subcommands().filter(|sub| !sub.is_hide_set())
}

/// The `.TH` line. clap_mangen leaves the date out when empty, which shifts the source and
/// manual into the wrong fields: write it as an empty quoted argument (man pages built from
/// the binary carry no build date, so packages stay reproducible).
fn title(out: &mut String, man: &Man) {
    let mut line = String::new();
    render(&mut line, |w| man.render_title(w));
    let fixed: Vec<String> = line
        .lines()
        .map(|l| match l.strip_prefix(".TH ") {
            Some(rest) => match rest.split_once(&format!(" {SECTION}  ")) {
                Some((name, tail)) => format!(".TH {name} {SECTION} \"\" {tail}"),
                None => l.to_owned(),
            },
            None => l.to_owned(),
        })
        .collect();
    out.push_str(&fixed.join("\n"));
    out.push('\n');
}

fn render(out: &mut String, part: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) {
    let mut buffer = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = part(&mut buffer);
    out.push_str(&String::from_utf8_lossy(&buffer));
}

/// A section of `(term, text)` items, each a tagged paragraph.
fn section(out: &mut String, title: &str, items: &[(&str, &str)]) {
    out.push_str(&format!(".SH \"{title}\"\n"));
    for (term, text) in items {
        out.push_str(".TP\n");
        out.push_str(&format!("\\fB{}\\fR\n", escape(term)));
        out.push_str(&escape(text));
        out.push('\n');
    }
}

/// A section kept as written (no filling), for tables and command lines.
fn preformatted(out: &mut String, title: &str, text: &str) {
    out.push_str(&format!(".SH \"{title}\"\n.nf\n"));
    for line in text.lines() {
        out.push_str(&escape(line));
        out.push('\n');
    }
    out.push_str(".fi\n");
}

/// Text as roff: backslashes and hyphens escaped, a leading dot or quote made literal.
fn escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGHUP",
        "Reload the config file as one transaction: if anything fails, the running config \
         stays in force and the error is logged and shown by sluice status.",
    ),
    (
        "SIGTERM, SIGINT",
        "Stop accepting, let requests and TCP sessions in flight finish for up to \
         runtime.drain_timeout (30s by default), then exit 0. A second signal exits at once.",
    ),
    (
        "SIGUSR1",
        "Reopen the access log files (logrotate's postrotate).",
    ),
    (
        "SIGUSR2",
        "Binary upgrade: start the binary at the same path with the same arguments, hand it \
         the listening sockets, then drain and exit. If the new process fails to start, the \
         old one keeps serving.",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "/etc/sluice/sluice.yaml",
        "The config file read without -c. As packaged, a small config that answers on \
         127.0.0.1:8080.",
    ),
    (
        "/usr/share/doc/sluice/examples/sluice.yaml",
        "The reference config: every key, commented, with its default.",
    ),
    (
        "/lib/systemd/system/sluice.service",
        "The systemd unit (Type=notify, DynamicUser=yes, a read-only file system).",
    ),
    (
        "/var/log/sluice/",
        "Access log files under the unit (LogsDirectory=); rotated by /etc/logrotate.d/sluice, \
         which sends SIGUSR1.",
    ),
    (
        "/run/sluice/",
        "Unix socket listeners under the unit (RuntimeDirectory=), and the socket of a binary \
         upgrade.",
    ),
    (
        "/var/lib/sluice/",
        "Files that must outlive a restart, under the unit (StateDirectory=).",
    ),
];

const ADMIN_API: &[(&str, &str)] = &[
    (
        "GET /",
        "A status page for people: pools, backends, state and reason, load.",
    ),
    ("GET /healthz", "ok while the process runs."),
    (
        "GET /ready",
        "The config is loaded and every listener bound.",
    ),
    (
        "GET /status",
        "JSON: version, uptime, the last reload, listeners, pools and backends.",
    ),
    ("GET /metrics", "Prometheus text."),
    ("GET /config", "The config file as loaded."),
    (
        "POST /reload",
        "Reload the config file and answer with the outcome (sluice reload).",
    ),
    (
        "POST /pools/POOL/backends/BACKEND/drain, .../enable, .../weight?value=N",
        "Drain, enable or re-weight one backend at run time (sluice drain, sluice enable); \
         kept across reloads.",
    ),
    (
        "Access",
        "The admin listener is off without an admin: section and on loopback by default \
         (127.0.0.1:9900). Actions (POST) come from loopback peers only, or, with \
         admin.token_file, need Authorization: Bearer TOKEN from any peer; sluice reload, \
         drain and enable send it (--token-file, SLUICE_ADMIN_TOKEN or admin.token_file).",
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "SLUICE_LOG",
        "Log filter in tracing's EnvFilter syntax (info, debug, sluice::reload=debug). \
         Default: info; RUST_LOG is read when SLUICE_LOG is not set.",
    ),
    (
        "SLUICE_ADMIN_TOKEN",
        "The admin token that sluice reload, drain and enable send (Authorization: Bearer), \
         when --token-file is not given; else they read the config's admin.token_file.",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd: when it names stderr, logs go to journald natively, with priorities \
         and multi-line messages as one entry.",
    ),
    (
        "NOTIFY_SOCKET",
        "Set by systemd for Type=notify: sluice reports READY=1, RELOADING=1, STOPPING=1 and \
         a STATUS= line.",
    ),
    (
        "RUNTIME_DIRECTORY",
        "Set by systemd's RuntimeDirectory=: where a binary upgrade puts its socket (else the \
         temporary directory).",
    ),
];

const EXAMPLES: &str = "\
Check a config, then reload the service with it:
    sluice check -c /etc/sluice/sluice.yaml && sudo systemctl reload sluice

What would a reload change?
    sluice check -c new.yaml --diff /etc/sluice/sluice.yaml

Every backend, its state and why:
    sluice status

Take a backend out for maintenance, then back:
    sluice drain app 10.0.0.1:8080
    sluice enable app 10.0.0.1:8080

Reload and see the outcome (the error with its line, when it fails):
    sluice reload

Scripts read JSON:
    sluice status --json
    sluice reload --json

Try it without a config file:
    sluice demo";

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("sluice")
            .version("1.0")
            .about("An L4/L7 load balancer daemon")
            .arg(clap::Arg::new("config").short('c').long("config"))
            .subcommand(
                clap::Command::new("check")
                    .about("Validate the config")
                    .arg(clap::Arg::new("quiet").short('q').long("quiet")),
            )
            .subcommand(clap::Command::new("hidden").hide(true))
    }

    #[test]
    fn the_main_page_has_the_operator_sections() {
        let page = main_page(command(), "Exit status:\n  0  success");
        assert_eq!(page.file_name, "sluice.8");
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH OPTIONS",
            ".SH COMMANDS",
            ".SH \"SIGNALS\"",
            ".SH \"FILES\"",
            ".SH \"ADMIN API\"",
            ".SH \"EXIT STATUS\"",
            ".SH \"ENVIRONMENT\"",
            ".SH \"EXAMPLES\"",
            ".SH \"SEE ALSO\"",
        ] {
            assert!(page.roff.contains(section), "{section} in\n{}", page.roff);
        }
        assert!(page.roff.contains("sluice\\-check(8)"));
        assert!(!page.roff.contains("hidden"));
    }

    #[test]
    fn each_visible_command_has_its_page() {
        let pages = pages(command(), "0 success");
        let names: Vec<&str> = pages.iter().map(|p| p.file_name.as_str()).collect();
        assert_eq!(names, ["sluice.8", "sluice-check.8"]);
        let check = &pages[1].roff;
        assert!(
            check.contains(".TH sluice-check 8 \"\" \"sluice 1.0\""),
            "{check}"
        );
        assert!(
            check.contains("\\-q") && check.contains(".SH \"EXIT STATUS\""),
            "{check}"
        );
    }

    #[test]
    fn escape_keeps_roff_literal() {
        assert_eq!(escape(".hidden -x a\\b"), "\\&.hidden \\-x a\\eb");
    }
}
