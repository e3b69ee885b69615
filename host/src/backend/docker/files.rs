//! Files granted by the auth or config server, placed in a container before it starts (one tar
//! archive through Docker's archive API). Paths must be absolute and plain; the files belong to
//! the container's user (when it is numeric) with mode 0600, since they often hold secrets.
use anyhow::Context;
use bollard::Docker;

use crate::backend::checked_file_path;

/// Uploads `files` into container `id` (created, not yet started).
pub async fn place(
    docker: &Docker,
    id: &str,
    user: &str,
    files: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let archive = archive(files, owner_ids(user))?;
    let options = bollard::query_parameters::UploadToContainerOptions {
        path: "/".into(),
        ..Default::default()
    };
    docker
        .upload_to_container(id, Some(options), bollard::body_full(archive.into()))
        .await
        .context("cannot place the granted files in the container")
}

/// `uid[:gid]` of a numeric container user; names cannot be resolved from outside.
fn owner_ids(user: &str) -> (u64, u64) {
    let mut parts = user.splitn(2, ':');
    let uid = parts.next().and_then(|u| u.parse().ok()).unwrap_or(0);
    let gid = parts.next().and_then(|g| g.parse().ok()).unwrap_or(uid);
    (uid, gid)
}

fn archive(files: &[(String, Vec<u8>)], (uid, gid): (u64, u64)) -> anyhow::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let relative = checked_file_path(path)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o600);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        );
        tar.append_data(&mut header, relative, content.as_slice())
            .with_context(|| format!("cannot archive {path}"))?;
    }
    tar.into_inner().context("cannot finish the archive")
}

/// Places the forwarding helper at `HELPER_PATH`: into the helper volume when the container
/// has one (read-only root file system), else onto the root file system. Mode 0755, owned by
/// root, so the container's user can run it but not change it.
pub async fn place_helper(docker: &Docker, id: &str, in_volume: bool) -> anyhow::Result<()> {
    use crate::backend::{FORWARDING_HELPER, HELPER_DIR};
    let mut tar = tar::Builder::new(Vec::new());
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (path, file) = if in_volume {
        (HELPER_DIR.to_string(), "helper")
    } else {
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        dir.set_mtime(mtime);
        tar.append_data(&mut dir, ".containerssh/", std::io::empty())
            .context("cannot archive the helper directory")?;
        ("/".to_string(), ".containerssh/helper")
    };
    let mut header = tar::Header::new_gnu();
    header.set_size(FORWARDING_HELPER.len() as u64);
    header.set_mode(0o755);
    header.set_mtime(mtime);
    tar.append_data(&mut header, file, FORWARDING_HELPER)
        .context("cannot archive the helper")?;
    let archive = tar.into_inner().context("cannot finish the archive")?;
    let options = bollard::query_parameters::UploadToContainerOptions {
        path,
        ..Default::default()
    };
    docker
        .upload_to_container(id, Some(options), bollard::body_full(archive.into()))
        .await
        .context("cannot place the forwarding helper in the container")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_and_owners_parsed() {
        assert_eq!(owner_ids("1000:1001"), (1000, 1001));
        assert_eq!(owner_ids("1000"), (1000, 1000));
        assert_eq!(owner_ids("nobody"), (0, 0));
        let tar = archive(&[("/tmp/a".into(), b"x".to_vec())], (1, 2)).unwrap();
        let mut a = tar::Archive::new(tar.as_slice());
        let entry = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("tmp/a"));
        assert_eq!(entry.header().uid().unwrap(), 1);
        assert_eq!(entry.header().mode().unwrap(), 0o600);
    }
}
