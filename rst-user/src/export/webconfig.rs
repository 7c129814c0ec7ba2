//! `--web.config.file`: the web configuration file of Prometheus' exporter-toolkit
//! (node_exporter, blackbox_exporter, …), so that one file serves every exporter of a
//! host. YAML, unknown keys refused:
//!
//! ```yaml
//! tls_server_config:          # HTTPS only: plain HTTP is answered 400 and closed
//!   cert_file: rstmon.crt     # or `cert:` inline PEM; relative paths are relative
//!   key_file: rstmon.key      #   to the directory of this file
//!   client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, NoClientCert
//!   client_ca_file: ca.crt
//!   min_version: TLS12        # TLS12 (default) or TLS13 (rustls speaks no older one)
//!   max_version: TLS13
//!   cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]   # TLS 1.2 suites, Go names
//!   curve_preferences: [X25519, CurveP256]
//!   prefer_server_cipher_suites: true
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$...    # bcrypt (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! The file is read once, at start; the certificate and key files are read again when
//! they change ([`super::tls`]). What rstmon cannot honour is an error naming it,
//! never silently ignored: `client_allowed_sans`, the client-auth policies that accept
//! unverified certificates (`RequestClientCert`, `RequireAnyClientCert`), `rate_limit`.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::tls;

/// Why the web configuration file cannot be used (one line each).
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path}: {err}")]
    Yaml {
        path: PathBuf,
        err: serde_yaml::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

/// The file as written (exporter-toolkit's field names).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tls_server_config: Option<tls::TlsFile>,
    #[serde(default)]
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// Accepted for compatibility; rstmon serves HTTP/1.1 only.
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<Headers>,
}

/// The headers exporter-toolkit allows, with its checks of their values.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Headers {
    #[serde(rename = "Content-Security-Policy")]
    csp: Option<String>,
    #[serde(rename = "X-Frame-Options")]
    frame_options: Option<String>,
    #[serde(rename = "X-Content-Type-Options")]
    content_type_options: Option<String>,
    #[serde(rename = "X-XSS-Protection")]
    xss_protection: Option<String>,
    #[serde(rename = "Strict-Transport-Security")]
    hsts: Option<String>,
}

/// What the server enforces: TLS (if configured), basic-auth users, extra headers.
#[derive(Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<BasicAuth>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.auth.as_ref().map(|a| a.users.len()))
            .field("headers", &self.headers)
            .finish()
    }
}

impl WebConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = fs::read_to_string(path).map_err(|err| WebConfigError::Read {
            path: path.to_owned(),
            err,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).map_err(|e| match e {
            ParseError::Yaml(err) => WebConfigError::Yaml {
                path: path.to_owned(),
                err,
            },
            ParseError::Invalid(msg) => WebConfigError::Invalid {
                path: path.to_owned(),
                msg,
            },
        })
    }

    /// Parses a file's text; relative paths in it are relative to `dir`.
    fn parse(text: &str, dir: &Path) -> Result<Self, ParseError> {
        // An empty file is an empty configuration, as with exporter-toolkit.
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml::from_str(text).map_err(ParseError::Yaml)?
        };
        let tls = match &file.tls_server_config {
            Some(t) => t.server_config(dir).map_err(ParseError::Invalid)?,
            None => None,
        };
        let auth = match file.basic_auth_users {
            Some(users) if !users.is_empty() => Some(BasicAuth::new(users)?),
            _ => None,
        };
        let headers = match file.http_server_config.and_then(|h| {
            let _ = h.http2;
            h.headers
        }) {
            Some(h) => h.checked()?,
            None => Vec::new(),
        };
        Ok(Self { tls, auth, headers })
    }
}

#[derive(Debug)]
enum ParseError {
    Yaml(serde_yaml::Error),
    Invalid(String),
}

impl From<String> for ParseError {
    fn from(s: String) -> Self {
        ParseError::Invalid(s)
    }
}

impl Headers {
    fn checked(self) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        if let Some(v) = &self.frame_options
            && !["deny", "sameorigin"].contains(&v.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "X-Frame-Options must be deny or sameorigin, not `{v}`"
            ));
        }
        if let Some(v) = &self.content_type_options
            && !v.eq_ignore_ascii_case("nosniff")
        {
            return Err(format!("X-Content-Type-Options must be nosniff, not `{v}`"));
        }
        let mut out = Vec::new();
        for (name, value) in [
            ("content-security-policy", self.csp),
            ("x-frame-options", self.frame_options),
            ("x-content-type-options", self.content_type_options),
            ("x-xss-protection", self.xss_protection),
            ("strict-transport-security", self.hsts),
        ] {
            let Some(v) = value.filter(|v| !v.is_empty()) else {
                continue;
            };
            let hv = HeaderValue::from_str(&v)
                .map_err(|_| format!("header {name}: `{v}` is not a valid header value"))?;
            out.push((HeaderName::from_static(name), hv));
        }
        Ok(out)
    }
}

