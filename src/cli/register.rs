//! `sluice register`: the command line's options turned into one registry's registration
//! (etcd, Consul or ZooKeeper), run for as long as this process or its COMMAND runs. The
//! registration itself is `crate::discovery::register`.

use super::CliError;
use super::args::RegisterArgs;
use crate::discovery::register::{ConsulOptions, EtcdOptions, RegisterOptions, ZooKeeperOptions};
use std::process::ExitCode;

/// Registers, waits for a signal or the command's exit, deregisters; exits with the
/// command's status (0 without one).
pub fn register(args: RegisterArgs) -> Result<ExitCode, CliError> {
    let RegisterArgs {
        etcd,
        prefix,
        consul,
        service,
        tags,
        token_file,
        ca,
        zookeeper,
        path,
        address,
        weight,
        ttl,
        deregister_critical_after,
        command,
    } = args;
    // clap's group makes exactly one of the three present.
    let options = if let Some(consul) = consul {
        let service = service.unwrap_or_default();
        RegisterOptions::Consul(
            ConsulOptions::new(&consul, &service, address, weight, ttl, tags)?
                .with_credentials(token_file, ca)?
                .with_deregister_after(deregister_critical_after)?,
        )
    } else if !zookeeper.is_empty() {
        let path = path.unwrap_or_default();
        RegisterOptions::ZooKeeper(ZooKeeperOptions::new(
            &zookeeper, &path, address, weight, ttl,
        )?)
    } else {
        let prefix = prefix.unwrap_or_default();
        RegisterOptions::Etcd(EtcdOptions::new(etcd, &prefix, address, weight, ttl)?)
    };
    let runtime = super::current_thread_runtime()?;
    let code = runtime.block_on(crate::discovery::register::run(options, &command))?;
    Ok(ExitCode::from(code))
}
