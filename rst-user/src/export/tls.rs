//! The `tls_server_config` section of the web configuration file
//! ([`super::webconfig`]) as a rustls server configuration (ring backend; TLS 1.2 and
//! 1.3, HTTP/1.1 by ALPN). A certificate and key read from files are read again when
//! either file changes (checked at each handshake, as exporter-toolkit re-reads them),
//! so a renewed certificate is served without a restart.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rustls::{
    RootCertStore, ServerConfig, SupportedProtocolVersion,
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    version::{TLS12, TLS13},
};
use serde::Deserialize;
use tracing::{info, warn};

/// `tls_server_config`, with exporter-toolkit's names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

/// Inline PEM, or the file's contents (relative to `dir`).
fn pem(
    inline: &Option<String>,
    file: &Option<PathBuf>,
    dir: &Path,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("{what} and {what}_file are both set")),
        (Some(text), None) => Ok(Some(text.as_bytes().to_vec())),
        (None, Some(f)) => {
            let path = dir.join(f);
            fs::read(&path)
                .map(Some)
                .map_err(|e| format!("{what}_file: cannot read {}: {e}", path.display()))
        }
        (None, None) => Ok(None),
    }
}

fn version(s: &str) -> Result<&'static SupportedProtocolVersion, String> {
    match s {
        // rustls speaks TLS 1.2 and 1.3 only: an older minimum is the same as TLS12.
        "TLS10" | "TLS11" | "TLS12" => Ok(&TLS12),
        "TLS13" => Ok(&TLS13),
        _ => Err(format!(
            "unknown TLS version `{s}` (TLS10, TLS11, TLS12, TLS13)"
        )),
    }
}

/// A certificate chain and its key from PEM, checked against each other.
fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config: certificate: {e}"))?;
    if chain.is_empty() {
        return Err("tls_server_config: no PEM certificate in cert/cert_file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("tls_server_config: private key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("tls_server_config: certificate and key: {e}"))
}

/// What tells a file changed: its contents. They are a few KiB, read at each TLS
/// handshake; a modification time can repeat within the clock's tick, and a renewed key
/// of the same type has the old one's length, so a time and a length could miss a
/// renewal written right after the previous one.
type Stamp = Option<Vec<u8>>;

fn stamp(path: &Path) -> Stamp {
    fs::read(path).ok()
}

/// The server's certificate, read again from its files when they change.
#[derive(Debug)]
struct Reloading {
    provider: Arc<CryptoProvider>,
    /// `cert_file` and `key_file`; `None` for inline PEM (never reloaded).
    files: Option<(PathBuf, PathBuf)>,
    /// The key served, and the files' stamps when it was read (or last tried).
    current: Mutex<(Arc<CertifiedKey>, (Stamp, Stamp))>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cert, key)) = &self.files {
            let now = (stamp(cert), stamp(key));
            if now != current.1 {
                current.1 = now;
                let loaded = fs::read(cert)
                    .and_then(|c| fs::read(key).map(|k| (c, k)))
                    .map_err(|e| format!("tls_server_config: {e}"))
                    .and_then(|(c, k)| certified_key(&c, &k, &self.provider));
                match loaded {
                    Ok(k) => {
                        info!(cert = %cert.display(), "TLS certificate reloaded");
                        current.0 = Arc::new(k);
                    }
                    Err(e) => warn!("{e}; still serving the previous certificate"),
                }
            }
        }
        Some(current.0.clone())
    }
}

impl TlsFile {
    /// Whether anything that turns TLS on is set (exporter-toolkit's `IsEnabled`): an
    /// empty section means plain HTTP.
    fn enabled(&self) -> bool {
        self.cert.is_some()
            || self.key.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.client_ca.is_some()
            || self.client_ca_file.is_some()
            || self.client_auth_type.is_some()
    }

    /// The server configuration; `None` when the section turns nothing on.
    pub(super) fn server_config(&self, dir: &Path) -> Result<Option<Arc<ServerConfig>>, String> {
        if !self.enabled() {
            return Ok(None);
        }
        if self.cert.is_none() && self.cert_file.is_none() {
            return Err("tls_server_config: missing one of cert or cert_file".into());
        }
        if self.key.is_none() && self.key_file.is_none() {
            return Err("tls_server_config: missing one of key or key_file".into());
        }
        if self
            .client_allowed_sans
            .as_ref()
            .is_some_and(|s| !s.is_empty())
        {
            return Err("tls_server_config: client_allowed_sans is not supported by rstmon".into());
        }
        let provider = Arc::new(self.provider()?);
        let files = match (&self.cert, &self.key, &self.cert_file, &self.key_file) {
            (None, None, Some(c), Some(k)) => Some((dir.join(c), dir.join(k))),
            _ => None,
        };
        // Stamped before reading: a change in between is read again at the first handshake.
        let stamps = files
            .as_ref()
            .map_or((None, None), |(c, k)| (stamp(c), stamp(k)));
        let cert_pem = pem(&self.cert, &self.cert_file, dir, "cert")?.unwrap_or_default();
        let key_pem = pem(&self.key, &self.key_file, dir, "key")?.unwrap_or_default();
        let certified = Arc::new(certified_key(&cert_pem, &key_pem, &provider)?);
        let resolver = Arc::new(Reloading {
            provider: provider.clone(),
            files,
            current: Mutex::new((certified, stamps)),
        });
        let min = version(self.min_version.as_deref().unwrap_or("TLS12"))?;
        let max = version(self.max_version.as_deref().unwrap_or("TLS13"))?;
        let versions: Vec<&'static SupportedProtocolVersion> = match (min.version, max.version) {
            (a, b) if a == b => vec![min],
            (a, _) if a == TLS13.version => {
                return Err("tls_server_config: max_version is below min_version".into());
            }
            _ => vec![&TLS13, &TLS12],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("tls_server_config: {e}"))?;

