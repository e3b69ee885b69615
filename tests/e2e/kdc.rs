//! A real MIT Kerberos KDC for the tests (Debian's krb5-kdc): its own realm, database and
//! configuration in a temporary directory, started in the foreground on a free port, stopped
//! when dropped. Principals and keytabs are made with `kadmin.local`, tickets with `kinit`.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, wait_for_port};

pub const REALM: &str = "CONTAINERSSH.TEST";
/// A second realm of the same KDC that CONTAINERSSH.TEST trusts (cross-realm keys both
/// ways), as a company's other Kerberos domain would be: its principals get tickets for the
/// gateway's service, but are not the gateway's users.
pub const OTHER_REALM: &str = "OTHER.TEST";

pub struct Kdc {
    child: Child,
    dir: tempfile::TempDir,
    /// The realm's client configuration (what the gateway's `configPath` and clients'
    /// KRB5_CONFIG point at).
    pub krb5_conf: PathBuf,
    /// The gateway's keytab (`host/localhost`).
    pub keytab: PathBuf,
}

impl Kdc {
    pub fn start() -> Kdc {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path();
        let krb5_conf = d.join("krb5.conf");
        std::fs::write(
            &krb5_conf,
            format!(
                "[libdefaults]\n  default_realm = {REALM}\n  dns_lookup_kdc = false\n  dns_lookup_realm = false\n  rdns = false\n  dns_canonicalize_hostname = false\n  udp_preference_limit = 1\n\
                 [realms]\n  {REALM} = {{\n    kdc = 127.0.0.1:{port}\n  }}\n  {OTHER_REALM} = {{\n    kdc = 127.0.0.1:{port}\n  }}\n\
                 [capaths]\n  {OTHER_REALM} = {{\n    {REALM} = .\n  }}\n  {REALM} = {{\n    {OTHER_REALM} = .\n  }}\n\
                 [domain_realm]\n  localhost = {REALM}\n"
            ),
        )
        .expect("krb5.conf");
        std::fs::write(
            d.join("kdc.conf"),
            format!(
                "[kdcdefaults]\n  kdc_listen = 127.0.0.1:{port}\n  kdc_tcp_listen = 127.0.0.1:{port}\n\
                 [realms]\n  {REALM} = {{\n    database_name = {db}\n    key_stash_file = {stash}\n    acl_file = {acl}\n    max_life = 1h\n    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n  }}\n\
                 {OTHER_REALM} = {{\n    database_name = {other_db}\n    key_stash_file = {other_stash}\n    acl_file = {acl}\n    max_life = 1h\n    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n  }}\n\
                 [logging]\n  kdc = FILE:{log}\n",
                db = d.join("principal").display(),
                stash = d.join("stash").display(),
                other_db = d.join("principal-other").display(),
                other_stash = d.join("stash-other").display(),
                acl = d.join("kadm5.acl").display(),
                log = d.join("kdc.log").display(),
            ),
        )
        .expect("kdc.conf");
        std::fs::write(d.join("kadm5.acl"), "").expect("acl");
        let env = realm_env(d);
        let keytab = d.join("krb5.keytab");
        for realm in [REALM, OTHER_REALM] {
            admin_tool(
                &env,
                "kdb5_util",
                &[
                    "create",
                    "-s",
                    "-r",
                    realm,
                    "-P",
                    "master-password-for-tests",
                ],
            );
        }
        // Cross-realm trust: the same key for each direction's krbtgt in both databases.
        for realm in [REALM, OTHER_REALM] {
            for (from, to) in [(OTHER_REALM, REALM), (REALM, OTHER_REALM)] {
                admin_tool(
                    &env,
                    "kadmin.local",
                    &[
                        "-r",
                        realm,
                        "-q",
                        &format!("addprinc -pw cross-realm-key-for-tests krbtgt/{to}@{from}"),
                    ],
                );
            }
        }
        admin_tool(
            &env,
            "kadmin.local",
            &["-r", REALM, "-q", "addprinc -randkey host/localhost"],
        );
        admin_tool(
            &env,
            "kadmin.local",
            &[
                "-r",
                REALM,
                "-q",
                &format!("ktadd -k {} host/localhost", keytab.display()),
            ],
        );
        let child = Command::new("krb5kdc")
            .args(["-n", "-r", REALM, "-r", OTHER_REALM])
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("krb5kdc starts");
        let kdc = Kdc {
            child,
            keytab,
            krb5_conf,
            dir,
        };
        wait_for_port("the KDC", port, Duration::from_secs(30));
        kdc
    }

    /// KRB5_CONFIG and KRB5_KDC_PROFILE for this realm's tools.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        realm_env(self.dir.path())
    }

    /// One `kadmin.local` query on this realm.
    pub fn kadmin(&self, query: &str) {
        admin_tool(&self.env(), "kadmin.local", &["-r", REALM, "-q", query]);
    }

    pub fn add_user(&self, name: &str, password: &str) {
        self.kadmin(&format!("addprinc -pw {password} {name}"));
    }

    /// A user of OTHER_REALM (`name@OTHER.TEST`).
    pub fn add_other_realm_user(&self, name: &str, password: &str) {
        admin_tool(
            &self.env(),
            "kadmin.local",
            &[
                "-r",
                OTHER_REALM,
                "-q",
                &format!("addprinc -pw {password} {name}@{OTHER_REALM}"),
            ],
        );
    }

    /// A ticket for `user` (kinit with the password) in its own cache; returns the cache path.
    pub fn kinit(&self, user: &str, password: &str, forwardable: bool) -> PathBuf {
        let cache = self
            .dir
            .path()
            .join(format!("ccache-{}", user.replace('/', "_")));
        let mut cmd = Command::new("kinit");
        if forwardable {
            cmd.arg("-f");
        }
        let mut child = cmd
            .arg(user)
            .envs(self.env())
            .env("KRB5CCNAME", format!("FILE:{}", cache.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kinit runs");
        use std::io::Write;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "{password}");
        }
        let out = child.wait_with_output().expect("kinit");
        assert!(out.status.success(), "kinit {user}: {out:?}");
        cache
    }

    #[allow(dead_code)] // for the GSSAPI tests
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn realm_env(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("KRB5_CONFIG", dir.join("krb5.conf")),
        ("KRB5_KDC_PROFILE", dir.join("kdc.conf")),
    ]
}

fn admin_tool(env: &[(&'static str, PathBuf)], tool: &str, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .output()
        .expect("kerberos admin tool runs");
    assert!(out.status.success(), "{tool} {args:?}: {out:?}");
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
