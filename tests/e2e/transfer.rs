use std::process::{Command, Output};

use serde_json::json;

use crate::harness::*;

#[test]
fn sftp_put_ls_get_round_trips_a_file() {
    let gw = Gateway::start(json!({}));
    assert_sftp_round_trip(&gw);
    gw.assert_no_containers();
}

/// Uploads 1 MiB with the real `sftp`, lists it, downloads it again and removes it; the copy
/// must be the same.
pub fn assert_sftp_round_trip(gw: &Gateway) {
    let up = random_file(gw.dir.path(), "up.bin", 1 << 20);
    let down = gw.dir.path().join("down.bin");
    let batch = format!(
        "pwd\nput {} up.bin\nls -l\nget up.bin {}\nrm up.bin\n",
        up.display(),
        down.display()
    );
    let mut sftp = Command::new("sftp");
    sftp.args(gw.transfer_options())
        .args(["-b", "-"])
        .arg(format!("{USER}@127.0.0.1"));
    let out = run(sftp, batch.as_bytes());
    assert!(out.status.success(), "{out:?}\n{}", gw.log_text());
    let printed = text(&out.stdout);
    assert!(printed.contains("Remote working directory: /"), "{printed}");
    assert!(printed.contains("1048576"), "{printed}");
    assert_eq!(std::fs::read(&up).unwrap(), std::fs::read(&down).unwrap());
}

/// Both scp runs share one multiplexed SSH connection, hence one container (connection mode),
/// so what the first uploads the second can download.
#[test]
fn scp_works_with_both_protocols() {
    let gw = Gateway::start(json!({}));
    for (name, upload, download) in scp_round_trips(&gw) {
        assert!(upload.status.success(), "scp {name} upload: {upload:?}");
        assert!(
            download.status.success(),
            "scp {name} download: {download:?}"
        );
    }
    gw.assert_no_containers();
}

/// Uploads a file with `scp` (SFTP protocol, then legacy `-O`) and downloads it again over one
/// multiplexed connection; checks each copy came back the same and returns each protocol's
/// upload and download runs.
pub fn scp_round_trips(gw: &Gateway) -> Vec<(&'static str, Output, Output)> {
    let up = random_file(gw.dir.path(), "scp.bin", 300_000);
    let control = control_master(gw);
    let mut runs = Vec::new();
    for (flag, name) in [(None, "sftp-protocol"), (Some("-O"), "legacy-protocol")] {
        let back = gw.dir.path().join(format!("back-{name}.bin"));
        let mut put = Command::new("scp");
        put.args(gw.transfer_options()).args(["-o", &control]);
        put.args(flag);
        put.arg(&up).arg(format!("{USER}@127.0.0.1:{name}.bin"));
        let upload = run(put, b"");
        let mut get = Command::new("scp");
        get.args(gw.transfer_options()).args(["-o", &control]);
        get.args(flag);
        get.arg(format!("{USER}@127.0.0.1:{name}.bin")).arg(&back);
        let download = run(get, b"");
        assert_eq!(
            std::fs::read(&up).unwrap(),
            std::fs::read(&back).unwrap_or_default(),
            "{name}: {upload:?} {download:?}\n{}",
            gw.log_text()
        );
        runs.push((name, upload, download));
    }
    let mut exit = gw.ssh();
    exit.args(["-o", &control, "-O", "exit"]);
    let _ = run(exit, b"");
    runs
}
