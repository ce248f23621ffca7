//! A small network of Linux network namespaces for the HA pair test: a switch namespace
//! holding a bridge, and host namespaces each joined to it by a veth pair (`eth0` in the
//! host, named after the host on the switch side). Programs run inside with
//! `ip netns exec`; the test process makes sockets inside with setns(2) on a thread of its
//! own (`in_namespace`), since a socket keeps the namespace it was made in.
//!
//! Everything is torn down on drop, panics included: processes started here are stopped
//! (SIGTERM, then SIGKILL), any process left in one of the namespaces is killed, and the
//! namespaces are deleted (which removes their veths and the bridge). Names carry the test
//! process's pid so parallel runs and leftovers of a crashed run never collide.

use super::Running;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<(String, Running)>,
}

impl Lab {
    /// A lab, or `None` (with a message) where namespaces cannot be made: not root, no
    /// CAP_NET_ADMIN, or no `ip`. Under CI (`CI` set, running as root) that is a failure.
    pub fn new(tag: &str) -> Option<Lab> {
        let lab = Lab {
            prefix: format!("sl{tag}{}", std::process::id() % 100_000),
            namespaces: Vec::new(),
            children: Vec::new(),
        };
        let probe = lab.name("probe");
        let made = Command::new("ip")
            .args(["netns", "add", &probe])
            .stderr(Stdio::piped())
            .output();
        match made {
            Ok(output) if output.status.success() => {
                let _ = Command::new("ip").args(["netns", "del", &probe]).status();
                Some(lab)
            }
            other => {
                let why = match other {
                    Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                    Err(error) => format!("cannot run ip: {error}"),
                };
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "cannot make a network namespace ({why}); CI runs as root with iproute2"
                    );
                }
                eprintln!(
                    "SKIPPED: cannot make a network namespace ({why}); needs root or \
                     CAP_NET_ADMIN and iproute2; CI runs this test"
                );
                None
            }
        }
    }

    /// The namespace name of a role (`lb1`, `client`...).
    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Runs `ip ARGS`, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) {
        let output = Command::new("ip").args(args).output().unwrap();
        assert!(
            output.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The switch: a namespace with a bridge `br0`, up.
    pub fn switch(&mut self) {
        let switch = self.name("sw");
        self.ip(&["netns", "add", &switch]);
        self.namespaces.push(switch.clone());
        self.ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        self.ip(&["-n", &switch, "link", "set", "br0", "up"]);
    }

    /// A host on the switch with `address` (CIDR) on its `eth0`, loopback up.
    pub fn host(&mut self, role: &str, address: &str) {
        let (host, switch) = (self.name(role), self.name("sw"));
        self.ip(&["netns", "add", &host]);
        self.namespaces.push(host.clone());
        self.ip(&[
            "link", "add", "eth0", "netns", &host, "type", "veth", "peer", "name", role, "netns",
            &switch,
        ]);
        self.ip(&["-n", &switch, "link", "set", role, "master", "br0", "up"]);
        self.ip(&["-n", &host, "addr", "add", address, "dev", "eth0"]);
        self.ip(&["-n", &host, "link", "set", "eth0", "up"]);
        self.ip(&["-n", &host, "link", "set", "lo", "up"]);
    }

    /// Starts `program ARGS` inside a host's namespace, its output to `log`.
    pub fn spawn(&mut self, role: &str, program: &str, args: &[&str], log: &std::path::Path) {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name(role), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} in {role}: {e}"));
        self.children.push((role.to_owned(), Running(child)));
    }

    /// SIGKILLs the first program still running that was started in `role` (`ip netns exec`
    /// replaces itself with the program, so the pid is the program's).
    pub fn kill(&mut self, role: &str) -> Option<std::process::ExitStatus> {
        let at = self.children.iter().position(|(r, _)| r == role)?;
        let (_, mut running) = self.children.remove(at);
        running.stop();
        running.exited()
    }

    /// Whether a host's `eth0` holds `address` (the floating address, without prefix).
    pub fn holds(&self, role: &str, address: &str) -> bool {
        let output = Command::new("ip")
            .args([
                "-n",
                &self.name(role),
                "-o",
                "-4",
                "addr",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).contains(&format!("inet {address}/"))
    }

    /// Runs `f` on a thread inside a host's network namespace (its sockets stay there).
    pub fn in_namespace<T: Send + 'static>(
        &self,
        role: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name(role));
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // SIGTERM first so keepalived removes its addresses and stops its children cleanly.
        for (_, running) in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &running.0.id().to_string()])
                .status();
        }
        let end = tokio::time::Instant::now() + Duration::from_secs(3);
        for (_, running) in &mut self.children {
            while running.exited().is_none() && tokio::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            running.stop();
        }
        // Anything still inside (a keepalived child whose parent died) is ours: kill it.
        for namespace in &self.namespaces {
            if let Ok(output) = Command::new("ip")
                .args(["netns", "pids", namespace])
                .output()
            {
                for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
        }
        for namespace in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
    }
}
