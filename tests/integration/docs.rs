//! The documentation stays true to the config schema: every ```yaml block of README.md and
//! docs/*.md is a whole sluice config that validates, as `sluice check -c FILE` would, unless
//! its fence says ```yaml fragment (a piece of a config, or another YAML file such as a
//! discovery list). Fragments are counted, not checked. Relative links between the pages
//! must point at files (and headings) that exist.
//!
//! A block is validated by `Config::parse`, which `sluice check` runs on the file's text. The
//! block is preceded by as many empty lines as the markdown file has above it, so an error
//! names the markdown file and its own line: `docs/routing.md:42:11: listeners.web.pool: ...`.
//!
//! Validation reads certificate files. A block that names `/etc/sluice/NAME.pem` or
//! `/etc/sluice/NAME.key` gets them made here, in a temporary directory its `/etc/sluice/`
//! paths are pointed at: a self-signed certificate for `NAME.example.com` (and `NAME` itself
//! when it has a dot) with its key, so `NAME.pem` and `NAME.key` always fit each other;
//! `NAME.crl` an empty CRL and `NAME.keys` a session ticket key file. TLS
//! examples are checked like the rest, not skipped as fragments. Pages are read at validation
//! too (error pages, a route's `respond.file`): a block naming `/etc/sluice/PATH.html`,
//! `.json` or `.txt` gets a short placeholder file there. No other file is read at validation
//! (token files, access logs and discovery files are opened at run time).

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// One fenced code block of a markdown file.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// The fence's info string: `yaml`, `yaml fragment`, `sh`...
    info: String,
    body: String,
}

/// A code fence line: its number of backticks and its info string. CommonMark: at most three
/// spaces of indent, three or more backticks, and no backtick in the info string (so a line
/// that starts with inline code is not a fence).
fn fence(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
    let info = &trimmed[ticks..];
    (ticks >= 3 && !info.contains('`')).then(|| (ticks, info.trim()))
}

/// Whether each line is inside a fenced code block (fence lines included).
fn in_code(text: &str) -> Vec<bool> {
    let mut open: Option<usize> = None;
    text.lines()
        .map(|line| {
            match (open, fence(line)) {
                (None, Some((ticks, _))) => open = Some(ticks),
                (Some(opened), Some((ticks, ""))) if ticks >= opened => {
                    open = None;
                    return true;
                }
                _ => {}
            }
            open.is_some()
        })
        .collect()
}

fn blocks(text: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for (index, line) in text.lines().enumerate() {
        match (open.as_mut(), fence(line)) {
            (None, Some((ticks, info))) => {
                let block = Block {
                    line: index + 1,
                    info: info.to_owned(),
                    body: String::new(),
                };
                open = Some((ticks, block));
            }
            (None, None) => {}
            (Some((opened, _)), Some((ticks, ""))) if ticks >= *opened => {
                found.extend(open.take().map(|(_, block)| block));
            }
            (Some((_, block)), _) => {
                block.body.push_str(line);
                block.body.push('\n');
            }
        }
    }
    assert!(open.is_none(), "a code fence is never closed");
    found
}

#[derive(Default)]
struct Outcome {
    checked: usize,
    fragments: usize,
    failures: Vec<String>,
}

/// Checks every ```yaml block of one markdown text; `name` labels the errors.
fn check_markdown(name: &str, text: &str) -> Outcome {
    let mut outcome = Outcome::default();
    for block in blocks(text) {
        let mut words = block.info.split_whitespace();
        if !matches!(words.next(), Some("yaml" | "yml")) {
            continue;
        }
        let markers: Vec<&str> = words.collect();
        match markers.as_slice() {
            [] => {}
            ["fragment"] => {
                outcome.fragments += 1;
                continue;
            }
            other => {
                outcome.failures.push(format!(
                    "{name}:{}: unknown fence marker {other:?} (use ```yaml or ```yaml fragment)",
                    block.line
                ));
                continue;
            }
        }
        outcome.checked += 1;
        let files = tempfile::tempdir().unwrap();
        let body = with_certificates(&block.body, files.path());
        // The body starts on the line after the fence: pad so positions are the file's own.
        let text = format!("{}{body}", "\n".repeat(block.line));
        if let Err(error) = sluice::Config::parse(&text, name) {
            outcome.failures.push(format!(
                "{name}: the config block at line {} does not validate:\n{error}",
                block.line
            ));
        }
    }
    outcome
}

