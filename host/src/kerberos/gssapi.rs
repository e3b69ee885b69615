//! `gssapi-with-mic` logins (RFC 4462): the client's Kerberos ticket, accepted with the keytab
//! through MIT's libgssapi_krb5.so.2 (loaded at start, like libkrb5 for passwords).
//!
//! The acceptor's credentials come from `keytab` (`gss_acquire_cred_from` with a `keytab`
//! credential store, so the environment's KRB5_KTNAME plays no part) for `acceptor`: any of the
//! keytab's keys, `host/<this host's name>` or a given principal. They are acquired afresh for
//! every login (a replaced keytab is picked up; no GSS object is shared between connections),
//! which reads the keytab and nothing else.
//!
//! The calls are made on the connection's task (inside `block_in_place`, see
//! ssh/handler/gssapi.rs), not on a blocking thread of their own: accepting a context with a
//! keytab never talks to the network (the ticket is decrypted with the keytab's key; the only
//! I/O is reading the keytab and the replay cache, a local file), and the one call that may ask
//! DNS, importing `host@<hostname>`, is made once at start. Each takes well under a millisecond.
//!
//! The library's own settings (replay cache, clock skew, `dns_canonicalize_hostname` for
//! `acceptor: host`) come from the gateway's Kerberos configuration as MIT finds it
//! (KRB5_CONFIG, else /etc/krb5.conf); without one, its defaults (5 minutes of clock skew).
use std::ffi::{c_void, CString};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use libloading::Library;

use super::config::KerberosConfig;
use super::KerberosError;

/// The Kerberos V5 mechanism, 1.2.840.113554.1.2.2 (RFC 1964), without the DER tag and length.
const KRB5_MECH: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02];
/// GSS_C_NT_HOSTBASED_SERVICE, 1.2.840.113554.1.2.1.4 (`service@host`).
const NT_HOSTBASED_SERVICE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x01, 0x04];
/// GSS_KRB5_NT_PRINCIPAL_NAME, 1.2.840.113554.1.2.2.1 (`service/name@REALM`).
const NT_KRB5_PRINCIPAL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02, 0x01];

