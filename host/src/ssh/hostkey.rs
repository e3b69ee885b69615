//! Host keys: loaded from their own files; a missing file gets a new ed25519 key (mode 0600).
//! As in ContainerSSH, an `ssh.hostkeys` entry may also be the key itself (PEM or OpenSSH text).
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

pub fn load_or_generate(path: &Path) -> anyhow::Result<PrivateKey> {
    if let Some(text) = path
        .to_str()
        .map(str::trim)
        .filter(|t| t.starts_with("-----BEGIN"))
    {
        // Never in a message: it is the private key.
        return russh::keys::decode_secret_key(text, None).map_err(|e| {
            anyhow::anyhow!("cannot read a host key given as text in ssh.hostkeys: {e}")
        });
    }
    if path.exists() {
        return russh::keys::load_secret_key(path, None)
            .with_context(|| format!("cannot load host key {}", path.display()));
    }
    let seed: [u8; 32] = rand::random();
    let keypair = Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::new(KeypairData::Ed25519(keypair), "containerssh host key")
        .context("cannot build the host key")?;
    let text = key
        .to_openssh(LineEnding::LF)
        .context("cannot encode the host key")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create host key file {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write host key file {}", path.display()))?;
    tracing::info!(path = %path.display(), fingerprint = %key.public_key().fingerprint(Default::default()), "generated a new ed25519 host key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_as_text_is_used_as_it_is_and_its_errors_do_not_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host_ed25519");
        let generated = load_or_generate(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let inline = load_or_generate(Path::new(&format!("\n{text}"))).unwrap();
        assert_eq!(inline.public_key(), generated.public_key());
        let broken = text.replace('A', "B");
        let err = format!("{:#}", load_or_generate(Path::new(&broken)).unwrap_err());
        assert!(!err.contains("BEGIN"), "{err}");
        assert!(err.contains("ssh.hostkeys"), "{err}");
    }

    #[test]
    fn generates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/host_ed25519");
        let first = super::load_or_generate(&path).unwrap();
        let second = super::load_or_generate(&path).unwrap();
        assert_eq!(first.public_key(), second.public_key());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
