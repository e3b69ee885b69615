//! Password logins through MIT libkrb5 (loaded at start): a ticket is asked for with the
//! password (`krb5_get_init_creds_password`) and then verified with the keytab
//! (`krb5_verify_init_creds`), as PAM's Kerberos module does, so an answer from a forged KDC
//! is refused. Every call gets its own context (MIT contexts are not shared between threads),
//! built from `configPath` only (the environment's KRB5_CONFIG is ignored). The calls block
//! (they talk to the KDC): callers run them on blocking threads.
use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::path::Path;

use anyhow::{bail, Context};
use libloading::Library;

use super::config::KerberosConfig;
use super::KerberosError;

type Krb5Context = *mut c_void;
type Principal = *mut c_void;
type Keytab = *mut c_void;
type Ccache = *mut c_void;
type Profile = *mut c_void;
type InitCredsOpt = *mut c_void;
type ErrorCode = i32;

/// `krb5_creds`, filled by the library: only ever handled through pointers, so an ample,
/// aligned buffer stands for it (the real struct is about 120 bytes).
#[repr(C, align(16))]
struct Creds([u8; 1024]);

/// `krb5_verify_init_creds_opt` (krb5.h: `krb5_flags flags; int ap_req_nofail;`).
#[repr(C)]
struct VerifyOpt {
    flags: i32,
    ap_req_nofail: c_int,
}

/// The environment is ignored (`KRB5_INIT_CONTEXT_SECURE`).
const INIT_CONTEXT_SECURE: i32 = 1;
/// `KRB5_NT_SRV_HST`: a host-based service name.
const NT_SRV_HST: i32 = 3;

// Error codes (krb5_err.h) that mean "these credentials are wrong or not allowed".
const KDC_ERR_C_PRINCIPAL_UNKNOWN: ErrorCode = -1765328378;
const KDC_ERR_CLIENT_REVOKED: ErrorCode = -1765328366;
const KDC_ERR_KEY_EXP: ErrorCode = -1765328361;
const KDC_ERR_PREAUTH_FAILED: ErrorCode = -1765328360;
const KRB_AP_ERR_BAD_INTEGRITY: ErrorCode = -1765328353;

struct Api {
    profile_init_path: unsafe extern "C" fn(*const c_char, *mut Profile) -> c_long,
    profile_release: unsafe extern "C" fn(Profile),
    init_context_profile: unsafe extern "C" fn(Profile, i32, *mut Krb5Context) -> ErrorCode,
    free_context: unsafe extern "C" fn(Krb5Context),
    get_default_realm: unsafe extern "C" fn(Krb5Context, *mut *mut c_char) -> ErrorCode,
    free_default_realm: unsafe extern "C" fn(Krb5Context, *mut c_char),
    parse_name: unsafe extern "C" fn(Krb5Context, *const c_char, *mut Principal) -> ErrorCode,
    sname_to_principal: unsafe extern "C" fn(
        Krb5Context,
        *const c_char,
        *const c_char,
        i32,
        *mut Principal,
    ) -> ErrorCode,
    free_principal: unsafe extern "C" fn(Krb5Context, Principal),
    aname_to_localname:
        unsafe extern "C" fn(Krb5Context, Principal, c_int, *mut c_char) -> ErrorCode,
    kt_resolve: unsafe extern "C" fn(Krb5Context, *const c_char, *mut Keytab) -> ErrorCode,
    kt_close: unsafe extern "C" fn(Krb5Context, Keytab) -> ErrorCode,
    opt_alloc: unsafe extern "C" fn(Krb5Context, *mut InitCredsOpt) -> ErrorCode,
    opt_free: unsafe extern "C" fn(Krb5Context, InitCredsOpt),
    opt_set_forwardable: unsafe extern "C" fn(InitCredsOpt, c_int),
    get_init_creds_password: unsafe extern "C" fn(
        Krb5Context,
        *mut Creds,
        Principal,
        *const c_char,
        *const c_void,
        *mut c_void,
        i32,
        *const c_char,
        InitCredsOpt,
    ) -> ErrorCode,
    verify_opt_init: unsafe extern "C" fn(*mut VerifyOpt),
    verify_opt_set_ap_req_nofail: unsafe extern "C" fn(*mut VerifyOpt, c_int),
    verify_init_creds: unsafe extern "C" fn(
        Krb5Context,
        *mut Creds,
        Principal,
        Keytab,
        *mut Ccache,
        *mut VerifyOpt,
    ) -> ErrorCode,
    cc_resolve: unsafe extern "C" fn(Krb5Context, *const c_char, *mut Ccache) -> ErrorCode,
    cc_initialize: unsafe extern "C" fn(Krb5Context, Ccache, Principal) -> ErrorCode,
    cc_store_cred: unsafe extern "C" fn(Krb5Context, Ccache, *mut Creds) -> ErrorCode,
    cc_close: unsafe extern "C" fn(Krb5Context, Ccache) -> ErrorCode,
    free_cred_contents: unsafe extern "C" fn(Krb5Context, *mut Creds),
    get_error_message: unsafe extern "C" fn(Krb5Context, ErrorCode) -> *const c_char,
    free_error_message: unsafe extern "C" fn(Krb5Context, *const c_char),
}

