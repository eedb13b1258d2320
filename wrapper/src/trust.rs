//! How a client decides to trust the coordinator: a CA file, or a pinned certificate fingerprint.
//! Never by skipping verification. And, when the coordinator requires mutual TLS, the
//! certificate this client proves itself with ([`ClientIdentity`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
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
    /// The client certificate or its key could not be read, or do not belong together.
    #[error(
        "cannot use the client certificate (TASK_SHARDING_CLIENT_CERT / TASK_SHARDING_CLIENT_KEY): \
         {0}"
    )]
    ClientIdentity(String),
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

    /// The rustls configuration verifying the coordinator this way, speaking our ALPN, with no
    /// client certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TrustError> {
        self.client_config_presenting(None)
    }

    /// Like [`Trust::client_config`], presenting `identity` when the coordinator asks for a
    /// client certificate.
    pub fn client_config_presenting(
        &self,
        identity: Option<&ClientIdentity>,
    ) -> Result<rustls::ClientConfig, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let builder = match self {
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
                builder.with_root_certificates(roots)
            }
            Trust::Fingerprint(pin) => {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                        pin: *pin,
                        provider,
                    }))
            }
        };
        let mut config = match identity {
            Some(identity) => {
                builder.with_client_auth_cert(identity.certs.clone(), identity.key.clone_key())?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![schemas::ALPN.to_vec()];
        Ok(config)
    }
}

/// The certificate chain and private key this client presents to a coordinator that requires
/// client certificates (its `--client-ca`).
pub struct ClientIdentity {
    /// Where the chain came from, for messages.
    cert_path: PathBuf,
    /// The chain, leaf first.
    certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    key: PrivateKeyDer<'static>,
}

impl ClientIdentity {
    /// Reads a PEM certificate chain (leaf first) and its PEM private key, and checks that the
    /// key belongs to the certificate, so a mistake shows up now rather than as a refused
    /// handshake.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ClientIdentity, TrustError> {
        let error = |reason: String| TrustError::ClientIdentity(reason);
        let certs = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| error(format!("cannot read {}: {e}", cert_path.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(format!("bad PEM in {}: {e}", cert_path.display())))?;
        if certs.is_empty() {
            return Err(error(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                cert_path.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
            error(format!(
                "cannot read a PEM private key from {}: {e}",
                key_path.display()
            ))
        })?;
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(certs.clone(), key.clone_key(), &provider).map_err(|e| {
            let (cert, key) = (cert_path.display(), key_path.display());
            error(match e {
                rustls::Error::InconsistentKeys(_) => {
                    format!("the key {key} does not go with the certificate {cert}")
                }
                other => format!("cannot use the key {key} with the certificate {cert}: {other}"),
            })
        })?;
        Ok(ClientIdentity {
            cert_path: cert_path.to_path_buf(),
            certs,
            key,
        })
    }

    /// Where the certificate was read from.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            cert_path: self.cert_path.clone(),
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Never prints the key.
impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
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

    /// A certificate and key pair written by the coordinator's generator, as a client identity.
    fn generated_pair(dir: &Path) -> (PathBuf, PathBuf) {
        coordinator::tls::TlsIdentity::load_or_generate(dir, &["client".to_string()]).unwrap();
        (dir.join("cert.pem"), dir.join("key.pem"))
    }

    #[test]
    fn a_client_identity_loads_and_is_presented() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generated_pair(dir.path());
        let identity = ClientIdentity::load(&cert, &key).unwrap();
        assert!(!format!("{identity:?}").contains("PRIVATE"));
        let config = Trust::fingerprint(&"ab".repeat(32))
            .unwrap()
            .client_config_presenting(Some(&identity))
            .unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        let without = Trust::fingerprint(&"ab".repeat(32))
            .unwrap()
            .client_config()
            .unwrap();
        assert!(!without.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn a_client_identity_that_is_missing_or_mismatched_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generated_pair(&dir.path().join("one"));
        let (_, other_key) = generated_pair(&dir.path().join("two"));
        let missing = ClientIdentity::load(&dir.path().join("nope.pem"), &key).unwrap_err();
        assert!(
            missing.to_string().contains("TASK_SHARDING_CLIENT_CERT")
                && missing.to_string().contains("nope.pem"),
            "{missing}"
        );
        let no_key = ClientIdentity::load(&cert, &cert).unwrap_err();
        assert!(no_key.to_string().contains("private key"), "{no_key}");
        let key_as_cert = ClientIdentity::load(&key, &key).unwrap_err();
        assert!(
            key_as_cert.to_string().contains("no PEM certificate"),
            "{key_as_cert}"
        );
        let mismatched = ClientIdentity::load(&cert, &other_key).unwrap_err();
        assert!(
            mismatched.to_string().contains("does not go with"),
            "{mismatched}"
        );
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
