//! One `GET` of a key set from `--jwks-url`, over `http://` or `https://`: hyper's
//! HTTP/1 client on a tokio socket, and for `https://` the TLS stack the server already
//! has (rustls with ring) with the Mozilla roots of webpki-roots. No redirects, a
//! bounded body and a deadline: the provider is trusted for keys, not for memory or time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The most bytes of a key set: a provider's holds a few keys, a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long one fetch may take, from connecting to the body's last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("only http:// and https:// URLs with a host are fetched")]
    Scheme,
    #[error("no answer within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("the TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the answer was {0}, not 200 OK")]
    Status(StatusCode),
    #[error("the answer's body is larger than {MAX_BODY_BYTES} bytes, or broke off")]
    Body,
}

/// Fetches key sets; holds the TLS settings, made once.
pub struct Fetcher {
    tls: TlsConnector,
}

impl Fetcher {
    pub fn new() -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // The provider named rather than the process default, as in `tls.rs`.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            tls: TlsConnector::from(Arc::new(config)),
        }
    }

    /// The body of a `200 OK` answer to `GET url`.
    pub async fn get(&self, url: &url::Url) -> Result<Bytes, FetchError> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get_now(url))
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn get_now(&self, url: &url::Url) -> Result<Bytes, FetchError> {
        let host = url.host_str().ok_or(FetchError::Scheme)?;
        let port = url.port_or_known_default().ok_or(FetchError::Scheme)?;
        // An IPv6 literal is bracketed in the URL, not in the address to connect to.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let stream = TcpStream::connect((bare, port))
            .await
            .map_err(FetchError::Connect)?;
        match url.scheme() {
            "http" => request(stream, url).await,
            "https" => {
                let name = ServerName::try_from(bare.to_owned()).map_err(|_| FetchError::Scheme)?;
                let stream = self
                    .tls
                    .connect(name, stream)
                    .await
                    .map_err(FetchError::Tls)?;
                request(stream, url).await
            }
            _ => Err(FetchError::Scheme),
        }
    }
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

async fn request<S>(stream: S, url: &url::Url) -> Result<Bytes, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Ends when the answer has been read and the sender dropped, or on an error that
    // `send_request` reports too.
    let connection = tokio::spawn(connection);
    let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let request = Request::get(target)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json, application/jwk-set+json")
        .header(
            header::USER_AGENT,
            concat!("chat-server/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .expect("a GET of a parsed URL is a valid request");
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::OK {
        connection.abort();
        return Err(FetchError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| FetchError::Body)?
        .to_bytes();
    connection.abort();
    Ok(body)
}