/// libkrb5 and the settings password checks use.
pub struct Krb5 {
    api: Api,
    config_path: CString,
    keytab: CString,
    acceptor: String,
    write_ccache: bool,
    /// The default realm: user names of password logins are principals of it.
    realm: String,
    // Last: the functions above point into it.
    _library: Library,
}

/// What a password check yields.
pub struct Checked {
    /// The user's credentials cache (FILE format), when `credentialCachePath` is set.
    pub credentials: Option<Vec<u8>>,
}

impl Krb5 {
    /// Loads libkrb5.so.3 and tries the configuration and keytab once.
    pub fn load(config: &KerberosConfig) -> anyhow::Result<Krb5> {
        // SAFETY: loading MIT's libkrb5 runs its initialisers only, which have no
        // preconditions.
        let library = unsafe { Library::new("libkrb5.so.3") }
            .context("cannot load libkrb5.so.3 (MIT Kerberos; Debian: libkrb5-3)")?;
        // SAFETY: each symbol is declared with the prototype krb5.h / profile.h give it.
        let api = unsafe {
            macro_rules! sym {
                ($name:literal) => {
                    *library
                        .get(concat!($name, "\0").as_bytes())
                        .with_context(|| format!("libkrb5.so.3 has no {}", $name))?
                };
            }
            Api {
                profile_init_path: sym!("profile_init_path"),
                profile_release: sym!("profile_release"),
                init_context_profile: sym!("krb5_init_context_profile"),
                free_context: sym!("krb5_free_context"),
                get_default_realm: sym!("krb5_get_default_realm"),
                free_default_realm: sym!("krb5_free_default_realm"),
                parse_name: sym!("krb5_parse_name"),
                sname_to_principal: sym!("krb5_sname_to_principal"),
                free_principal: sym!("krb5_free_principal"),
                aname_to_localname: sym!("krb5_aname_to_localname"),
                kt_resolve: sym!("krb5_kt_resolve"),
                kt_close: sym!("krb5_kt_close"),
                opt_alloc: sym!("krb5_get_init_creds_opt_alloc"),
                opt_free: sym!("krb5_get_init_creds_opt_free"),
                opt_set_forwardable: sym!("krb5_get_init_creds_opt_set_forwardable"),
                get_init_creds_password: sym!("krb5_get_init_creds_password"),
                verify_opt_init: sym!("krb5_verify_init_creds_opt_init"),
                verify_opt_set_ap_req_nofail: sym!("krb5_verify_init_creds_opt_set_ap_req_nofail"),
                verify_init_creds: sym!("krb5_verify_init_creds"),
                cc_resolve: sym!("krb5_cc_resolve"),
                cc_initialize: sym!("krb5_cc_initialize"),
                cc_store_cred: sym!("krb5_cc_store_cred"),
                cc_close: sym!("krb5_cc_close"),
                free_cred_contents: sym!("krb5_free_cred_contents"),
                get_error_message: sym!("krb5_get_error_message"),
                free_error_message: sym!("krb5_free_error_message"),
            }
        };
        let mut krb5 = Krb5 {
            api,
            config_path: c_path(&config.config_path, "configPath")?,
            keytab: CString::new(format!("FILE:{}", config.keytab.display()))
                .context("keytab: a NUL in the path")?,
            acceptor: config.acceptor.clone(),
            write_ccache: !config.credential_cache_path.is_empty(),
            realm: String::new(),
            _library: library,
        };
        // The configuration must name a default realm (user names carry none).
        let realm = {
            let context = krb5
                .context()
                .map_err(|e| anyhow::anyhow!("configPath: {e}"))?;
            let realm = context
                .default_realm()
                .map_err(|e| anyhow::anyhow!("configPath: {e}"))?;
            context
                .keytab()
                .map_err(|e| anyhow::anyhow!("keytab: {e}"))?;
            realm
        };
        tracing::info!(realm, keytab = %config.keytab.display(), "Kerberos configuration loaded");
        krb5.realm = realm;
        Ok(krb5)
    }