/// The FFI: the types and functions of MIT's gssapi.h / gssapi_ext.h that are used here.
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    pub type OmUint32 = u32;
    pub type Name = *mut c_void;
    pub type Cred = *mut c_void;
    pub type Ctx = *mut c_void;

    /// `gss_OID_desc`.
    #[repr(C)]
    pub struct OidDesc {
        pub length: OmUint32,
        pub elements: *mut c_void,
    }

    /// `gss_OID_set_desc`.
    #[repr(C)]
    pub struct OidSetDesc {
        pub count: usize,
        pub elements: *mut OidDesc,
    }

    /// `gss_buffer_desc`.
    #[repr(C)]
    pub struct BufferDesc {
        pub length: usize,
        pub value: *mut c_void,
    }

    impl BufferDesc {
        pub fn empty() -> Self {
            Self {
                length: 0,
                value: std::ptr::null_mut(),
            }
        }
    }

    /// `gss_key_value_element_desc`.
    #[repr(C)]
    pub struct KeyValueElement {
        pub key: *const c_char,
        pub value: *const c_char,
    }

    /// `gss_key_value_set_desc`.
    #[repr(C)]
    pub struct KeyValueSet {
        pub count: OmUint32,
        pub elements: *const KeyValueElement,
    }

    pub const C_INITIATE: c_int = 1;
    pub const C_ACCEPT: c_int = 2;
    pub const C_GSS_CODE: c_int = 1;
    pub const C_MECH_CODE: c_int = 2;
    pub const C_INDEFINITE: OmUint32 = 0xffff_ffff;
    pub const C_DELEG_FLAG: OmUint32 = 1;
    pub const C_INTEG_FLAG: OmUint32 = 32;
    pub const S_COMPLETE: OmUint32 = 0;
    pub const S_CONTINUE_NEEDED: OmUint32 = 1;
    /// GSS_S_NO_CRED (a routine error).
    pub const S_NO_CRED: OmUint32 = 7 << 16;

    /// A calling or routine error (GSS_ERROR).
    pub fn is_error(major: OmUint32) -> bool {
        major & 0xffff_0000 != 0
    }

    pub struct Api {
        pub import_name: unsafe extern "C" fn(
            *mut OmUint32,
            *mut BufferDesc,
            *mut OidDesc,
            *mut Name,
        ) -> OmUint32,
        pub acquire_cred_from: unsafe extern "C" fn(
            *mut OmUint32,
            Name,
            OmUint32,
            *mut OidSetDesc,
            c_int,
            *const KeyValueSet,
            *mut Cred,
            *mut *mut OidSetDesc,
            *mut OmUint32,
        ) -> OmUint32,
        pub accept_sec_context: unsafe extern "C" fn(
            *mut OmUint32,
            *mut Ctx,
            Cred,
            *mut BufferDesc,
            *mut c_void,
            *mut Name,
            *mut *mut OidDesc,
            *mut BufferDesc,
            *mut OmUint32,
            *mut OmUint32,
            *mut Cred,
        ) -> OmUint32,
        pub verify_mic: unsafe extern "C" fn(
            *mut OmUint32,
            Ctx,
            *mut BufferDesc,
            *mut BufferDesc,
            *mut OmUint32,
        ) -> OmUint32,
        pub display_name: unsafe extern "C" fn(
            *mut OmUint32,
            Name,
            *mut BufferDesc,
            *mut *mut OidDesc,
        ) -> OmUint32,
        pub display_status: unsafe extern "C" fn(
            *mut OmUint32,
            OmUint32,
            c_int,
            *mut OidDesc,
            *mut OmUint32,
            *mut BufferDesc,
        ) -> OmUint32,
        pub store_cred_into: unsafe extern "C" fn(
            *mut OmUint32,
            Cred,
            c_int,
            *mut OidDesc,
            OmUint32,
            OmUint32,
            *const KeyValueSet,
            *mut *mut OidSetDesc,
            *mut c_int,
        ) -> OmUint32,
        pub release_buffer: unsafe extern "C" fn(*mut OmUint32, *mut BufferDesc) -> OmUint32,
        pub release_name: unsafe extern "C" fn(*mut OmUint32, *mut Name) -> OmUint32,
        pub release_cred: unsafe extern "C" fn(*mut OmUint32, *mut Cred) -> OmUint32,
        pub delete_sec_context:
            unsafe extern "C" fn(*mut OmUint32, *mut Ctx, *mut BufferDesc) -> OmUint32,
    }
}

use ffi::{BufferDesc, OidDesc, OidSetDesc, OmUint32};

/// The library and its functions.
struct Gss {
    api: ffi::Api,
    // Last: the functions above point into it.
    _library: Library,
}

/// An OID of this module's constants, as the library takes it (it never writes through it).
fn oid(bytes: &'static [u8]) -> OidDesc {
    OidDesc {
        length: bytes.len() as OmUint32,
        elements: bytes.as_ptr() as *mut c_void,
    }
}

/// A buffer the library only reads.
fn input_buffer(bytes: &[u8]) -> BufferDesc {
    BufferDesc {
        length: bytes.len(),
        value: bytes.as_ptr() as *mut c_void,
    }
}

impl Gss {
    fn load() -> anyhow::Result<Gss> {
        // SAFETY: loading MIT's libgssapi_krb5 runs its initialisers only, which have no
        // preconditions.
        let library = unsafe { Library::new("libgssapi_krb5.so.2") }
            .context("cannot load libgssapi_krb5.so.2 (MIT Kerberos; Debian: libgssapi-krb5-2)")?;
        // SAFETY: each symbol is declared with the prototype gssapi.h / gssapi_ext.h give it.
        let api = unsafe {
            macro_rules! sym {
                ($name:literal) => {
                    *library
                        .get(concat!($name, "\0").as_bytes())
                        .with_context(|| format!("libgssapi_krb5.so.2 has no {}", $name))?
                };
            }
            ffi::Api {
                import_name: sym!("gss_import_name"),
                acquire_cred_from: sym!("gss_acquire_cred_from"),
                accept_sec_context: sym!("gss_accept_sec_context"),
                verify_mic: sym!("gss_verify_mic"),
                display_name: sym!("gss_display_name"),
                display_status: sym!("gss_display_status"),
                store_cred_into: sym!("gss_store_cred_into"),
                release_buffer: sym!("gss_release_buffer"),
                release_name: sym!("gss_release_name"),
                release_cred: sym!("gss_release_cred"),
                delete_sec_context: sym!("gss_delete_sec_context"),
            }
        };
        Ok(Gss {
            api,
            _library: library,
        })
    }

