//! Files granted by the auth or config server, written into the running pod before any session
//! starts: one helper exec (`sh`, `base64`, `mkdir` in the image) as the container's user, mode
//! 0600. The content travels base64-encoded in the exec request's arguments, so the total is
//! capped well below what API servers accept in a request line.
use anyhow::{bail, Context};
use base64::Engine;

use super::exec::{self, Target};
use crate::backend::{checked_file_path, ExitReason};

/// Largest total of granted files (before encoding) a pod can receive this way.
pub const MAX_TOTAL_BYTES: usize = 256 * 1024;

const SCRIPT: &str = "umask 077; \
    while [ $# -gt 1 ]; do \
      d=${1%/*}; if [ -n \"$d\" ]; then mkdir -p \"$d\" || exit 1; fi; \
      printf %s \"$2\" | base64 -d > \"$1\" || exit 1; \
      shift 2; \
    done";

pub async fn place(target: &Target, files: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let argv = arguments(files)?;
    let (exit, printed) = exec::run(target, &argv)
        .await
        .context("cannot place the granted files in the pod")?;
    if exit != ExitReason::Status(0) {
        bail!(
            "cannot place the granted files in the pod ({exit:?}): {}",
            printed.trim()
        );
    }
    Ok(())
}

fn arguments(files: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<String>> {
    let total: usize = files.iter().map(|(_, c)| c.len()).sum();
    if total > MAX_TOTAL_BYTES {
        bail!("granted files total {total} bytes; the Kubernetes backend takes at most {MAX_TOTAL_BYTES}");
    }
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        SCRIPT.to_string(),
        "containerssh-files".to_string(),
    ];
    for (path, content) in files {
        checked_file_path(path)?;
        argv.push(path.clone());
        argv.push(base64::engine::general_purpose::STANDARD.encode(content));
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_become_path_and_base64_pairs() {
        let argv = arguments(&[("/tmp/a b".into(), b"hi".to_vec())]).unwrap();
        assert_eq!(&argv[3..], ["containerssh-files", "/tmp/a b", "aGk="]);
        assert!(arguments(&[("relative".into(), vec![])]).is_err());
        assert!(arguments(&[("/x".into(), vec![0; MAX_TOTAL_BYTES + 1])]).is_err());
    }

    /// The script itself, run by the machine's shell, writes what it was given.
    #[test]
    fn the_script_writes_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = format!("{}/sub/granted", dir.path().display());
        let argv = arguments(&[(path.clone(), b"secret\n".to_vec())]).unwrap();
        let status = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read(&path).unwrap(), b"secret\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
