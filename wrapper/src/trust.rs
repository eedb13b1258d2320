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

/// Accepts exactly one certificate, whatever its names, while it is valid (its notBefore and
/// notAfter), and still checks that the server holds its private key (the handshake
/// signatures).
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
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if actual == self.pin {
            let (not_before, not_after) = validity(end_entity.as_ref()).ok_or_else(|| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
            let now = now.as_secs() as i64;
            if now < not_before {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidYet,
                ));
            }
            if now > not_after {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired,
                ));
            }
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

/// The notBefore and notAfter of a DER X.509 certificate, in seconds since the Unix epoch:
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
/// signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }`.
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (certificate, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(certificate, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1;
    }
    for tag in [0x02, 0x30, 0x30] {
        tbs = der_element(tbs, tag)?.1; // serialNumber, signature, issuer
    }
    let (validity, _) = der_element(tbs, 0x30)?;
    let (not_before, rest) = der_time(validity)?;
    let (not_after, _) = der_time(rest)?;
    Some((not_before, not_after))
}

/// The contents of the DER element at the start of `input`, which must have `tag`, and what
/// follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, mut rest) = rest.split_first()?;
    let len = if len < 0x80 {
        len as usize
    } else {
        let bytes = (len & 0x7f) as usize;
        if bytes == 0 || bytes > 4 || rest.len() < bytes {
            return None;
        }
        let (digits, after) = rest.split_at(bytes);
        rest = after;
        digits.iter().fold(0usize, |n, &d| (n << 8) | d as usize)
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) at the start of `input`,
/// in seconds since the Unix epoch, and what follows it.
fn der_time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (text, rest, year) = match input.first()? {
        0x17 => {
            let (text, rest) = der_element(input, 0x17)?;
            let yy = digits(text.get(..2)?)?;
            (
                text.get(2..)?,
                rest,
                if yy < 50 { 2000 + yy } else { 1900 + yy },
            )
        }
        0x18 => {
            let (text, rest) = der_element(input, 0x18)?;
            (text.get(4..)?, rest, digits(text.get(..4)?)?)
        }
        _ => return None,
    };
    if text.len() != 11 || text[10] != b'Z' {
        return None;
    }
    let field = |at: usize| digits(&text[at..at + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3_600 + minute * 60 + second, rest))
}

fn digits(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0i64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 14): a pinned fingerprint accepted an expired certificate.
    #[test]
    fn a_pinned_certificate_must_be_current() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2001, 2, 3);
        params.not_after = rcgen::date_time_ymd(2061, 12, 31);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().clone();
        let (not_before, not_after) = validity(der.as_ref()).unwrap();
        assert_eq!(not_before, 981_158_400);
        assert_eq!(not_after, 2_903_212_800);
        let pin: [u8; 32] = Sha256::digest(der.as_ref()).into();
        let verifier = PinnedCertificate {
            pin,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        let name = ServerName::try_from("anything").unwrap();
        let at = |secs| {
            verifier.verify_server_cert(
                &der,
                &[],
                &name,
                &[],
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
            )
        };
        assert!(at(1_700_000_000).is_ok());
        assert!(matches!(
            at(2_903_212_801),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired
            ))
        ));
        assert!(matches!(
            at(981_158_399),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidYet
            ))
        ));
    }

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