    /// The text of a GSS status (the major code's, then the mechanism's).
    fn status(&self, major: OmUint32, minor: OmUint32) -> String {
        let mut parts = Vec::new();
        let mut mech = oid(KRB5_MECH);
        for (code, kind) in [(major, ffi::C_GSS_CODE), (minor, ffi::C_MECH_CODE)] {
            if code == 0 {
                continue;
            }
            let mut message_context: OmUint32 = 0;
            // A few lines at most; the bound guards against a library that never says "done".
            for _ in 0..8 {
                let mut m: OmUint32 = 0;
                let mut out = BufferDesc::empty();
                // SAFETY: out-pointers and a valid mechanism OID; `out` is released below.
                let status = unsafe {
                    (self.api.display_status)(
                        &mut m,
                        code,
                        kind,
                        &mut mech,
                        &mut message_context,
                        &mut out,
                    )
                };
                if ffi::is_error(status) {
                    break;
                }
                let text = self.take_buffer(&mut out);
                let text = String::from_utf8_lossy(&text).trim().to_string();
                if !text.is_empty() {
                    parts.push(text);
                }
                if message_context == 0 {
                    break;
                }
            }
        }
        if parts.is_empty() {
            format!("GSS-API error {major:#x}/{minor}")
        } else {
            parts.join(": ")
        }
    }

    /// Copies a buffer the library allocated and releases it.
    fn take_buffer(&self, buffer: &mut BufferDesc) -> Vec<u8> {
        let bytes = if buffer.value.is_null() || buffer.length == 0 {
            Vec::new()
        } else {
            // SAFETY: the library filled `buffer` with `length` readable bytes at `value`.
            unsafe { std::slice::from_raw_parts(buffer.value as *const u8, buffer.length) }.to_vec()
        };
        let mut minor = 0;
        // SAFETY: a buffer the library allocated (or an empty one), released once.
        unsafe { (self.api.release_buffer)(&mut minor, buffer) };
        bytes
    }

    fn display_name(&self, name: ffi::Name) -> Result<String, String> {
        let mut minor = 0;
        let mut out = BufferDesc::empty();
        // SAFETY: a valid name, out-pointers; the name type is not asked for.
        let major =
            unsafe { (self.api.display_name)(&mut minor, name, &mut out, std::ptr::null_mut()) };
        if ffi::is_error(major) {
            return Err(self.status(major, minor));
        }
        let bytes = self.take_buffer(&mut out);
        String::from_utf8(bytes).map_err(|_| "the client's principal is not UTF-8".to_string())
    }
}

/// A GSS name, released when dropped.
struct OwnedName {
    gss: Arc<Gss>,
    name: ffi::Name,
}

// SAFETY: an imported name is not changed after import; the library only reads it (when
// credentials are acquired for it), and MIT's GSS-API is thread-safe for such shared use.
unsafe impl Send for OwnedName {}
// SAFETY: as above: shared read-only.
unsafe impl Sync for OwnedName {}

impl Drop for OwnedName {
    fn drop(&mut self) {
        let mut minor = 0;
        // SAFETY: a name from gss_import_name, released once.
        unsafe { (self.gss.api.release_name)(&mut minor, &mut self.name) };
    }
}

/// A credential handle, released when dropped.
struct OwnedCred {
    gss: Arc<Gss>,
    cred: ffi::Cred,
}

// SAFETY: a credential handle is used by one context at a time (it is owned by one login).
unsafe impl Send for OwnedCred {}

impl Drop for OwnedCred {
    fn drop(&mut self) {
        if !self.cred.is_null() {
            let mut minor = 0;
            // SAFETY: a handle the library returned, released once.
            unsafe { (self.gss.api.release_cred)(&mut minor, &mut self.cred) };
        }
    }
}

/// Accepts GSSAPI security contexts with the keytab's keys.
pub struct Acceptor {
    gss: Arc<Gss>,
    /// `KRB5_KTNAME`-style name of the keytab (`FILE:<path>`).
    keytab: CString,
    /// The acceptor's name; `None`: any key of the keytab (GSS_C_NO_NAME).
    name: Option<OwnedName>,
    /// Delegated credentials are wanted (`credentialCachePath` is set).
    want_credentials: bool,
}

