//! TLS for `https://` deliveries: which roots are trusted, and how a TLS
//! failure reads in a subscription's `last_error`.
//!
//! The roots are the platform's (read once at start with
//! `rustls-native-certs`, so an operator updates them the usual way and
//! restarts) plus those of `serve --webhook-ca-file`, for receivers behind
//! a private CA. The provider is rustls' `ring` one, named here rather
//! than taken from a process-wide default, so the choice does not depend
//! on which other crate in the build enables which feature.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// The client configuration of every delivery: the platform's roots, and
/// the certificates of `ca_file` (PEM) when given. A CA file that cannot
/// be read, or holds no usable certificate, stops the start: an operator
/// who named one expects it to be in force.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "some of the platform's trusted certificates could not be read");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        // Not fatal: receivers under --webhook-ca-file still work, and the
        // others fail visibly in their `last_error`.
        tracing::warn!(
            "no trusted certificates found on this platform; https:// webhooks work only to receivers whose CA is in --webhook-ca-file"
        );
    }
    tracing::debug!(added, ignored, "the platform's trusted certificates");
    if let Some(path) = ca_file {
        let count = add_ca_file(&mut roots, path)
            .with_context(|| format!("--webhook-ca-file {}", path.display()))?;
        tracing::info!(file = %path.display(), certificates = count, "webhook receivers' extra trusted certificates");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no safe protocol version")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Adds every certificate of the PEM file `path` as a trusted root, and
/// says how many.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> anyhow::Result<usize> {
    let pem = std::fs::read(path).context("cannot read it")?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| anyhow::anyhow!("not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("certificate {} is not usable: {e}", count + 1))?;
        count += 1;
    }
    if count == 0 {
        anyhow::bail!("it holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    }
    Ok(count)
}

/// What a failed request's `last_error` says: a TLS failure in words an
/// operator can act on, anything else as its chain of causes (the
/// client's own message alone, "client error (Connect)", names no cause).
pub fn describe(error: &(dyn StdError + 'static)) -> String {
    if let Some(tls) = find_tls(error) {
        return tls_words(tls);
    }
    let mut out = format!("request failed: {error}");
    let mut cause = error.source();
    while let Some(e) = cause {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cause = e.source();
    }
    out
}

/// The rustls error somewhere among `error`'s causes.
fn find_tls<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An `io::Error`'s `source()` is its inner error's source, not the
        // inner error itself (which it displays as), so the walk steps into
        // it: tokio-rustls hands the handshake's rustls error up in one.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    None
}

fn tls_words(error: &rustls::Error) -> String {
    let words = match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                "certificate not trusted (unknown issuer; a private CA goes in --webhook-ca-file)"
                    .to_owned()
            }
            // A certificate naming a trusted issuer that did not sign it.
            CertificateError::BadSignature => {
                "certificate not trusted (its signature does not verify against a trusted root)"
                    .to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate not valid for this host".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not valid yet".to_owned()
            }
            CertificateError::Revoked => "certificate revoked".to_owned(),
            other => format!("certificate refused: {other:?}"),
        },
        other => other.to_string(),
    };
    format!("tls: {words}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_error_wrapped_in_io_errors_is_named() {
        let tls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(io);
        let said = describe(&outer);
        assert!(said.starts_with("tls: certificate not trusted"), "{said}");
    }

    #[test]
    fn other_errors_show_their_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(describe(&io), "request failed: refused");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        assert!(client_config(Some(&path)).is_err());
        assert!(client_config(Some(&dir.path().join("missing.pem"))).is_err());
        assert!(client_config(None).is_ok());
    }
}
