//! The TLS of `ssl_get` (keepalived's SSL_GET): a rustls client (ring's primitives) built from
//! an `ssl_get`'s settings when the agent starts and at each reload, and the handshake of a
//! probe.
//!
//! keepalived never has OpenSSL verify the server's certificate, so by default neither does
//! this: [`AnyCertificate`] accepts any chain, but still checks the handshake's signatures
//! (the server holds the key of the certificate it shows, and the session is not tampered
//! with). `verify: true` checks the chain against `ca_file` and the certificate's name against
//! the server name (see [`TlsClient::server_name`]).

use std::{
    collections::HashMap,
    fmt,
    io::Read as _,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _},
};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::spec::CheckFileError;
use crate::config::TlsCheck;

/// The largest PEM file read (CA bundles included).
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// The TLS client of an `ssl_get`, ready to connect. Two are equal when built from the same
/// settings and the same file contents.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    /// `sni_name`, over the URL's `Host`.
    sni_name: Option<ServerName<'static>>,
    verify: bool,
    client_certificate: bool,
    /// SHA-256 of the settings and of the files as read.
    fingerprint: [u8; 32],
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for TlsClient {}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("enable_sni", &self.config.enable_sni)
            .field("sni_name", &self.sni_name)
            .field("verify", &self.verify)
            .field("client_certificate", &self.client_certificate)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Builds the client of `check`, reading its files; `field` is the path of the check's
    /// `tls` block (`virtual_servers[0].real_servers[1].ssl_get.tls`), which errors name with
    /// the file's key.
    pub fn new(check: &TlsCheck, field: &str) -> Result<Self, CheckFileError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut fingerprint = Sha256::new();
        fingerprint.update([u8::from(check.enable_sni), u8::from(check.verify)]);
        fingerprint.update(check.sni_name.as_deref().unwrap_or_default());
        fingerprint.update([0]);
        let file_error = |key: &str, path: &Path, reason: String| CheckFileError {
            field: format!("{field}.{key}"),
            path: path.to_owned(),
            reason,
        };
        // ring's provider has suites for TLS 1.2 and 1.3: this cannot fail.
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| CheckFileError {
                field: field.to_owned(),
                path: Default::default(),
                reason: format!("no TLS version to use: {e}"),
            })?;
        let builder = match (&check.ca_file, check.verify) {
            (Some(path), true) => {
                let pem = read_pem(path).map_err(|r| file_error("ca_file", path, r))?;
                fingerprint.update(&pem);
                let roots = root_store(&pem).map_err(|r| file_error("ca_file", path, r))?;
                let verifier =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| file_error("ca_file", path, e.to_string()))?;
                builder.with_webpki_verifier(verifier)
            }
            // Validation refuses this; a check built otherwise fails closed, not open.
            (None, true) => {
                return Err(CheckFileError {
                    field: format!("{field}.ca_file"),
                    path: Default::default(),
                    reason: "missing: `verify: true` needs the authorities to verify with"
                        .to_owned(),
                });
            }
            // keepalived's trust (validation keeps `ca_file` for `verify: true`).
            (_, false) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                    provider.signature_verification_algorithms,
                ))),
        };
        let mut config = match &check.client {
            None => builder.with_no_client_auth(),
            Some(files) => {
                let (cert_path, key_path) = (&files.certificate_file, &files.key_file);
                let cert_pem = read_pem(cert_path)
                    .map_err(|r| file_error("certificate_file", cert_path, r))?;
                let chain = certificates(&cert_pem)
                    .map_err(|r| file_error("certificate_file", cert_path, r))?;
                let key_pem =
                    read_pem(key_path).map_err(|r| file_error("key_file", key_path, r))?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    let reason = format!(
                        "holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"
                    );
                    file_error("key_file", key_path, reason)
                })?;
                fingerprint.update(&cert_pem);
                fingerprint.update(Sha256::digest(&key_pem));
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    let reason = format!("cannot be used with certificate_file: {e}");
                    file_error("key_file", key_path, reason)
                })?
            }
        };
        config.enable_sni = check.enable_sni;
        let sni_name = check
            .sni_name
            .as_deref()
            .and_then(|n| ServerName::try_from(n.to_owned()).ok());
        Ok(Self {
            config: Arc::new(config),
            sni_name,
            verify: check.verify,
            client_certificate: check.client.is_some(),
            fingerprint: fingerprint.finalize().into(),
        })
    }

    /// The server name of a request with `Host` header `host` to `target`: `sni_name`, else the
    /// host name of `host` (its port dropped), else `target`'s address. SNI sends it when
    /// `enable_sni` is set and it is a name (never an address, as keepalived); `verify` checks
    /// the certificate against it.
    pub fn server_name(&self, host: &str, target: SocketAddr) -> ServerName<'static> {
        if let Some(name) = &self.sni_name {
            return name.clone();
        }
        let bare = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            // An IPv6 address without brackets has no port.
            None if host.parse::<IpAddr>().is_ok() => host,
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return ServerName::IpAddress(ip.into());
        }
        ServerName::try_from(bare.to_owned())
            .unwrap_or_else(|_| ServerName::IpAddress(target.ip().into()))
    }

    /// The TLS handshake over `stream`, as a client of `name`; `Err` says why it failed.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        name: ServerName<'static>,
    ) -> Result<TlsStream<S>, String> {
        TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| match e.get_ref() {
                Some(inner) => format!("TLS handshake: {inner}"),
                None => format!("TLS handshake: {}", super::probe::io_reason(&e)),
            })
    }
}

/// The TLS clients of a configuration, one per distinct `ssl_get` setting (thousands of reals
/// behind one service share theirs, so a CA bundle is read once per reload).
#[derive(Default)]
pub struct TlsClients(HashMap<TlsCheck, TlsClient>);

impl TlsClients {
    /// The client of `check` (see [`TlsClient::new`]).
    pub fn get(&mut self, check: &TlsCheck, field: &str) -> Result<TlsClient, CheckFileError> {
        if let Some(client) = self.0.get(check) {
            return Ok(client.clone());
        }
        let client = TlsClient::new(check, field)?;
        self.0.insert(check.clone(), client.clone());
        Ok(client)
    }
}

/// The bytes of a PEM file, at most [`MAX_PEM_FILE`].
fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(format!(
            "larger than {} MiB: not a PEM file of certificates or a key",
            MAX_PEM_FILE / (1024 * 1024)
        ));
    }
    Ok(bytes)
}

/// The certificates of a PEM file, at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not a PEM file of certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(certs)
}

/// The authorities of a PEM file, every one usable.
fn root_store(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(pem)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} is not a usable authority: {e}", i + 1))?;
    }
    Ok(roots)
}

/// keepalived's SSL_GET trust: any certificate chain is accepted, whoever signed it and
/// whatever it names; the handshake's signatures are still checked with the certificate's key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
