//! A connection's workload settings, as the SSH layer sees them whatever the backend, and what
//! a client asked to run.
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use super::registry::BackendType;
use super::{ProcessSpec, ProgramSpec};
use crate::config::{Config, ExecutionMode};

/// The workload settings of one connection: the file's, or a config server's answer merged
/// over them. Each backend implements it for its own settings type.
pub trait WorkloadSettings: Debug + Send + Sync {
    /// The backend these settings are for.
    fn backend(&self) -> &'static BackendType;
    /// One workload per connection, or per session.
    fn mode(&self) -> ExecutionMode;
    /// Only shells: exec and subsystem requests are refused.
    fn disable_command(&self) -> bool;
    /// Whether the backend can start the subsystem `name` (unknown ones are refused before the
    /// security policy is asked).
    fn has_subsystem(&self, name: &str) -> bool;
    /// What programs run in, for logs (an image, a host).
    fn describe(&self) -> String;
    /// For the backend to get its own settings type back.
    fn as_any(&self) -> &dyn Any;
}

/// The workload settings `config` selects.
pub fn from_config(config: &Config) -> Arc<dyn WorkloadSettings> {
    (config.backend.kind().settings)(config)
}

/// This backend's own settings type in `settings`, or an error naming both backends.
pub fn downcast<'a, T: 'static>(
    settings: &'a dyn WorkloadSettings,
    backend: &BackendType,
) -> anyhow::Result<&'a T> {
    settings.as_any().downcast_ref::<T>().ok_or_else(|| {
        anyhow::anyhow!(
            "the {} backend was given settings of the {} backend",
            backend.name,
            settings.backend().name
        )
    })
}

/// What a session channel asked to run, as the client sent it (after the security policy:
/// a forced command arrives as `Exec`). Backends decide what it means to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Shell,
    Exec(String),
    Subsystem(String),
}

/// How container backends run a session's command: the shell for `Shell`, `<shell> -c
/// <command>` for `Exec`, the configured program for a subsystem.
#[derive(Debug, Clone)]
pub struct ContainerCommands {
    pub shell: Vec<String>,
    pub subsystems: BTreeMap<String, String>,
}

impl ContainerCommands {
    pub fn argv(&self, command: &Command) -> anyhow::Result<Vec<String>> {
        Ok(match command {
            Command::Shell => self.shell.clone(),
            Command::Exec(command) => {
                let mut argv = self.shell.clone();
                argv.push("-c".into());
                argv.push(command.clone());
                argv
            }
            Command::Subsystem(name) => match self.subsystems.get(name) {
                Some(program) => vec![program.clone()],
                None => anyhow::bail!("no subsystem {name:?} is configured"),
            },
        })
    }

    /// The process that runs `program` in the container.
    pub fn process(&self, program: ProgramSpec) -> anyhow::Result<ProcessSpec> {
        Ok(ProcessSpec {
            argv: self.argv(&program.command)?,
            env: program.env,
            tty: program.tty,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_commands_become_argv() {
        let commands = ContainerCommands {
            shell: vec!["/bin/bash".to_string()],
            subsystems: BTreeMap::from([("sftp".to_string(), "/sftp-server".to_string())]),
        };
        let argv = |c: Command| commands.argv(&c);
        assert_eq!(argv(Command::Shell).unwrap(), ["/bin/bash"]);
        assert_eq!(
            argv(Command::Exec("echo hi".into())).unwrap(),
            ["/bin/bash", "-c", "echo hi"]
        );
        assert_eq!(
            argv(Command::Subsystem("sftp".into())).unwrap(),
            ["/sftp-server"]
        );
        assert!(argv(Command::Subsystem("nope".into())).is_err());
    }
}
