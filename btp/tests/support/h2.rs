//! HTTP/2 to the gateway's TLS listener: a TLS connection offering only `h2`, and a
//! hyper HTTP/2 client on it.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::gateway::TestGateway;

/// A TLS connection to the gateway offering only `h2`.
pub async fn h2_tls(gw: &TestGateway) -> tokio_rustls::client::TlsStream<TcpStream> {
    let pem = std::fs::read(gw.dir.join("certs/dev.crt")).unwrap_or_else(|e| panic!("{e}"));
    let connector = super::tls_connector(&pem, b"h2").unwrap_or_else(|e| panic!("{e}"));
    let tcp = TcpStream::connect(gw.tls.unwrap_or_else(|| panic!("no TLS listener")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let name =
        rustls::pki_types::ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));
    let tls = connector
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// A hyper HTTP/2 client on a new connection (driven by a task until it closes).
pub async fn h2_client(gw: &TestGateway) -> SendRequest<BoxBody<Bytes, std::io::Error>> {
    let tls = h2_tls(gw).await;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap_or_else(|e| panic!("HTTP/2 handshake: {e}"));
    tokio::spawn(conn);
    send
}