impl Acceptor {
    /// Loads the library and acquires acceptor credentials once, so that an unusable keytab or
    /// acceptor name fails the start (blocking: call off the async workers).
    pub fn new(config: &KerberosConfig) -> anyhow::Result<Self> {
        let gss = Arc::new(Gss::load()?);
        let keytab = CString::new(format!("FILE:{}", config.keytab.display()))
            .context("keytab: a NUL in the path")?;
        let (text, name_type) = match config.acceptor.as_str() {
            "any" => (None, NT_KRB5_PRINCIPAL),
            "host" => {
                let host = hostname::get()
                    .context("acceptor: cannot read this host's name")?
                    .to_string_lossy()
                    .into_owned();
                (Some(format!("host@{host}")), NT_HOSTBASED_SERVICE)
            }
            principal => (Some(principal.to_string()), NT_KRB5_PRINCIPAL),
        };
        let name = match &text {
            None => None,
            Some(text) => Some(
                import_name(&gss, text, name_type)
                    .map_err(|e| anyhow::anyhow!("acceptor: {text}: {e}"))?,
            ),
        };
        let acceptor = Acceptor {
            gss,
            keytab,
            name,
            want_credentials: !config.credential_cache_path.is_empty(),
        };
        if let Err(e) = acceptor.acquire() {
            bail!(
                "keytab: no acceptor credentials for {} in {}: {e}",
                text.as_deref().unwrap_or("any principal"),
                config.keytab.display()
            );
        }
        tracing::info!(keytab = %config.keytab.display(), acceptor = %config.acceptor, "Kerberos GSSAPI logins on");
        Ok(acceptor)
    }

    /// The acceptor's credentials from the keytab.
    fn acquire(&self) -> Result<OwnedCred, String> {
        let mut mech = oid(KRB5_MECH);
        let mut mechs = OidSetDesc {
            count: 1,
            elements: &mut mech,
        };
        let elements = [ffi::KeyValueElement {
            key: c"keytab".as_ptr(),
            value: self.keytab.as_ptr(),
        }];
        let store = ffi::KeyValueSet {
            count: 1,
            elements: elements.as_ptr(),
        };
        let mut minor = 0;
        let mut cred: ffi::Cred = std::ptr::null_mut();
        let name = self.name.as_ref().map_or(std::ptr::null_mut(), |n| n.name);
        // SAFETY: a valid name (or GSS_C_NO_NAME), a one-element mechanism set and credential
        // store that outlive the call (both only read), and out-pointers; actual_mechs and
        // time_rec are not asked for.
        let major = unsafe {
            (self.gss.api.acquire_cred_from)(
                &mut minor,
                name,
                ffi::C_INDEFINITE,
                &mut mechs,
                ffi::C_ACCEPT,
                &store,
                &mut cred,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        let cred = OwnedCred {
            gss: self.gss.clone(),
            cred,
        };
        if ffi::is_error(major) {
            return Err(self.gss.status(major, minor));
        }
        Ok(cred)
    }

    /// A new login's context.
    pub fn context(&self) -> Result<Context, KerberosError> {
        let cred = self.acquire().map_err(|e| {
            KerberosError::Unavailable(format!("no acceptor credentials from the keytab: {e}"))
        })?;
        Ok(Context {
            gss: self.gss.clone(),
            cred,
            ctx: std::ptr::null_mut(),
            established: false,
            principal: None,
            delegated: None,
            want_credentials: self.want_credentials,
        })
    }
}

fn import_name(gss: &Arc<Gss>, text: &str, name_type: &'static [u8]) -> Result<OwnedName, String> {
    let mut buffer = input_buffer(text.as_bytes());
    let mut name_type = oid(name_type);
    let mut minor = 0;
    let mut name: ffi::Name = std::ptr::null_mut();
    // SAFETY: the input buffer and name type outlive the call and are only read; out-pointer.
    let major =
        unsafe { (gss.api.import_name)(&mut minor, &mut buffer, &mut name_type, &mut name) };
    if ffi::is_error(major) {
        return Err(gss.status(major, minor));
    }
    Ok(OwnedName {
        gss: gss.clone(),
        name,
    })
}

/// What a client's token led to.
pub enum Step {
    /// Send this token; another from the client is needed.
    Continue(Vec<u8>),
    /// Established: the client's principal is known; send the token, if any.
    Complete(Option<Vec<u8>>),
}

/// A context that could not be established.
pub struct Refused {
    pub error: KerberosError,
    /// GSS_Accept_sec_context's output (a KRB-ERROR), for the client.
    pub error_token: Option<Vec<u8>>,
}

/// One login's security context. Every GSS object it holds is released when dropped.
pub struct Context {
    gss: Arc<Gss>,
    cred: OwnedCred,
    ctx: ffi::Ctx,
    established: bool,
    principal: Option<String>,
    delegated: Option<OwnedCred>,
    want_credentials: bool,
}

// SAFETY: a context is used by one thread at a time (it belongs to one connection's handler,
// behind `&mut`); MIT's GSS-API allows a context to move between threads.
unsafe impl Send for Context {}
// SAFETY: every method that calls the library takes `&mut self`; through `&Context` only the
// principal (a Rust string) can be read.
unsafe impl Sync for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        if !self.ctx.is_null() {
            let mut minor = 0;
            // SAFETY: a context the library created, deleted once; no output token wanted.
            unsafe {
                (self.gss.api.delete_sec_context)(&mut minor, &mut self.ctx, std::ptr::null_mut())
            };
        }
    }
}

