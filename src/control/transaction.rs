//! A change as a transaction: `prepare` does everything that can fail and changes nothing
//! that runs; `commit` swaps and spawns and cannot fail.
//!
//! Prepare, in order: the new layers; for a new config file, its admin token (a file read),
//! the plan (`config::diff` against the file layer in force), and every socket the plan needs
//! (`listeners::acquire`: taken over, inherited or bound, duplicated, registered with the
//! workers); the effective config and the snapshot built from it, reusing backend state by
//! identity. Commit: start the certificate watches, store the snapshot, the layers and the token, start the new accept loops
//! and then stop the old ones, sync the health probes, and tell discovery the file layer.

use super::listeners::{Acquired, Context};
use super::{Control, ControlPlane, Layers, Live, Proposal, lock};
use crate::config::Config;
use crate::config::diff::{ReloadPlan, diff};
use crate::error::Error;
use crate::state::Snapshot;
use crate::upgrade::Inherited;
use std::sync::Arc;

/// A change with everything that can fail done.
pub(super) struct Prepared {
    layers: Layers,
    plan: ReloadPlan,
    /// The new file layer's admin token; `None` when the file layer did not change.
    admin_token: Option<Option<String>>,
    /// `None`: the effective config did not change, the snapshot in force stays.
    snapshot: Option<Snapshot>,
    sockets: Acquired,
    /// This control plane, for the admin listener commit may start.
    handle: Arc<dyn ControlPlane>,
}

impl Control {
    pub(super) fn context(&self) -> Context<'_> {
        Context {
            workers: self.env.workers.as_ref(),
            shards: self.env.shards,
            shutdown: &self.env.shutdown,
            tracker: &self.env.tracker,
            snapshot: &self.snapshot,
        }
    }

    pub(super) fn prepare(
        &self,
        live: &Live,
        current: &Arc<Snapshot>,
        proposal: Proposal,
        inherited: Option<&mut Inherited>,
    ) -> Result<Prepared, Error> {
        let handle: Arc<dyn ControlPlane> = match self.me.upgrade() {
            Some(control) => control,
            None => return Err(stopped()),
        };
        let mut layers = live.layers.clone();
        let mut admin_token = None;
        let mut sockets = Acquired::default();
        let file_plan = match proposal {
            Proposal::File(config, text) => {
                admin_token = Some(read_admin_token(&config)?);
                let plan = diff(&layers.file, &config);
                sockets = live
                    .listeners
                    .acquire(&plan, &config, inherited, &self.context())?;
                // TLS sessions and ticket keys are carried by listener name, like backend
                // state by identity: a reload does not cost every client a full handshake.
                for (name, listener) in &config.listeners {
                    let old = layers.file.listeners.get(name).and_then(|l| l.tls.as_ref());
                    if let (Some(new), Some(old)) = (&listener.tls, old) {
                        new.carry_sessions(old);
                    }
                }
                layers.file = Arc::new(*config);
                if text.is_some() {
                    layers.text = text;
                }
                Some(plan)
            }
            Proposal::Discovered(sets) => {
                layers.discovered = sets;
                None
            }
            Proposal::Weight(pool, address, weight) => {
                layers.weights.insert((pool, address), weight);
                None
            }
        };
        let effective = layers.effective();
        layers.retain_for(&effective);
        // Without a new file the plan is what the effective config does (discovery logs it).
        let plan = file_plan.unwrap_or_else(|| diff(&current.config, &effective));
        let snapshot = (admin_token.is_some() || effective != *current.config)
            .then(|| Snapshot::build(Arc::new(effective), Some(current)));
        #[cfg(test)]
        if self
            .env
            .fail_prepare
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::Io {
                context: "injected failure at the end of prepare".into(),
                source: std::io::Error::other("test"),
            });
        }
        Ok(Prepared {
            layers,
            plan,
            admin_token,
            snapshot,
            sockets,
            handle,
        })
    }

    pub(super) fn commit(&self, prepared: Prepared) -> ReloadPlan {
        let Prepared {
            layers,
            plan,
            admin_token,
            snapshot,
            sockets,
            handle,
        } = prepared;
        let file_changed = admin_token.is_some();
        let file = Arc::clone(&layers.file);
        {
            let mut live = lock(&self.live);
            let live: &mut Live = &mut live;
            if let Some(snapshot) = snapshot {
                // Certificates rotate by themselves from here on (a store watches once).
                for tls in snapshot
                    .config
                    .listeners
                    .values()
                    .filter_map(|l| l.tls.as_ref())
                {
                    tls.store.watch();
                }
                self.snapshot.store(Arc::new(snapshot));
            }
            if let Some(token) = admin_token {
                live.admin_token = token;
            }
            live.layers = layers;
            let context = self.context();
            live.listeners
                .commit(sockets, &plan, &context, &self.env.hooks.admin, &handle);
        }
        self.env.probes.sync(&self.snapshot, &self.env.shutdown);
        if file_changed {
            (self.env.hooks.config_committed)(&file);
        }
        plan
    }
}

fn stopped() -> Error {
    Error::Io {
        context: "cannot apply the change".into(),
        source: std::io::Error::other("the control plane is stopping"),
    }
}

/// Reads `admin.token_file` (trimmed). A missing or empty file is an error: a configured
/// token must never silently turn into "no token".
fn read_admin_token(config: &Config) -> Result<Option<String>, Error> {
    let Some(path) = config.admin.as_ref().and_then(|a| a.token_file.as_ref()) else {
        return Ok(None);
    };
    read_token_file(path).map(Some)
}

/// The admin token in a token file: its text without surrounding whitespace (a trailing
/// newline), refused when empty. The daemon and the CLI (`sluice drain`...) read it the same
/// way, so a token written by `echo` works for both.
pub fn read_token_file(path: &std::path::Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        context: format!("cannot read admin token file {}", path.display()),
        source,
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(Error::Io {
            context: format!("admin token file {}", path.display()),
            source: std::io::Error::other("is empty"),
        });
    }
    Ok(token)
}