    fn context(&self) -> Result<KrbContext<'_>, String> {
        let mut profile: Profile = std::ptr::null_mut();
        // SAFETY: a NUL-terminated path and an out-pointer.
        let code = unsafe { (self.api.profile_init_path)(self.config_path.as_ptr(), &mut profile) };
        if code != 0 || profile.is_null() {
            return Err(format!(
                "cannot read the Kerberos configuration {} (error {code})",
                self.config_path.to_string_lossy()
            ));
        }
        let mut ctx: Krb5Context = std::ptr::null_mut();
        // SAFETY: a valid profile (the context copies what it needs) and an out-pointer.
        let code =
            unsafe { (self.api.init_context_profile)(profile, INIT_CONTEXT_SECURE, &mut ctx) };
        // SAFETY: the profile came from profile_init_path and is released once.
        unsafe { (self.api.profile_release)(profile) };
        if code != 0 || ctx.is_null() {
            return Err(format!("cannot set up Kerberos (error {code})"));
        }
        Ok(KrbContext { krb5: self, ctx })
    }

    /// The default realm (`libdefaults.default_realm` of `configPath`).
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The local user name of `principal`, by the configuration's rules
    /// (`krb5_aname_to_localname`, as sshd decides whose account a ticket opens): a
    /// one-part principal of the default realm is its name; another realm's, a service's or
    /// an instance's has none unless `auth_to_local` maps it. Blocking (reads the
    /// configuration).
    pub fn local_name(&self, principal: &str) -> Result<String, KerberosError> {
        const MAX_NAME: usize = 256;
        let context = self.context().map_err(KerberosError::Unavailable)?;
        let c = CString::new(principal)
            .map_err(|_| KerberosError::Denied("NUL in the principal".into()))?;
        let parsed = context.principal(&c).map_err(KerberosError::Denied)?;
        let mut name = [0u8; MAX_NAME];
        // SAFETY: a valid context and principal; the buffer's size is passed and the library
        // NUL-terminates what it writes within it.
        let code = unsafe {
            (self.api.aname_to_localname)(
                context.ctx,
                parsed.0,
                MAX_NAME as c_int,
                name.as_mut_ptr().cast::<c_char>(),
            )
        };
        if code != 0 {
            return Err(KerberosError::Denied(format!(
                "the principal {principal} is no user of this gateway (not of the realm {}, and no auth_to_local rule maps it): {}",
                self.realm,
                context.error(code)
            )));
        }
        let name = CStr::from_bytes_until_nul(&name).map_err(|_| {
            KerberosError::Denied(format!("the local name of {principal} is too long"))
        })?;
        Ok(name.to_string_lossy().into_owned())
    }

    /// Asks the KDC for `user`'s ticket with `password`, verifies it with the keytab and,
    /// with `credentialCachePath`, returns the credentials as a FILE ccache's bytes.
    pub fn check_password(&self, user: &str, password: &[u8]) -> Result<Checked, KerberosError> {
        let unavailable = KerberosError::Unavailable;
        let context = self.context().map_err(unavailable)?;
        let user_c =
            CString::new(user).map_err(|_| KerberosError::Denied("NUL in the user name".into()))?;
        if password.contains(&0) {
            return Err(KerberosError::Denied("NUL in the password".into()));
        }
        // NUL-terminated, wiped when dropped.
        let mut password_c = zeroize::Zeroizing::new(Vec::with_capacity(password.len() + 1));
        password_c.extend_from_slice(password);
        password_c.push(0);
        let client = context.principal(&user_c).map_err(KerberosError::Denied)?;
        let mut creds = Box::new(Creds([0; 1024]));
        let opt = context.init_creds_opt().map_err(unavailable)?;
        // SAFETY: valid context, principal and options; creds is a zeroed buffer larger than
        // krb5_creds; no prompter (the password is given).
        let code = unsafe {
            (self.api.get_init_creds_password)(
                context.ctx,
                &mut *creds,
                client.0,
                password_c.as_ptr().cast::<c_char>(),
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
                std::ptr::null(),
                opt.0,
            )
        };
        if code != 0 {
            let message = context.error(code);
            return Err(match code {
                KDC_ERR_C_PRINCIPAL_UNKNOWN
                | KDC_ERR_CLIENT_REVOKED
                | KDC_ERR_KEY_EXP
                | KDC_ERR_PREAUTH_FAILED
                | KRB_AP_ERR_BAD_INTEGRITY => KerberosError::Denied(message),
                _ => KerberosError::Unavailable(format!("the KDC could not be asked: {message}")),
            });
        }
        let mut creds = FilledCreds {
            context: &context,
            creds,
        };
        // Only a KDC that knows the keytab's key can make a ticket that verifies.
        let keytab = context.keytab().map_err(unavailable)?;
        let server = context.acceptor(&self.acceptor).map_err(unavailable)?;
        let mut verify = VerifyOpt {
            flags: 0,
            ap_req_nofail: 0,
        };
        // SAFETY: initialises the options struct declared as krb5.h declares it.
        unsafe {
            (self.api.verify_opt_init)(&mut verify);
            (self.api.verify_opt_set_ap_req_nofail)(&mut verify, 1);
        }
        let server_ptr = server.as_ref().map_or(std::ptr::null_mut(), |p| p.0);
        let creds_ptr: *mut Creds = &mut *creds.creds;
        // SAFETY: creds were filled by get_init_creds_password; a NULL server means any host
        // key of the keytab; no ccache is asked for.
        let code = unsafe {
            (self.api.verify_init_creds)(
                context.ctx,
                creds_ptr,
                server_ptr,
                keytab.0,
                std::ptr::null_mut(),
                &mut verify,
            )
        };
        if code != 0 {
            return Err(KerberosError::Unavailable(format!(
                "the KDC's ticket for {user} could not be verified with the keytab (is the keytab's key the KDC's, and kerberos.acceptor right?): {}",
                context.error(code)
            )));
        }
        let credentials = if self.write_ccache {
            Some(
                context
                    .ccache_bytes(&client, creds_ptr)
                    .map_err(unavailable)?,
            )
        } else {
            None
        };
        Ok(Checked { credentials })
    }
}