        let ca = pem(&self.client_ca, &self.client_ca_file, dir, "client_ca")?;
        let policy = self.client_auth_type.as_deref().unwrap_or("NoClientCert");
        let roots = || -> Result<Arc<RootCertStore>, String> {
            let Some(ca) = &ca else {
                return Err(format!(
                    "tls_server_config: client_auth_type {policy} needs client_ca_file"
                ));
            };
            let mut store = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| format!("tls_server_config: client CA: {e}"))?;
                store
                    .add(c)
                    .map_err(|e| format!("tls_server_config: client CA: {e}"))?;
            }
            Ok(Arc::new(store))
        };
        let builder = match policy {
            "" | "NoClientCert" => {
                if ca.is_some() {
                    return Err(
                        "tls_server_config: client CA's have been configured without a Client Auth Policy"
                            .into(),
                    );
                }
                builder.with_no_client_auth()
            }
            "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
                let mut v = WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone());
                if policy == "VerifyClientCertIfGiven" {
                    v = v.allow_unauthenticated();
                }
                let v = v
                    .build()
                    .map_err(|e| format!("tls_server_config: client CA: {e}"))?;
                builder.with_client_cert_verifier(v)
            }
            "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
                return Err(format!(
                    "tls_server_config: client_auth_type {policy} accepts unverified client certificates; \
                     rstmon supports RequireAndVerifyClientCert, VerifyClientCertIfGiven and NoClientCert"
                ));
            }
            other => return Err(format!("tls_server_config: invalid ClientAuth: {other}")),
        };
        let mut config = builder.with_cert_resolver(resolver);
        config.ignore_client_order = self.prefer_server_cipher_suites.unwrap_or(true);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }

    /// ring's provider with `cipher_suites` (TLS 1.2 suites, by their Go or IANA names;
    /// TLS 1.3 suites are not configurable, as in Go) and `curve_preferences` applied.
    fn provider(&self) -> Result<CryptoProvider, String> {
        let mut p = ring::default_provider();
        if let Some(names) = self.cipher_suites.as_ref().filter(|n| !n.is_empty()) {
            let mut chosen = Vec::new();
            for name in names {
                let s = p
                    .cipher_suites
                    .iter()
                    .find(|s| {
                        let iana = format!("{:?}", s.suite());
                        s.version() == &TLS12
                            && (iana == *name
                                || iana
                                    .strip_suffix("_SHA256")
                                    .is_some_and(|n| n.ends_with("CHACHA20_POLY1305") && n == name))
                    })
                    .ok_or_else(|| {
                        format!("tls_server_config: unknown or unsupported cipher: {name}")
                    })?;
                chosen.push(*s);
            }
            chosen.extend(p.cipher_suites.iter().filter(|s| s.version() == &TLS13));
            p.cipher_suites = chosen;
        }
        if let Some(names) = self.curve_preferences.as_ref().filter(|n| !n.is_empty()) {
            let mut chosen = Vec::new();
            for name in names {
                let want = match name.as_str() {
                    "X25519" => "X25519",
                    "CurveP256" => "secp256r1",
                    "CurveP384" => "secp384r1",
                    _ => {
                        return Err(format!(
                            "tls_server_config: unknown or unsupported curve: {name} (X25519, CurveP256, CurveP384)"
                        ));
                    }
                };
                let g = p
                    .kx_groups
                    .iter()
                    .find(|g| format!("{:?}", g.name()) == want)
                    .ok_or_else(|| format!("tls_server_config: curve {name} unavailable"))?;
                chosen.push(*g);
            }
            p.kx_groups = chosen;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(yaml: &str) -> TlsFile {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn an_empty_section_is_plain_http() {
        assert!(file("{}").server_config(Path::new(".")).unwrap().is_none());
        assert!(
            file("min_version: TLS13")
                .server_config(Path::new("."))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn ciphers_and_curves_by_go_names() {
        let p = file(
            "cipher_suites: [TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\ncurve_preferences: [CurveP256, X25519]",
        )
        .provider()
        .unwrap();
        let names: Vec<String> = p
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(names[0], "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256");
        assert_eq!(names[1], "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
        assert!(
            names[2..].iter().all(|n| n.starts_with("TLS13_")),
            "{names:?}"
        );
        let groups: Vec<String> = p
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(groups, ["secp256r1", "X25519"]);
        assert!(
            file("cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]")
                .provider()
                .is_err()
        );
        assert!(file("curve_preferences: [CurveP521]").provider().is_err());
    }
}
