//! External programs the tests run (etcd, ZooKeeper's java, dnsmasq, chromium): found, or
//! the test is skipped (failed under CI).

/// Whether an external program a test needs is installed. Under CI (`CI` set, as `.ci/run`
/// runs) a missing one fails the test, since CI installs it; on a developer machine the test
/// is skipped with a message saying what to install.
pub fn require_program(candidates: &[&str], package: &str) -> Option<String> {
    for candidate in candidates {
        let found = std::process::Command::new("which")
            .arg(candidate)
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return Some((*candidate).to_owned());
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("{candidates:?} not found: .ci/run installs the Debian package {package}");
    }
    eprintln!(
        "SKIPPED: {candidates:?} not installed (apt-get install {package}); CI runs this test"
    );
    None
}

/// A spawned server process (etcd, ZooKeeper, dnsmasq) that is killed and reaped when the
/// fixture holding it is dropped or restarted.
pub struct Running(pub std::process::Child);

impl Running {
    /// Kills the process and waits for it (a no-op once it has exited).
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// The exit status, if the process has already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}
