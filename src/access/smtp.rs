//! Checking a node's SMTP service as a peer would: its banner names it, EHLO offers
//! STARTTLS, and the TLS handshake verifies its certificate for its hostname. Each answer is
//! kept as evidence.

use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What the node answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSeen {
    pub banner: String,
    /// The EHLO keywords offered before TLS (`STARTTLS`, `PIPELINING`, ...).
    pub offered: Vec<String>,
    /// The TLS version agreed, once the certificate verified for the hostname.
    pub tls: String,
    /// The certificate the server presented (DER).
    pub leaf: Option<Vec<u8>>,
}

impl SmtpSeen {
    pub fn describe(&self, hostname: &str) -> String {
        format!(
            "{}; EHLO offers STARTTLS; {} with a certificate valid for {hostname}",
            self.banner, self.tls
        )
    }
}

/// One reply: its code and its lines' text.
async fn reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<(u16, Vec<String>), String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading the reply: {e}"))?;
        if n == 0 {
            return Err(format!(
                "the server closed the connection{}",
                lines
                    .last()
                    .map(|l: &String| format!(" after {l:?}"))
                    .unwrap_or_default()
            ));
        }
        let line = crate::domain::validate::sanitize(line.trim_end()).into_owned();
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not an SMTP reply: {line:?}"))?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line.get(4..).unwrap_or("").to_string());
        if last {
            return Ok((code, lines));
        }
        if lines.len() > 100 {
            return Err("a reply of more than 100 lines".into());
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, line: &str) -> Result<(), String> {
    w.write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| format!("sending {line:?}: {e}"))
}

/// Checks the SMTP service at `addr` for `hostname`, trusting `roots`. Every failure says
/// what the server did.
pub async fn check(
    addr: SocketAddr,
    hostname: &str,
    roots: rustls::RootCertStore,
    timeout: Duration,
) -> Result<SmtpSeen, String> {
    tokio::time::timeout(timeout, check_inner(addr, hostname, roots))
        .await
        .map_err(|_| {
            format!(
                "{addr}: no complete answer within {} ms",
                timeout.as_millis()
            )
        })?
        .map_err(|e| format!("{addr}: {e}"))
}

async fn check_inner(
    addr: SocketAddr,
    hostname: &str,
    roots: rustls::RootCertStore,
) -> Result<SmtpSeen, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut io = BufReader::new(tcp);
    let (code, lines) = reply(&mut io).await?;
    let banner = format!("{code} {}", lines.join(" "));
    if code != 220 {
        return Err(format!("the banner is not a greeting: {banner:?}"));
    }
    let first = lines
        .first()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("");
    if !first.eq_ignore_ascii_case(hostname) {
        return Err(format!(
            "the banner names {first:?}, not {hostname}: {banner:?}"
        ));
    }
    send(io.get_mut(), "EHLO mailfleet.invalid").await?;
    let (code, lines) = reply(&mut io).await?;
    if code != 250 {
        return Err(format!("EHLO refused: {code} {}", lines.join(" ")));
    }
    let offered: Vec<String> = lines
        .iter()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(|k| k.to_ascii_uppercase())
        .collect();
    if !offered.iter().any(|k| k == "STARTTLS") {
        return Err(format!(
            "EHLO does not offer STARTTLS (it offers {})",
            offered.join(", ")
        ));
    }
    send(io.get_mut(), "STARTTLS").await?;
    let (code, lines) = reply(&mut io).await?;
    if code != 220 {
        return Err(format!("STARTTLS refused: {code} {}", lines.join(" ")));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(hostname.to_string())
        .map_err(|_| format!("{hostname:?} is not a server name"))?;
    let tcp = io.into_inner();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("STARTTLS handshake: {e}"))?;
    let version = tls
        .get_ref()
        .1
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_else(|| "TLS".into());
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    let mut io = BufReader::new(tls);
    send(io.get_mut(), "EHLO mailfleet.invalid").await?;
    let (code, lines) = reply(&mut io).await?;
    if code != 250 {
        return Err(format!("EHLO over TLS refused: {code} {}", lines.join(" ")));
    }
    let _ = send(io.get_mut(), "QUIT").await;
    Ok(SmtpSeen {
        banner,
        offered,
        tls: version.replace("TLSv1_", "TLS 1.").replace("TLSv", "TLS "),
        leaf,
    })
}

/// A root store holding the certificates of `pem` (a CA's root, or a chain's last
/// certificate).
pub fn roots_from_pem(pem: &str) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("not a usable root: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    Ok(roots)
}
