//! TLS for every gRPC port, on rustls. Tonic serves and dials plain streams
//! here; the handshakes happen in this module so that each one uses the
//! credentials current at that moment (a renewed certificate is picked up
//! without dropping established connections), and so that the verified
//! identity of the other side reaches the handlers as connection info.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::server::Connected;

use super::credentials::Credentials;
use super::pki::Identity;
use crate::Error;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl std::fmt::Display) -> Error {
    Error::FailedPrecondition(format!("TLS configuration: {e}"))
}

/// Whether a server asks its clients for a mesh certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Pair and peer ports: a certificate from the mesh CA, or no handshake.
    Required,
    /// The client API: clients prove who they are with a session instead.
    None,
}

/// The rustls configurations made from one set of credentials.
pub struct Configs {
    pub mutual_server: Arc<ServerConfig>,
    pub open_server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

impl Configs {
    pub fn new(
        roots: &Arc<RootCertStore>,
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
    ) -> Result<Self, Error> {
        let versions = &[&rustls::version::TLS13];
        let server = |auth: ClientAuth| -> Result<Arc<ServerConfig>, Error> {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .map_err(config_error)?;
            let builder = match auth {
                ClientAuth::Required => builder.with_client_cert_verifier(
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                        .build()
                        .map_err(config_error)?,
                ),
                ClientAuth::None => builder.with_no_client_auth(),
            };
            let mut config = builder
                .with_single_cert(chain.to_vec(), key.clone_key())
                .map_err(config_error)?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            if auth == ClientAuth::Required {
                // No resumption: a resumed session skips the client
                // certificate, which could have expired or been replaced
                // since. Mesh connections are long-lived, so every one
                // paying a full handshake costs little.
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                config.send_tls13_tickets = 0;
            }
            Ok(Arc::new(config))
        };
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(config_error)?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.to_vec(), key.clone_key())
            .map_err(config_error)?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            mutual_server: server(ClientAuth::Required)?,
            open_server: server(ClientAuth::None)?,
            client: Arc::new(client),
        })
    }
}

/// A client configuration that trusts `ca_pem` and shows no certificate
/// (the CLI and other clients of the client API).
pub fn ca_only_client(ca_pem: &str) -> Result<Arc<ClientConfig>, Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_root_certificates(roots_of(ca_pem)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration for a database server whose certificate
/// `ca_pem` issued: TLS 1.2 or 1.3 (PostgreSQL's default minimum is 1.2),
/// the server's name checked, no ALPN (PostgreSQL accepts only its own).
pub fn database_client(ca_pem: &str) -> Result<ClientConfig, Error> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_root_certificates(roots_of(ca_pem)?)
        .with_no_client_auth())
}

fn roots_of(ca_pem: &str) -> Result<RootCertStore, Error> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(config_error)?)
            .map_err(config_error)?;
    }
    if roots.is_empty() {
        return Err(config_error("the CA file holds no certificate"));
    }
    Ok(roots)
}

/// What a server knows of the other end of a connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// Verified by the handshake; `None` on a port without client auth.
    pub identity: Option<Identity>,
}

/// An accepted, handshaken connection.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl TlsConn {
    pub(super) fn new(stream: tokio_rustls::server::TlsStream<TcpStream>, info: PeerInfo) -> Self {
        Self { stream, info }
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// What a server port presents, and whether it asks for a mesh certificate.
#[derive(Clone)]
pub enum ServerTls {
    /// The region's certificate; `Required` asks clients for theirs.
    Region(Arc<Credentials>, ClientAuth),
    /// Another certificate (the client API's own), asking for none.
    Cert(Arc<super::server_cert::ServerCert>),
}

impl ServerTls {
    pub(super) fn config(&self) -> Arc<ServerConfig> {
        match self {
            ServerTls::Region(credentials, ClientAuth::Required) => {
                credentials.current().configs.mutual_server.clone()
            }
            ServerTls::Region(credentials, ClientAuth::None) => {
                credentials.current().configs.open_server.clone()
            }
            ServerTls::Cert(cert) => cert.config(),
        }
    }

    pub(super) fn auth(&self) -> ClientAuth {
        match self {
            ServerTls::Region(_, auth) => *auth,
            ServerTls::Cert(_) => ClientAuth::None,
        }
    }
}

/// How a channel authenticates the server it dials.
#[derive(Clone)]
pub enum Dial {
    /// A mesh server that must prove it is `region`, with this process's
    /// certificate as the client's (a region's, or a tool's such as the
    /// operator's).
    Region {
        credentials: Arc<Credentials>,
        region: String,
    },
    /// A client of the client API: the server must hold a certificate for
    /// the host in the URL, from a CA in `config`.
    Host(Arc<ClientConfig>),
}

/// A dialled, handshaken connection, as hyper takes it.
pub type ClientIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

/// Connects TCP to the host and port of `uri`, then handshakes as `dial`.
pub async fn connect(
    uri: tonic::codegen::http::Uri,
    dial: Dial,
) -> Result<ClientIo, std::io::Error> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("{uri} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri
        .port_u16()
        .ok_or_else(|| invalid(format!("{uri} has no port")))?;
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let (config, name) = match dial {
        Dial::Region {
            credentials,
            region,
        } => (
            credentials.current().configs.client.clone(),
            super::pki::region_name(&region),
        ),
        Dial::Host(config) => (config, host),
    };
    let name = ServerName::try_from(name).map_err(|e| invalid(e.to_string()))?;
    let stream = TlsConnector::from(config).connect(name, tcp).await?;
    Ok(TokioIo::new(stream))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::trust::pki::{DEFAULT_LIFETIME, MeshCa};

    /// Handshakes a client holding `client` with a server holding `server`
    /// (of region eu) over an in-memory pipe; the server's verdict.
    async fn handshake(server: &Arc<Credentials>, client: &Arc<Credentials>) -> Result<(), String> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(server.current().configs.mutual_server.clone());
        let connector = TlsConnector::from(client.current().configs.client.clone());
        let name = ServerName::try_from(super::super::pki::region_name("eu")).unwrap();
        let (served, dialled) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
        served.map(|_| ()).map_err(|e| e.to_string())?;
        dialled.map(|_| ()).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn the_handshake_takes_only_current_certificates_of_the_mesh_ca() {
        let ca = MeshCa::generate("test").unwrap();
        let region = |code: &str, lifetime| {
            ca.issue_region(code, "test", &[], lifetime)
                .and_then(|c| c.credentials(&ca.cert_pem))
                .unwrap()
        };
        let eu = region("eu", DEFAULT_LIFETIME);
        handshake(&eu, &region("us", DEFAULT_LIFETIME))
            .await
            .unwrap();

        let other = MeshCa::generate("other").unwrap();
        let foreign = other
            .issue_region("us", "other", &[], DEFAULT_LIFETIME)
            .and_then(|c| c.credentials(&other.cert_pem))
            .unwrap();
        assert!(handshake(&eu, &foreign).await.is_err(), "another CA");

        // Valid for its first second: one handshake succeeds, and no
        // resumed session carries it past its end.
        let expiring = region("us", Duration::from_secs(1));
        handshake(&eu, &expiring).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let err = handshake(&eu, &expiring).await.unwrap_err();
        assert!(err.contains("xpired"), "{err}");
    }
}