/// bcrypt hash of "fakepassword", checked for unknown users so that the time an answer
/// takes does not tell which users exist (what exporter-toolkit does).
const FAKE_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Outcomes remembered (bcrypt costs tens of milliseconds per check); the cache is
/// emptied when it holds this many.
const AUTH_CACHE: usize = 1024;

/// Basic-auth users and their bcrypt hashes.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// (user, password) → whether it was accepted.
    cache: Mutex<HashMap<(String, String), bool>>,
    /// One bcrypt check at a time, so that a flood of bad credentials costs one CPU.
    checking: Mutex<()>,
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<Self, String> {
        for (user, hash) in &users {
            hash.parse::<bcrypt::HashParts>()
                .map_err(|e| format!("basic_auth_users: {user}: not a bcrypt hash ({e})"))?;
        }
        Ok(Self {
            users,
            cache: Mutex::default(),
            checking: Mutex::default(),
        })
    }

    /// Whether `authorization` (the header's value) names a user and its password.
    /// May take tens of milliseconds (bcrypt): call it off the async runtime.
    pub fn check(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, pass)) = authorization.and_then(decode_basic) else {
            return false;
        };
        let key = (user, pass);
        if let Some(ok) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return *ok;
        }
        let (hash, known) = match self.users.get(&key.0) {
            Some(h) => (h.as_str(), true),
            None => (FAKE_HASH, false),
        };
        let ok = {
            let _one = self.checking.lock().unwrap_or_else(|p| p.into_inner());
            bcrypt::verify(&key.1, hash).unwrap_or(false)
        } && known;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= AUTH_CACHE {
            cache.clear();
        }
        cache.insert(key, ok);
        ok
    }
}

/// `Basic base64(user:password)` → (user, password).
fn decode_basic(value: &[u8]) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, creds) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(creds.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/nonexistent")).map_err(|e| match e {
            ParseError::Yaml(e) => e.to_string(),
            ParseError::Invalid(m) => m,
        })
    }

    #[test]
    fn empty_and_auth_only_files() {
        let c = parse("").unwrap();
        assert!(c.tls.is_none() && c.auth.is_none() && c.headers.is_empty());
        let hash = bcrypt::hash("secret", 4).unwrap();
        let c = parse(&format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let auth = c.auth.unwrap();
        let header = |u: &str, p: &str| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(auth.check(Some(header("alice", "secret").as_bytes())));
        // Cached, same answer.
        assert!(auth.check(Some(header("alice", "secret").as_bytes())));
        assert!(!auth.check(Some(header("alice", "wrong").as_bytes())));
        assert!(!auth.check(Some(header("bob", "secret").as_bytes())));
        assert!(!auth.check(Some(b"Bearer x")));
        assert!(!auth.check(None));
        // htpasswd's `$2y$` hashes (exporter-toolkit's own example) are accepted.
        assert_eq!(bcrypt::verify("fakepassword", FAKE_HASH).ok(), Some(true));
        let c = parse(&format!("basic_auth_users:\n  u: '{FAKE_HASH}'\n")).unwrap();
        assert!(
            c.auth
                .unwrap()
                .check(Some(header("u", "fakepassword").as_bytes()))
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let err = |text: &str, want: &str| {
            let e = parse(text)
                .err()
                .unwrap_or_else(|| panic!("{text:?} accepted"));
            assert!(e.contains(want), "{text:?}: {e}");
        };
        err("tls_server_confg: {}\n", "unknown field `tls_server_confg`");
        err("basic_auth_users:\n  a: plain\n", "not a bcrypt hash");
        err(
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "X-Frame-Options",
        );
        err(
            "http_server_config:\n  headers:\n    Server: x\n",
            "unknown field `Server`",
        );
        err("tls_server_config:\n  key_file: k.pem\n", "cert_file");
        err(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n",
            "/nonexistent/c.pem",
        );
        err(": : :\n", "");
    }

    #[test]
    fn headers_are_kept() {
        let c = parse(
            "http_server_config:\n  http2: false\n  headers:\n    X-Content-Type-Options: nosniff\n    Strict-Transport-Security: max-age=60\n",
        )
        .unwrap();
        assert_eq!(c.headers.len(), 2);
        assert_eq!(c.headers[1].0, "strict-transport-security");
    }
}
