//! TLS on the server's own port, with `--tls-cert` and `--tls-key`: the page over
//! `https://`, WebSockets over `wss://`, no proxy needed. The certificate is read again
//! on SIGHUP (a renewed one, say), and connections already open keep theirs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Where the certificate chain and its private key are, both PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why the certificate or its key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate {}: {error}", path.display())]
    Cert {
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no certificate (a PEM file with BEGIN CERTIFICATE is expected)", path.display())]
    NoCert { path: PathBuf },
    #[error("cannot read the private key {}: {error}", path.display())]
    Key {
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    #[error("the certificate and the key do not go together: {0}")]
    Mismatch(rustls::Error),
}

/// The server's TLS settings as of the last (re)load.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the files; fails with what is wrong with them.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again. On failure the certificate in use stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.files)?);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// What accepts the next connection, with the certificate loaded last.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        TlsAcceptor::from(config)
    }

    /// The certificate's file, for messages.
    pub fn cert_path(&self) -> &Path {
        &self.files.cert
    }
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::Cert {
            path: files.cert.clone(),
            error,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| TlsError::Key {
        path: files.key.clone(),
        error,
    })?;
    // The provider named here rather than the process default, which two TLS crates
    // in one build would make ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Mismatch)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Mismatch)?;
    // HTTP/1.1 only: the WebSocket handshake is an HTTP/1.1 upgrade.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The first byte of every TLS connection: a handshake record.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// What a client that spoke plain HTTP to the TLS port is told.
pub fn plain_http_refusal() -> Vec<u8> {
    let body = "this server speaks TLS only: use https:// for the page and wss:// for WebSockets\n";
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl From<TlsError> for io::Error {
    fn from(error: TlsError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, error)
    }
}
