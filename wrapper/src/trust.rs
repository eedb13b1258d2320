//! How a client decides to trust the coordinator: a CA file, or a pinned certificate fingerprint.
//! Never by skipping verification.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};

/// What the client trusts.
#[derive(Clone, PartialEq, Eq)]
pub enum Trust {
    /// Certificates in this PEM file are trusted roots (the coordinator's generated `cert.pem`,
    /// or the CA that signed its certificate). The coordinator's name must match the certificate.
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 (of its DER encoding).
    Fingerprint([u8; 32]),
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::CaFile(path) => write!(f, "CaFile({})", path.display()),
            Trust::Fingerprint(fp) => write!(f, "Fingerprint({})", hex::encode(fp)),
        }
    }
}

/// Why a trust setting could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The CA file could not be read or held no certificate.
    #[error("cannot use the CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The fingerprint is not 64 hex digits.
    #[error("the fingerprint {0:?} is not a SHA-256 in hex (64 hex digits, colons allowed)")]
    Fingerprint(String),
    /// The TLS library refused the configuration.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

impl Trust {
    /// Parses a hex SHA-256 fingerprint; colons and case are ignored.
    pub fn fingerprint(text: &str) -> Result<Trust, TrustError> {
        let digits: String = text.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(digits.trim()).map_err(|_| TrustError::Fingerprint(text.into()))?;
        let pin = bytes
            .try_into()
            .map_err(|_| TrustError::Fingerprint(text.into()))?;
        Ok(Trust::Fingerprint(pin))
    }

    /// The rustls configuration verifying the coordinator this way, speaking our ALPN.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let mut config = match self {
            Trust::CaFile(path) => {
                let ca_error = |reason: String| TrustError::CaFile {
                    path: path.clone(),
                    reason,
                };
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| ca_error(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ca_error(e.to_string()))?;
                if certs.is_empty() {
                    return Err(ca_error("it holds no PEM certificate".into()));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Fingerprint(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                    pin: *pin,
                    provider,
                }))
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![schemas::ALPN.to_vec()];
        Ok(config)
    }
}

/// Accepts exactly one certificate, whatever its names or dates, and still checks that the
/// server holds its private key (the handshake signatures).
#[derive(Debug)]
struct PinnedCertificate {
    /// The SHA-256 of the one acceptable certificate.
    pin: [u8; 32],
    /// Verifies handshake signatures.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if actual == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the coordinator's certificate has fingerprint {}, not the pinned {}",
                hex::encode(actual),
                hex::encode(self.pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let hex64 = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(
            Trust::fingerprint(&hex64).unwrap(),
            Trust::fingerprint(&colons).unwrap()
        );
        assert!(Trust::fingerprint("abcd").is_err());
        assert!(Trust::fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Trust::CaFile(dir.path().join("nope.pem"))
            .client_config()
            .unwrap_err();
        assert!(missing.to_string().contains("nope.pem"), "{missing}");
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let empty = Trust::CaFile(dir.path().join("empty.pem"))
            .client_config()
            .unwrap_err();
        assert!(empty.to_string().contains("no PEM certificate"), "{empty}");
    }
}