impl Context {
    /// Feeds a token of the client to GSS_Accept_sec_context.
    pub fn accept(&mut self, token: &[u8]) -> Result<Step, Refused> {
        let denied = |why: String| Refused {
            error: KerberosError::Denied(why),
            error_token: None,
        };
        if self.established {
            return Err(denied("a token after the context was established".into()));
        }
        if token.is_empty() {
            return Err(denied("an empty GSS-API token".into()));
        }
        let mut input = input_buffer(token);
        let mut minor = 0;
        let mut src_name: ffi::Name = std::ptr::null_mut();
        let mut mech_type: *mut OidDesc = std::ptr::null_mut();
        let mut output = BufferDesc::empty();
        let mut flags: OmUint32 = 0;
        let mut delegated: ffi::Cred = std::ptr::null_mut();
        // SAFETY: the context handle is this context's (NULL on the first call), the acceptor
        // credentials are valid, the input buffer outlives the call and is only read, no
        // channel bindings; every out-pointer is valid, and what the library returns through
        // them is released below (mech_type points at static storage).
        let major = unsafe {
            (self.gss.api.accept_sec_context)(
                &mut minor,
                &mut self.ctx,
                self.cred.cred,
                &mut input,
                std::ptr::null_mut(),
                &mut src_name,
                &mut mech_type,
                &mut output,
                &mut flags,
                std::ptr::null_mut(),
                &mut delegated,
            )
        };
        // Owned from here on, whatever happens.
        let output = self.gss.take_buffer(&mut output);
        let delegated = OwnedCred {
            gss: self.gss.clone(),
            cred: delegated,
        };
        let src_name = (!src_name.is_null()).then(|| OwnedName {
            gss: self.gss.clone(),
            name: src_name,
        });
        if ffi::is_error(major) {
            let message = self.gss.status(major, minor);
            let error = if major & 0x00ff_0000 == ffi::S_NO_CRED {
                KerberosError::Unavailable(format!("the keytab cannot be used: {message}"))
            } else {
                KerberosError::Denied(format!("the client's ticket was not accepted: {message}"))
            };
            return Err(Refused {
                error,
                error_token: (!output.is_empty()).then_some(output),
            });
        }
        if major & ffi::S_CONTINUE_NEEDED != 0 {
            return Ok(Step::Continue(output));
        }
        if major != ffi::S_COMPLETE {
            // A supplementary status (duplicate or old token) on an established context.
            return Err(denied(self.gss.status(major, minor)));
        }
        // SAFETY: on success mech_type points at an OID of the library's static storage.
        let krb5 = !mech_type.is_null()
            && unsafe {
                let m = &*mech_type;
                !m.elements.is_null()
                    && std::slice::from_raw_parts(m.elements as *const u8, m.length as usize)
                        == KRB5_MECH
            };
        if !krb5 {
            return Err(denied("the context is not a Kerberos V5 one".into()));
        }
        if flags & ffi::C_INTEG_FLAG == 0 {
            return Err(denied("the context offers no integrity protection".into()));
        }
        let Some(src_name) = src_name else {
            return Err(denied("the context names no client".into()));
        };
        self.principal = Some(self.gss.display_name(src_name.name).map_err(denied)?);
        if flags & ffi::C_DELEG_FLAG != 0 && !delegated.cred.is_null() {
            self.delegated = Some(delegated);
        }
        self.established = true;
        Ok(Step::Complete((!output.is_empty()).then_some(output)))
    }