fn c_path(path: &Path, key: &str) -> anyhow::Result<CString> {
    match CString::new(path.as_os_str().as_encoded_bytes()) {
        Ok(c) => Ok(c),
        Err(_) => bail!("{key}: a NUL in the path"),
    }
}

/// A krb5 context for one check, freed when dropped.
struct KrbContext<'a> {
    krb5: &'a Krb5,
    ctx: Krb5Context,
}

struct OwnedPrincipal<'a>(Principal, &'a KrbContext<'a>);
struct OwnedKeytab<'a>(Keytab, &'a KrbContext<'a>);
struct OwnedOpt<'a>(InitCredsOpt, &'a KrbContext<'a>);
struct FilledCreds<'a> {
    context: &'a KrbContext<'a>,
    creds: Box<Creds>,
}

impl KrbContext<'_> {
    fn api(&self) -> &Api {
        &self.krb5.api
    }

    fn error(&self, code: ErrorCode) -> String {
        // SAFETY: the context is valid; the message is freed with its own function.
        unsafe {
            let text = (self.api().get_error_message)(self.ctx, code);
            if text.is_null() {
                return format!("Kerberos error {code}");
            }
            let message = CStr::from_ptr(text).to_string_lossy().into_owned();
            (self.api().free_error_message)(self.ctx, text);
            message
        }
    }

    fn default_realm(&self) -> Result<String, String> {
        let mut realm: *mut c_char = std::ptr::null_mut();
        // SAFETY: out-pointer; freed with krb5_free_default_realm.
        let code = unsafe { (self.api().get_default_realm)(self.ctx, &mut realm) };
        if code != 0 || realm.is_null() {
            return Err(format!(
                "no default realm (libdefaults.default_realm): {}",
                self.error(code)
            ));
        }
        // SAFETY: a NUL-terminated string from the library.
        let name = unsafe { CStr::from_ptr(realm) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: allocated by krb5_get_default_realm.
        unsafe { (self.api().free_default_realm)(self.ctx, realm) };
        Ok(name)
    }

    fn principal(&self, name: &CStr) -> Result<OwnedPrincipal<'_>, String> {
        let mut p: Principal = std::ptr::null_mut();
        // SAFETY: NUL-terminated name, out-pointer.
        let code = unsafe { (self.api().parse_name)(self.ctx, name.as_ptr(), &mut p) };
        if code != 0 || p.is_null() {
            return Err(format!(
                "{:?} is not a principal name: {}",
                name,
                self.error(code)
            ));
        }
        Ok(OwnedPrincipal(p, self))
    }

    /// The server principal tickets are verified against (`None`: any host key).
    fn acceptor(&self, acceptor: &str) -> Result<Option<OwnedPrincipal<'_>>, String> {
        match acceptor {
            "any" => Ok(None),
            "host" => {
                let mut p: Principal = std::ptr::null_mut();
                // SAFETY: NULL host means this host's name; "host" service; out-pointer.
                let code = unsafe {
                    (self.api().sname_to_principal)(
                        self.ctx,
                        std::ptr::null(),
                        c"host".as_ptr(),
                        NT_SRV_HST,
                        &mut p,
                    )
                };
                if code != 0 || p.is_null() {
                    return Err(format!("acceptor host: {}", self.error(code)));
                }
                Ok(Some(OwnedPrincipal(p, self)))
            }
            name => {
                let c =
                    CString::new(name).map_err(|_| "acceptor: a NUL in the name".to_string())?;
                self.principal(&c).map(Some)
            }
        }
    }

    fn keytab(&self) -> Result<OwnedKeytab<'_>, String> {
        let mut kt: Keytab = std::ptr::null_mut();
        // SAFETY: NUL-terminated "FILE:path", out-pointer.
        let code = unsafe { (self.api().kt_resolve)(self.ctx, self.krb5.keytab.as_ptr(), &mut kt) };
        if code != 0 || kt.is_null() {
            return Err(format!("cannot open the keytab: {}", self.error(code)));
        }
        Ok(OwnedKeytab(kt, self))
    }

    fn init_creds_opt(&self) -> Result<OwnedOpt<'_>, String> {
        let mut opt: InitCredsOpt = std::ptr::null_mut();
        // SAFETY: out-pointer; freed with krb5_get_init_creds_opt_free.
        let code = unsafe { (self.api().opt_alloc)(self.ctx, &mut opt) };
        if code != 0 || opt.is_null() {
            return Err(format!(
                "cannot set up the ticket request: {}",
                self.error(code)
            ));
        }
        // The credentials may be forwarded from the container, as after `kinit -f`.
        // SAFETY: a valid options object.
        unsafe { (self.api().opt_set_forwardable)(opt, 1) };
        Ok(OwnedOpt(opt, self))
    }

    /// The credentials written to a FILE ccache in a private directory, read back.
    fn ccache_bytes(
        &self,
        client: &OwnedPrincipal<'_>,
        creds: *mut Creds,
    ) -> Result<Vec<u8>, String> {
        let dir = tempfile::tempdir()
            .map_err(|e| format!("cannot make a directory for the credentials: {e}"))?;
        let path = dir.path().join("ccache");
        let name = CString::new(format!("FILE:{}", path.display()))
            .map_err(|_| "a NUL in the temporary path".to_string())?;
        let mut cc: Ccache = std::ptr::null_mut();
        // SAFETY: valid context, names, principal and creds; the ccache is closed below.
        unsafe {
            let code = (self.api().cc_resolve)(self.ctx, name.as_ptr(), &mut cc);
            if code != 0 || cc.is_null() {
                return Err(format!(
                    "cannot make a credentials cache: {}",
                    self.error(code)
                ));
            }
            let mut code = (self.api().cc_initialize)(self.ctx, cc, client.0);
            if code == 0 {
                code = (self.api().cc_store_cred)(self.ctx, cc, creds);
            }
            (self.api().cc_close)(self.ctx, cc);
            if code != 0 {
                return Err(format!(
                    "cannot write the credentials cache: {}",
                    self.error(code)
                ));
            }
        }
        std::fs::read(&path).map_err(|e| format!("cannot read the credentials cache: {e}"))
    }
}