/// Writes the certificates and keys `body` names under /etc/sluice/ into `dir` and returns
/// the body with its /etc/sluice/ paths pointing there.
fn with_certificates(body: &str, dir: &Path) -> String {
    const PREFIX: &str = "/etc/sluice/";
    let mut stems = BTreeSet::new();
    let mut crls = BTreeSet::new();
    for (at, _) in body.match_indices(PREFIX) {
        let name: String = body[at + PREFIX.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
            .collect();
        if [".html", ".json", ".txt"].iter().any(|e| name.ends_with(e)) {
            let page = dir.join(&name);
            std::fs::create_dir_all(page.parent().unwrap()).unwrap();
            std::fs::write(page, "placeholder\n").unwrap();
            continue;
        }
        if let Some(stem) = name.strip_suffix(".crl") {
            crls.insert(stem.to_owned());
        } else if name.ends_with(".keys") {
            // Session ticket keys: one base64 line of 48 bytes.
            use base64::Engine;
            let line = base64::engine::general_purpose::STANDARD.encode([7u8; 48]);
            std::fs::write(dir.join(&name), format!("{line}\n")).unwrap();
        } else if let Some(stem) = name
            .strip_suffix(".pem")
            .or_else(|| name.strip_suffix(".key"))
        {
            stems.insert(stem.to_owned());
        }
    }
    for stem in &crls {
        // A CRL of a throwaway CA: validation parses it, the signature is checked per client.
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2090, 1, 1),
            crl_number: 1u64.into(),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca)
        .unwrap();
        std::fs::write(dir.join(format!("{stem}.crl")), crl.pem().unwrap()).unwrap();
    }
    for stem in &stems {
        let mut names = vec![format!("{stem}.example.com")];
        if stem.contains('.') {
            names.push(stem.clone());
        }
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), certified.cert.pem()).unwrap();
        std::fs::write(
            dir.join(format!("{stem}.key")),
            certified.signing_key.serialize_pem(),
        )
        .unwrap();
    }
    body.replace(PREFIX, &format!("{}/", dir.display()))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/, as (name relative to the root, text).
fn pages() -> Vec<(String, String)> {
    let mut names = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(root().join(&name)).unwrap();
            (name, text)
        })
        .collect()
}

#[test]
fn every_config_block_in_the_docs_validates() {
    let mut total = Outcome::default();
    for (name, text) in pages() {
        let outcome = check_markdown(&name, &text);
        println!(
            "{name}: {} config blocks checked, {} fragments",
            outcome.checked, outcome.fragments
        );
        total.checked += outcome.checked;
        total.fragments += outcome.fragments;
        total.failures.extend(outcome.failures);
    }
    println!(
        "in all: {} config blocks checked, {} fragments skipped",
        total.checked, total.fragments
    );
    assert!(
        total.failures.is_empty(),
        "{} of {} config blocks fail (mark a block that is not a whole config ```yaml fragment):\n\n{}",
        total.failures.len(),
        total.checked,
        total.failures.join("\n\n")
    );
    assert!(
        total.checked >= 10,
        "too few config blocks found: {}",
        total.checked
    );
}

#[test]
fn a_block_that_does_not_validate_is_reported_with_its_line() {
    let page = concat!(
        "# Title\n",
        "\n",
        "```` ```yaml ```` starts a block.\n",
        "\n",
        "```yaml\n", // line 5
        "listeners:\n",
        "  web:\n",
        "    bind: 127.0.0.1:8080\n",
        "    pool: ap\n", // line 9, column 11: no such pool
        "pools:\n",
        "  app:\n",
        "    backends: [127.0.0.1:9001]\n",
        "```\n",
        "\n",
        "```yaml fragment\n",
        "timeouts: { connect: 1s }\n",
        "```\n",
        "\n",
        "```yaml frgament\n",
        "x: 1\n",
        "```\n",
    );
    let outcome = check_markdown("page.md", page);
    assert_eq!((outcome.checked, outcome.fragments), (1, 1));
    assert_eq!(outcome.failures.len(), 2, "{:#?}", outcome.failures);
    let error = &outcome.failures[0];
    assert!(error.contains("block at line 5"), "{error}");
    // The error points at the markdown file's own line of `pool: ap`.
    assert!(
        error.contains("page.md:9:11: listeners.web.pool"),
        "{error}"
    );
    assert!(outcome.failures[1].contains("unknown fence marker"));
}

#[test]
fn certificates_named_by_a_block_are_made_for_it() {
    let page = concat!(
        "```yaml\n",
        "listeners:\n",
        "  https:\n",
        "    bind: 127.0.0.1:8443\n",
        "    pool: app\n",
        "    tls:\n",
        "      certificates:\n",
        "        - { cert: /etc/sluice/a.pem, key: /etc/sluice/a.key }\n",
        "      default_certificate: a.example.com\n",
        "pools:\n",
        "  app:\n",
        "    backends: [127.0.0.1:9001]\n",
        "```\n",
    );
    let outcome = check_markdown("tls.md", page);
    assert!(outcome.failures.is_empty(), "{:#?}", outcome.failures);
    assert_eq!(outcome.checked, 1);
}

#[test]
fn readme_keeps_the_test_command_ci_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("cargo test --locked --all-targets"));
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> HashSet<String> {
    text.lines()
        .zip(in_code(text))
        .filter(|(line, code)| !code && line.starts_with('#'))
        .map(|(line, _)| anchor(line.trim_start_matches('#')))
        .collect()
}

/// Targets of inline links `[text](target)` outside code blocks, with their line.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, (line, code)) in text.lines().zip(in_code(text)).enumerate() {
        if code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push((index + 1, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn links_between_pages_resolve() {
    let mut broken = Vec::new();
    for (name, text) in pages() {
        let dir = root().join(&name).parent().unwrap().to_path_buf();
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = match target.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                root().join(&name)
            } else {
                dir.join(file)
            };
            if !path.exists() {
                broken.push(format!("{name}:{line}: {target}: no such file"));
                continue;
            }
            if let Some(fragment) = fragment.filter(|_| path.extension().is_some_and(|e| e == "md"))
            {
                let text = std::fs::read_to_string(&path).unwrap();
                if !anchors(&text).contains(fragment) {
                    broken.push(format!("{name}:{line}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
