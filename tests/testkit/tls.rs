//! Certificates for the TLS tests: a private certificate authority made fresh for each
//! test (with `rcgen`), the server certificates it issues, and clients that trust it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::{HttpResponse, METRICS_REQUEST, read_response, within};

/// A certificate authority of our own.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a CA certificate");
        Self { issuer }
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA's certificate to `folder`/`ca.pem` and returns its path.
    pub fn write(&self, folder: &Path) -> PathBuf {
        let path = folder.join("ca.pem");
        std::fs::write(&path, self.pem()).expect("write the CA certificate");
        path
    }

    /// A server certificate for `names`, issued by this CA, and its key.
    fn issue(&self, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let params = CertificateParams::new(names).expect("server parameters");
        let key = KeyPair::generate().expect("a server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a server certificate");
        (cert, key)
    }

    /// Issues a certificate for `names` into `folder` as `cert.pem` and `key.pem`, over
    /// whatever was there, and returns the two paths.
    pub fn issue_into(&self, folder: &Path, names: &[&str]) -> chat_server::tls::TlsFiles {
        self.issue_for_browser(folder, names).0
    }

    /// As [`TestCa::issue_into`], also returning the SHA-256 hash (base64) of the
    /// certificate's public key, which Chromium can be told to trust.
    pub fn issue_for_browser(
        &self,
        folder: &Path,
        names: &[&str],
    ) -> (chat_server::tls::TlsFiles, String) {
        use base64::Engine;
        use sha2::Digest;
        let (cert, key) = self.issue(names);
        let files = chat_server::tls::TlsFiles {
            cert: folder.join("cert.pem"),
            key: folder.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        let spki = sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key));
        (
            files,
            base64::engine::general_purpose::STANDARD.encode(spki),
        )
    }

    /// A TLS client set-up that trusts this CA and no other.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).expect("a root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// Opens TLS to `address` as `host`, trusting `ca`.
pub async fn connect(
    address: SocketAddr,
    host: &str,
    ca: &TestCa,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from(host.to_owned()).expect("a server name");
    TlsConnector::from(ca.client_config())
        .connect(name, tcp)
        .await
}

/// Writes `request` over TLS to `address` (as `localhost`, trusting `ca`) and reads
/// one response.
pub async fn https(address: SocketAddr, ca: &TestCa, request: &str) -> HttpResponse {
    let mut stream = within("a TLS handshake", connect(address, "localhost", ca))
        .await
        .expect("a TLS connection");
    stream.write_all(request.as_bytes()).await.expect("write");
    within("an HTTPS response", read_response(&mut stream)).await
}

/// The value of a metric (as [`crate::metric`]) of a TLS server whose certificate
/// `ca` issued.
pub async fn metric(address: SocketAddr, ca: &TestCa, name: &str) -> u64 {
    https(address, ca, METRICS_REQUEST).await.metric(name)
}
