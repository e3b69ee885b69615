//! Files granted by the auth or config server, written into the running pod before any session
//! starts: one helper exec (`sh`, `base64`, `mkdir` in the image) as the container's user, mode
//! 0600. Paths and contents travel on the helper's stdin, inside the exec stream, not in the
//! request URL (which API server audit logs record); a final "." line ends the list, so the
//! helper ends by itself, on v4 streams too.
use anyhow::{bail, Context};
use base64::Engine;

use super::exec::{self, Target};
use crate::backend::{checked_file_path, ExitReason};

/// Largest total of granted files (before encoding) a pod is given.
pub const MAX_TOTAL_BYTES: usize = 256 * 1024;

const SCRIPT: &str = "umask 077; \
    while IFS= read -r path; do \
      [ \"$path\" = . ] && exit 0; \
      IFS= read -r data || exit 1; \
      d=${path%/*}; if [ -n \"$d\" ]; then mkdir -p \"$d\" || exit 1; fi; \
      printf %s \"$data\" | base64 -d > \"$path\" || exit 1; \
    done; \
    echo 'containerssh: the list of granted files was cut short' >&2; exit 1";

/// Where the forwarding helper goes in a pod (the pod spec is the operator's, so no volume is
/// added for it: /tmp must be writable).
pub const HELPER_PATH: &str = "/tmp/.containerssh/helper";

/// Puts the forwarding helper in the pod: its base64 on the stdin of one `sh` exec, whose
/// `head -c` knows where it ends (so v4 streams need no end of input), executable by the
/// container's user alone.
pub async fn place_helper(target: &Target) -> anyhow::Result<()> {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(crate::backend::FORWARDING_HELPER);
    let dir = HELPER_PATH
        .rsplit_once('/')
        .map(|(d, _)| d)
        .unwrap_or("/tmp");
    let script = format!(
        "umask 077 && mkdir -p {dir} && head -c {len} | base64 -d > {HELPER_PATH}.part && \
         chmod 700 {HELPER_PATH}.part && mv -f {HELPER_PATH}.part {HELPER_PATH}",
        len = encoded.len()
    );
    let argv = ["/bin/sh".to_string(), "-c".to_string(), script];
    let (exit, printed) = exec::run_with_input(target, &argv, encoded.as_bytes())
        .await
        .context("cannot place the forwarding helper in the pod")?;
    if exit != ExitReason::Status(0) {
        bail!(
            "cannot place the forwarding helper in the pod (it needs sh, head, base64 and a writable /tmp; {exit:?}): {}",
            printed.trim().chars().take(300).collect::<String>()
        );
    }
    Ok(())
}

pub async fn place(target: &Target, files: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let input = listing(files)?;
    let argv = ["/bin/sh".to_string(), "-c".to_string(), SCRIPT.to_string()];
    let (exit, printed) = exec::run_with_input(target, &argv, &input)
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

/// `path` and base64 content lines for each file, then ".".
fn listing(files: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<u8>> {
    let total: usize = files.iter().map(|(_, c)| c.len()).sum();
    if total > MAX_TOTAL_BYTES {
        bail!("granted files total {total} bytes; the Kubernetes backend takes at most {MAX_TOTAL_BYTES}");
    }
    let mut input = Vec::with_capacity(total * 4 / 3 + 64 * files.len() + 2);
    for (path, content) in files {
        checked_file_path(path)?;
        input.extend_from_slice(path.as_bytes());
        input.push(b'\n');
        input.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(content)
                .as_bytes(),
        );
        input.push(b'\n');
    }
    input.extend_from_slice(b".\n");
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    #[test]
    fn files_become_path_and_base64_lines() {
        let input = listing(&[("/tmp/a b".into(), b"hi".to_vec())]).unwrap();
        assert_eq!(input, b"/tmp/a b\naGk=\n.\n");
        assert!(listing(&[("relative".into(), vec![])]).is_err());
        assert!(listing(&[("/a\nb".into(), vec![])]).is_err());
        assert!(listing(&[("/x".into(), vec![0; MAX_TOTAL_BYTES + 1])]).is_err());
    }

    /// The script, run by the machine's shell, writes what it was given and ends at ".".
    #[test]
    fn the_script_writes_private_files_and_ends_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = format!("{}/sub/granted", dir.path().display());
        let input = listing(&[(path.clone(), b"secret\n".to_vec())]).unwrap();
        let mut child = Command::new("/bin/sh")
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        // The stdin pipe stays open: the helper must not need its end.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&input).unwrap();
        let status = child.wait().unwrap();
        drop(stdin);
        assert!(status.success());
        assert_eq!(std::fs::read(&path).unwrap(), b"secret\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
