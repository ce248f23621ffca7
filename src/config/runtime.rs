//! Validation of the process-wide sections: `runtime:` (worker threads, drain deadline) and
//! `admin:` (where the admin API listens, its token file). Both are optional; a missing
//! `runtime:` takes the defaults and a missing `admin:` turns the admin API off.

use super::file::{Accept, RawAdmin, RawRuntime, Scheduler};
use super::{AdminConfig, DEFAULT_DRAIN_TIMEOUT, RuntimeConfig, Validator};
use crate::error::ConfigError;

impl Validator<'_> {
    pub(super) fn runtime(&self, raw: Option<RawRuntime>) -> Result<RuntimeConfig, ConfigError> {
        Ok(match raw {
            None => RuntimeConfig {
                worker_threads: None,
                scheduler: Scheduler::default(),
                accept: Accept::default(),
                drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            },
            Some(runtime) => RuntimeConfig {
                worker_threads: match runtime.worker_threads {
                    Some(threads) if threads.value == 0 || threads.value > 1024 => {
                        return Err(self.error_at(
                            threads.referenced,
                            "runtime.worker_threads".into(),
                            format!("must be between 1 and 1024, got {}", threads.value),
                        ));
                    }
                    threads => threads.map(|t| t.value),
                },
                scheduler: runtime.scheduler.unwrap_or_default(),
                accept: runtime.accept.unwrap_or_default(),
                drain_timeout: self.duration(
                    runtime.drain_timeout.as_ref(),
                    "runtime.drain_timeout",
                    DEFAULT_DRAIN_TIMEOUT,
                )?,
            },
        })
    }

    pub(super) fn admin(&self, raw: Option<RawAdmin>) -> Result<Option<AdminConfig>, ConfigError> {
        Ok(match raw {
            None => None,
            Some(admin) => Some(AdminConfig {
                bind: self.socket_addr(&admin.bind, "admin.bind".into())?,
                token_file: admin.token_file.as_ref().map(|t| t.value.clone().into()),
            }),
        })
    }
}
