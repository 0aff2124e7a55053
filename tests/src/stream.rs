//! A SIP client over a byte stream for the TCP/TLS tests: send bytes, read whole messages
//! (head, then Content-Length bytes of body) or raw bytes, and see the connection close, all
//! with deadlines.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Sets a stream's read timeout.
type SetTimeout<S> = Box<dyn Fn(&S, Duration) -> std::io::Result<()> + Send>;

/// A connection with what has been read but not yet taken.
pub struct StreamClient<S: Read + Write> {
    pub stream: S,
    buf: Vec<u8>,
    /// Sets the socket's read timeout (the deadline left) before each read.
    set_timeout: SetTimeout<S>,
}

impl StreamClient<TcpStream> {
    pub fn connect(addr: SocketAddr) -> Result<Self> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Self::over(s, |s: &TcpStream, d| s.set_read_timeout(Some(d))))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("connected socket has an address")
    }

    /// The next connection accepted on `l` within `within` (a backend's side of sip-lb's
    /// connection to it).
    pub fn accept(l: &std::net::TcpListener, within: Duration) -> Result<Self> {
        l.set_nonblocking(true)?;
        let deadline = Instant::now() + within;
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false)?;
                    return Ok(Self::over(s, |s: &TcpStream, d| s.set_read_timeout(Some(d))));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(e).context("no connection from sip-lb"),
            }
        }
    }
}

/// A TLS connection as a rustls client that trusts only the PEM certificate(s) in `ca`.
pub type TlsClient = StreamClient<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// Connects to `addr` over TLS (the server's certificate must name `addr`'s IP) and
/// completes the handshake within `within`.
pub fn tls_connect(addr: SocketAddr, ca: &std::path::Path, within: Duration) -> Result<TlsClient> {
    tls_connect_as(addr, ca, None, within)
}

/// [`tls_connect`] presenting a client certificate: (certificate, key) PEM files.
#[allow(deprecated)] // ring's provider: the one sip-lb uses (aws-lc-rs needs cmake)
pub fn tls_connect_as(
    addr: SocketAddr,
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
    within: Duration,
) -> Result<TlsClient> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("read {}", ca.display()))? {
        roots.add(c?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
            config.with_client_auth_cert(chain, rustls::pki_types::PrivateKeyDer::from_pem_file(key)?)?
        }
    };
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)?;
    let tcp = TcpStream::connect_timeout(&addr, within).with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(within))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).context("TLS handshake")?;
    }
    Ok(StreamClient::over(tls, |s: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>, d| {
        s.sock.set_read_timeout(Some(d))
    }))
}

impl<S: Read + Write> StreamClient<S> {
    /// Over any stream (TLS); `set_timeout` bounds each read of the underlying socket.
    pub fn over(stream: S, set_timeout: impl Fn(&S, Duration) -> std::io::Result<()> + Send + 'static) -> Self {
        StreamClient { stream, buf: Vec::new(), set_timeout: Box::new(set_timeout) }
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).context("write")?;
        self.stream.flush().context("flush")
    }

    /// Reads more into the buffer; Ok(false) at end of stream.
    fn fill(&mut self, deadline: Instant) -> Result<bool> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out; {} bytes buffered: {:?}", self.buf.len(), String::from_utf8_lossy(&self.buf));
        }
        (self.set_timeout)(&self.stream, left)?;
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                Ok(true)
            }
            // A reset counts as closed.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(e).context("read"),
        }
    }

    /// Exactly `n` bytes.
    pub fn read_bytes(&mut self, n: usize, within: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + within;
        while self.buf.len() < n {
            if !self.fill(deadline)? {
                bail!("connection closed after {:?}", String::from_utf8_lossy(&self.buf));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// One whole SIP message as text.
    pub fn read_message(&mut self, within: Duration) -> Result<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                let len = crate::sip::header(&head, "Content-Length")
                    .or_else(|| crate::sip::header(&head, "l"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let total = end + 4 + len;
                if self.buf.len() >= total {
                    let m: Vec<u8> = self.buf.drain(..total).collect();
                    return Ok(String::from_utf8_lossy(&m).into_owned());
                }
            }
            if !self.fill(deadline)? {
                bail!("connection closed; buffered {:?}", String::from_utf8_lossy(&self.buf));
            }
        }
    }

    /// Waits for the peer to close the connection (bytes before it are discarded).
    pub fn wait_closed(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while self.fill(deadline)? {}
        Ok(())
    }
}
