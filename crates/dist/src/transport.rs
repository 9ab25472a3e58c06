//! What distribution connections run over: plain TCP (the default) or TLS
//! (rustls with the `ring` provider), as OTP's `-proto_dist inet_tls`.
//!
//! With TLS, both accepted and outgoing connections start with a TLS
//! handshake right after the TCP connect; the distribution handshake,
//! ticks and messages then run unchanged inside the TLS stream (this is
//! what `inet_tls_dist` does, so Ember and `erl -proto_dist inet_tls`
//! interoperate). The port mapper is not involved: registration is the
//! same as for TCP.
//!
//! [`DistStream`] hides which one a connection uses from the handshake
//! and the connection's tasks. A plain TCP connection is split into its
//! owned halves, as before; a TLS one with [`tokio::io::split`].

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{
    self, server::WebPkiClientVerifier, ClientConfig, RootCertStore, ServerConfig,
};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::error::DistError;
use crate::handshake::HandshakeStream;

/// TLS for distribution: this node's certificate and key, the
/// certificate authorities it trusts for its peers, and whether peers
/// that accept a connection must present a certificate.
///
/// A node with TLS speaks only TLS: plain TCP peers are refused (as an OTP
/// node started with `-proto_dist inet_tls`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM file with this node's certificate (then its chain, if any);
    /// presented as server and as client (OTP's `certfile`).
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or
    /// SEC1; OTP's `keyfile`).
    pub key_file: PathBuf,
    /// PEM file with the certificate authorities trusted to sign peers'
    /// certificates (OTP's `cacertfile`).
    pub ca_file: PathBuf,
    /// Refuse a connecting peer that presents no certificate (default
    /// true: OTP's `verify_peer` with `fail_if_no_peer_cert`). A
    /// certificate that is presented is always verified, and the node
    /// connected to must always present one that names its host.
    pub require_peer_cert: bool,
}

impl TlsOptions {
    /// Mutual TLS with this certificate, key and trusted authorities.
    pub fn new(
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
        ca_file: impl Into<PathBuf>,
    ) -> TlsOptions {
        TlsOptions {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            ca_file: ca_file.into(),
            require_peer_cert: true,
        }
    }
}

/// A node's transport, ready to wrap sockets.
#[derive(Clone)]
pub(crate) enum Transport {
    Tcp,
    Tls {
        acceptor: TlsAcceptor,
        connector: TlsConnector,
    },
}

fn load_error(what: &str, path: &Path, e: impl std::fmt::Display) -> DistError {
    DistError::Tls(format!("cannot load the {what} {}: {e}", path.display()))
}

fn load_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, DistError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| load_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_error(what, path, e))?;
    if certs.is_empty() {
        return Err(load_error(what, path, "no certificate in it"));
    }
    Ok(certs)
}

impl Transport {
    /// Loads the files of `options` (plain TCP when `None`).
    pub(crate) fn new(options: Option<&TlsOptions>) -> Result<Transport, DistError> {
        let Some(o) = options else {
            return Ok(Transport::Tcp);
        };
        // `ring` (no C toolchain beyond cc, unlike aws-lc-rs); its
        // provider is deprecated only for lacking post-quantum key exchange,
        // which OTP peers do not offer either.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = load_certs("certificate file", &o.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&o.key_file)
            .map_err(|e| load_error("key file", &o.key_file, e))?;
        let mut roots = RootCertStore::empty();
        for ca in load_certs("CA file", &o.ca_file)? {
            roots
                .add(ca)
                .map_err(|e| load_error("CA file", &o.ca_file, e))?;
        }
        let roots = Arc::new(roots);
        let bad = |e: rustls::Error| DistError::Tls(e.to_string());

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
        let verifier = if o.require_peer_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        }
        .build()
        .map_err(|e| DistError::Tls(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| DistError::Tls(format!("the certificate and key do not fit: {e}")))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| DistError::Tls(format!("the certificate and key do not fit: {e}")))?;
        Ok(Transport::Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Whether connections use TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls { .. })
    }

    /// Wraps an accepted socket (the TLS handshake, as the server).
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Result<DistStream, DistError> {
        let _ = tcp.set_nodelay(true);
        match self {
            Transport::Tcp => Ok(DistStream::Tcp(tcp)),
            Transport::Tls { acceptor, .. } => match acceptor.accept(tcp).await {
                Ok(s) => Ok(DistStream::Tls(Box::new(TlsStream::Server(s)))),
                Err(e) => Err(DistError::Tls(format!(
                    "TLS handshake failed: {}",
                    explain(&e)
                ))),
            },
        }
    }

    /// Wraps a socket connected to a node on `host` (the TLS handshake,
    /// as the client; the node's certificate must name `host`).
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
    ) -> Result<DistStream, DistError> {
        let _ = tcp.set_nodelay(true);
        match self {
            Transport::Tcp => Ok(DistStream::Tcp(tcp)),
            Transport::Tls { connector, .. } => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| DistError::Tls(format!("host {host:?}: {e}")))?;
                match connector.connect(name, tcp).await {
                    Ok(s) => Ok(DistStream::Tls(Box::new(TlsStream::Client(s)))),
                    Err(e) => Err(DistError::Tls(format!(
                        "TLS handshake failed: {}",
                        explain(&e)
                    ))),
                }
            }
        }
    }
}

/// An error of the distribution handshake inside TLS, with a TLS cause
/// (an alert: with TLS 1.3 a server refuses a client's certificate only
/// after the client finished its side) as [`DistError::Tls`].
pub(crate) fn surface_tls(e: DistError) -> DistError {
    let DistError::Io(io) = &e else {
        return e;
    };
    match io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => DistError::Tls(format!(
            "the peer refused the connection: TLS alert {alert:?}"
        )),
        Some(tls) => DistError::Tls(tls.to_string()),
        None => e,
    }
}

/// A TLS handshake error in words: rustls' own, and what an early end of
/// the connection most likely means.
fn explain(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
            format!("{e} (the peer closed the connection: it may not speak TLS, or refused our certificate)")
        }
        io::ErrorKind::InvalidData if e.to_string().contains("corrupt message") => {
            format!("{e} (the peer does not speak TLS)")
        }
        _ => e.to_string(),
    }
}

/// A connection's byte stream: plain TCP or TLS over TCP.
#[derive(Debug)]
pub(crate) enum DistStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl HandshakeStream for DistStream {
    fn wide_lengths(&self) -> bool {
        matches!(self, DistStream::Tls(_))
    }
}

impl AsyncRead for DistStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DistStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            DistStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DistStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DistStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            DistStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DistStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            DistStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DistStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            DistStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