impl Drop for KrbContext<'_> {
    fn drop(&mut self) {
        // SAFETY: created by krb5_init_context_profile; everything made with it is dropped
        // first (they borrow it).
        unsafe { (self.krb5.api.free_context)(self.ctx) };
    }
}

impl Drop for OwnedPrincipal<'_> {
    fn drop(&mut self) {
        // SAFETY: made by krb5_parse_name / krb5_sname_to_principal with this context.
        unsafe { (self.1.api().free_principal)(self.1.ctx, self.0) };
    }
}

impl Drop for OwnedKeytab<'_> {
    fn drop(&mut self) {
        // SAFETY: opened by krb5_kt_resolve with this context.
        unsafe { (self.1.api().kt_close)(self.1.ctx, self.0) };
    }
}

impl Drop for OwnedOpt<'_> {
    fn drop(&mut self) {
        // SAFETY: made by krb5_get_init_creds_opt_alloc with this context.
        unsafe { (self.1.api().opt_free)(self.1.ctx, self.0) };
    }
}

impl Drop for FilledCreds<'_> {
    fn drop(&mut self) {
        // SAFETY: filled by krb5_get_init_creds_password; frees what it points to (the
        // buffer itself is ours). Zeroed again afterwards: it held the session key.
        unsafe { (self.context.api().free_cred_contents)(self.context.ctx, &mut *self.creds) };
        zeroize::Zeroize::zeroize(&mut self.creds.0[..]);
    }
}
