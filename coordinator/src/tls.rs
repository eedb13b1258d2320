//! The certificate the coordinator presents.
//!
//! Either the operator gives one (`--cert`/`--key`), or the coordinator makes a self-signed one
//! on first start and keeps it in its TLS directory, so that the `cert.pem` clients were given
//! (via `TASK_SHARDING_CA`) stays valid across restarts. Its SHA-256 fingerprint is the other way
//! clients can trust it (`TASK_SHARDING_FINGERPRINT`).
//!
//! Optionally (`--client-ca`), the coordinator also asks every client for a certificate issued by
//! one of the CAs in a PEM bundle, and ends the handshake of any client without one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use sha2::{Digest as _, Sha256};

/// What went wrong loading or making the coordinator's certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} {}", path.display())]
    Pem {
        /// What the file was meant to hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM file held no certificate.
    #[error("{what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// What the file was meant to hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The TLS directory holds a certificate without its key, or a key without its certificate.
    #[error("{} has only one of cert.pem and key.pem; remove it to generate a new pair", dir.display())]
    HalfIdentity {
        /// The TLS directory.
        dir: PathBuf,
    },
    /// rcgen could not make a certificate for these names.
    #[error("cannot generate a self-signed certificate")]
    Generate(#[source] rcgen::Error),
    /// The TLS directory could not be created private.
    #[error(transparent)]
    Private(#[from] crate::private_dir::PrivateError),
    /// A file or directory could not be created, read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was tried: "create", "read", "write".
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate of the client CA bundle cannot serve as a trust anchor.
    #[error("certificate {number} of the client CA bundle {} is unusable as a CA", path.display())]
    UnusableCa {
        /// Its place in the bundle, from 1.
        number: usize,
        /// The bundle.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused to verify clients with these CAs.
    #[error("cannot verify clients with {}", path.display())]
    Verifier {
        /// The bundle.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The stored stateless-reset key has the wrong length.
    #[error("{} holds {len} bytes, not {RESET_KEY_LEN}; delete it to have a new one generated", path.display())]
    ResetKeyLength {
        /// The key file.
        path: PathBuf,
        /// How many bytes it holds.
        len: usize,
    },
}

impl TlsError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TlsError {
        let path = path.to_path_buf();
        move |source| TlsError::Io {
            action,
            path,
            source,
        }
    }
}

/// The certificates of a PEM file, at least one; `what` names the file in errors. The one PEM
/// certificate loader of the coordinator, for its own chain and for the client CA bundle.
fn load_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct TlsIdentity {
    /// The chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// Where the leaf certificate is, for the message telling operators what to hand clients.
    pub cert_path: PathBuf,
}

impl TlsIdentity {
    /// Loads a PEM certificate chain and private key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let certs = load_certificates(cert_path, "the certificate chain")?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Pem {
            what: "the private key",
            path: key_path.to_path_buf(),
            source,
        })?;
        Ok(TlsIdentity {
            certs,
            key,
            cert_path: cert_path.to_path_buf(),
        })
    }

    /// Loads `cert.pem` and `key.pem` from `dir`, or, when neither exists, generates a
    /// self-signed certificate for `names` (DNS names or IP addresses) and writes them there.
    pub fn load_or_generate(dir: &Path, names: &[String]) -> Result<Self, TlsError> {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => return Self::load(&cert_path, &key_path),
            (false, false) => {}
            _ => {
                return Err(TlsError::HalfIdentity {
                    dir: dir.to_path_buf(),
                })
            }
        }
        crate::private_dir::create(dir)?;
        let generated =
            rcgen::generate_simple_self_signed(names.to_vec()).map_err(TlsError::Generate)?;
        write_private(&key_path, generated.key_pair.serialize_pem().as_bytes())?;
        fs::write(&cert_path, generated.cert.pem()).map_err(TlsError::io("write", &cert_path))?;
        tracing::info!(cert = %cert_path.display(), ?names, "generated a self-signed certificate");
        Self::load(&cert_path, &key_path)
    }

    /// The SHA-256 of the leaf certificate, in lowercase hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.certs[0])
    }
}