    /// The client's principal (`alice@REALM`), once the context is established.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// GSS_VerifyMIC of `data` (RFC 4462 §3.5).
    pub fn verify_mic(&mut self, data: &[u8], mic: &[u8]) -> Result<(), KerberosError> {
        if !self.established {
            return Err(KerberosError::Denied(
                "a MIC before the context was established".into(),
            ));
        }
        let mut message = input_buffer(data);
        let mut token = input_buffer(mic);
        let mut minor = 0;
        let mut qop: OmUint32 = 0;
        // SAFETY: an established context; both buffers outlive the call and are only read.
        let major = unsafe {
            (self.gss.api.verify_mic)(&mut minor, self.ctx, &mut message, &mut token, &mut qop)
        };
        if major != ffi::S_COMPLETE {
            return Err(KerberosError::Denied(format!(
                "the MIC does not verify: {}",
                self.gss.status(major, minor)
            )));
        }
        Ok(())
    }

    /// The credentials the client delegated (`GSSAPIDelegateCredentials`), as a FILE ccache's
    /// bytes; `None` when it delegated none or `credentialCachePath` is empty. Blocking (local
    /// files only).
    pub fn delegated_credentials(&mut self) -> Result<Option<Vec<u8>>, String> {
        if !self.want_credentials {
            return Ok(None);
        }
        let Some(delegated) = self.delegated.take() else {
            return Ok(None);
        };
        // A private directory (0700), removed when dropped.
        let dir = tempfile::Builder::new()
            .prefix("containerssh-gss-")
            .tempdir()
            .map_err(|e| format!("cannot make a directory for the credentials: {e}"))?;
        let path = dir.path().join("ccache");
        let ccache = CString::new(format!("FILE:{}", path.display()))
            .map_err(|_| "a NUL in the temporary path".to_string())?;
        let elements = [ffi::KeyValueElement {
            key: c"ccache".as_ptr(),
            value: ccache.as_ptr(),
        }];
        let store = ffi::KeyValueSet {
            count: 1,
            elements: elements.as_ptr(),
        };
        let mut mech = oid(KRB5_MECH);
        let mut minor = 0;
        // SAFETY: valid delegated credentials, a mechanism OID and a credential store that
        // outlive the call and are only read; overwrite, not the default credentials; the
        // stored elements and usage are not asked for.
        let major = unsafe {
            (self.gss.api.store_cred_into)(
                &mut minor,
                delegated.cred,
                ffi::C_INITIATE,
                &mut mech,
                1,
                0,
                &store,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if ffi::is_error(major) {
            return Err(format!(
                "cannot store the delegated credentials: {}",
                self.gss.status(major, minor)
            ));
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read the delegated credentials: {e}"))?;
        Ok((!bytes.is_empty()).then_some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mechanism_is_russhs() {
        let der = russh::server::GSSAPI_KRB5_MECHANISM;
        assert_eq!(der[0], 0x06);
        assert_eq!(usize::from(der[1]), KRB5_MECH.len());
        assert_eq!(&der[2..], KRB5_MECH);
    }

    /// An unusable keytab fails the start, naming the key (needs the MIT library, which the
    /// gateway's image has; skipped where it is missing).
    #[test]
    fn an_unusable_keytab_is_refused_at_start() {
        if Gss::load().is_err() {
            return;
        }
        let config = KerberosConfig {
            gssapi: true,
            keytab: "/nonexistent/krb5.keytab".into(),
            ..KerberosConfig::default()
        };
        let Err(e) = Acceptor::new(&config) else {
            panic!("a missing keytab was accepted");
        };
        assert!(format!("{e:#}").contains("keytab: "), "{e:#}");
    }
}