/// The CAs whose client certificates the coordinator accepts (`--client-ca`).
#[derive(Debug, Clone)]
pub struct ClientCa {
    /// The PEM bundle the CAs came from, for the startup message.
    pub path: PathBuf,
    /// How many CA certificates it holds.
    pub count: usize,
    /// Checks each client's certificate chain against those CAs during the handshake.
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCa {
    /// Loads a PEM bundle of CA certificates; every client will have to present a certificate
    /// chaining to one of them.
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        let certs = load_certificates(path, "the client CA bundle")?;
        let count = certs.len();
        let mut roots = RootCertStore::empty();
        for (index, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|source| TlsError::UnusableCa {
                number: index + 1,
                path: path.to_path_buf(),
                source,
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|source| TlsError::Verifier {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(ClientCa {
            path: path.to_path_buf(),
            count,
            verifier,
        })
    }

    /// The verifier to hand rustls: it requires a certificate from every client.
    pub fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.verifier.clone()
    }
}

/// The SHA-256 of a DER certificate, in lowercase hex: what `TASK_SHARDING_FINGERPRINT` pins.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// The names a generated certificate is valid for: loopback, this host, and what was asked.
pub fn default_names(extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = process_setup::host_name() {
        names.push(host);
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The key the coordinator derives its QUIC stateless-reset tokens from, kept in
/// `dir/reset.key` (generated when absent) so that it survives restarts: a restarted
/// coordinator then answers a packet of a connection it no longer knows with a reset the client
/// recognizes, and the client reconnects at once instead of waiting out its idle timeout.
pub fn load_or_generate_reset_key(dir: &Path) -> Result<[u8; RESET_KEY_LEN], TlsError> {
    let path = dir.join("reset.key");
    match fs::read(&path) {
        Ok(bytes) => bytes
            .try_into()
            .map_err(|bytes: Vec<u8>| TlsError::ResetKeyLength {
                path: path.clone(),
                len: bytes.len(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::private_dir::create(dir)?;
            let mut key = [0; RESET_KEY_LEN];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
            write_private(&path, &key)?;
            Ok(key)
        }
        Err(e) => Err(TlsError::io("read", &path)(e)),
    }
}

/// The length of the stateless-reset key.
pub const RESET_KEY_LEN: usize = 64;

/// Writes a file readable by its owner only: it holds a private key.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(TlsError::io("create", path))?;
    file.write_all(contents)
        .map_err(TlsError::io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_key_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_generate_reset_key(dir.path()).unwrap();
        assert_eq!(load_or_generate_reset_key(dir.path()).unwrap(), key);
        assert_ne!(key, [0; RESET_KEY_LEN]);
        fs::write(dir.path().join("reset.key"), b"short").unwrap();
        let error = load_or_generate_reset_key(dir.path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("holds 5 bytes"), "{error}");
    }

    #[test]
    fn a_generated_identity_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = TlsIdentity::load_or_generate(dir.path(), &default_names(&[])).unwrap();
        let second = TlsIdentity::load_or_generate(dir.path(), &default_names(&[])).unwrap();
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_eq!(first.fingerprint().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
    }

    #[test]
    fn a_client_ca_bundle_loads_and_requires_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TlsIdentity::load_or_generate(dir.path(), &default_names(&[])).unwrap();
        let client_ca = ClientCa::load(&ca.cert_path).unwrap();
        assert_eq!(client_ca.count, 1);
        assert!(client_ca.verifier().client_auth_mandatory());
    }

    #[test]
    fn a_missing_empty_or_garbled_client_ca_bundle_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ClientCa::load(&dir.path().join("nope.pem")).unwrap_err();
        assert!(
            format!("{missing:#}").contains("cannot read the client CA bundle"),
            "{missing:#}"
        );
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "not a certificate\n").unwrap();
        let error = ClientCa::load(&empty).unwrap_err();
        assert!(
            error.to_string().contains("holds no PEM certificate"),
            "{error:#}"
        );
        let garbled = dir.path().join("garbled.pem");
        fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = ClientCa::load(&garbled).unwrap_err();
        assert!(error.to_string().contains("garbled.pem"), "{error:#}");
    }

    #[test]
    fn half_an_identity_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cert.pem"), "x").unwrap();
        let error = TlsIdentity::load_or_generate(dir.path(), &[]).unwrap_err();
        assert!(error.to_string().contains("only one of"), "{error}");
    }
}
