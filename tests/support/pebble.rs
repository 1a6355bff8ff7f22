//! A real Pebble ACME server (Let's Encrypt's test CA) on loopback, for the certificate
//! tests. It owns a temp dir (its config, the TLS certificate and key of its own HTTPS
//! listeners, its log), the `pebble` child and its ports, and validates challenges for
//! real: dns-01 by asking the DNS server it is given (PowerDNS, see `pdns.rs`), http-01 by
//! connecting to the port it is given. Validation sleeps and random nonce rejections are
//! off; "always valid" is never on.
//!
//! Its HTTPS listeners use a certificate for `127.0.0.1`/`localhost` signed by a CA made here
//! ([`Pebble::https_root_pem`]: trust that to talk to it). The CA that signs what Pebble
//! *issues* is Pebble's own, new on every start: [`Pebble::fetch_root_pem`].
//!
//! It never listens off 127.0.0.1 and touches nothing outside its temp dir.
//!
//! Included by `tests/*.rs` as `#[path = "support/pebble.rs"] mod pebble;`.
#![allow(dead_code)]

use std::io::{Error, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts it.
const PEBBLE_BINARY: &str = "/usr/bin/pebble";
const INSTALL_HINT: &str = "apt-get install -y pebble";
/// How long `start` waits for the directory to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Tries with fresh ports when one was taken between choosing it and Pebble binding it.
const START_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct PebbleOptions {
    /// The port Pebble connects to for http-01 validation (where the test's responder
    /// listens); an unused port when `None`.
    pub http_port: Option<u16>,
    /// Percentage of new orders that reuse an authorization the account already has
    /// (`PEBBLE_AUTHZREUSE`; Pebble's own default is 50). 0 here, so every order is
    /// challenged, unless a test asks otherwise.
    pub authz_reuse: u8,
}

pub struct Pebble {
    dir: tempfile::TempDir,
    child: Child,
    acme_port: u16,
    management_port: u16,
    https_root_pem: String,
}

impl Pebble {
    /// Starts `pebble` validating dns-01 against `dns_server`. `Ok(None)` (after a
    /// "skipping" line on stderr) when the binary is missing and `MAILFLEET_REQUIRE_SERVICES`
    /// is not "1"; with it set, a missing binary is an error that says how to install it.
    pub fn start(dns_server: SocketAddr) -> Result<Option<Pebble>> {
        Self::start_with(dns_server, &PebbleOptions::default())
    }

    pub fn start_with(dns_server: SocketAddr, options: &PebbleOptions) -> Result<Option<Pebble>> {
        let Some(binary) = find_binary() else {
            if std::env::var("MAILFLEET_REQUIRE_SERVICES").as_deref() == Ok("1") {
                return Err(Error::other(format!(
                    "pebble not installed and MAILFLEET_REQUIRE_SERVICES=1: run `{INSTALL_HINT}`"
                )));
            }
            eprintln!("skipping: pebble not installed (install with `{INSTALL_HINT}`)");
            return Ok(None);
        };
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&binary, dns_server, options) {
                Ok(p) => return Ok(Some(p)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::other("pebble: did not start")))
    }

    fn try_start(binary: &Path, dns_server: SocketAddr, options: &PebbleOptions) -> Result<Pebble> {
        let dir = tempfile::Builder::new()
            .prefix("mailfleet-pebble-")
            .tempdir()?;
        let (root_pem, cert_pem, key_pem) =
            https_certificate().map_err(|e| Error::other(format!("pebble: certificate: {e}")))?;
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert_pem)?;
        std::fs::write(&key_path, key_pem)?;
        let [acme_port, management_port, spare_http, tls_port] = free_tcp_ports()?;
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": cert_path,
                "privateKey": key_path,
                "httpPort": options.http_port.unwrap_or(spare_http),
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.path().join("pebble-config.json");
        std::fs::write(&config_path, config.to_string())?;
        let log = std::fs::File::create(dir.path().join("pebble.log"))?;
        let log_err = log.try_clone()?;
        let mut command = Command::new(binary);
        // Whatever the environment says, validation is real and fast.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PEBBLE_") {
                command.env_remove(&key);
            }
        }
        let child = command
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(dns_server.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env(
                "PEBBLE_AUTHZREUSE",
                options.authz_reuse.min(100).to_string(),
            )
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::other(format!("pebble: spawn {}: {e}", binary.display())))?;
        let mut pebble = Pebble {
            dir,
            child,
            acme_port,
            management_port,
            https_root_pem: root_pem,
        };
        pebble.wait_ready()?;
        Ok(pebble)
    }

    /// `https://127.0.0.1:PORT/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// The CA certificate (PEM) that signed Pebble's HTTPS certificate: trust it to talk to
    /// the directory and the management port.
    pub fn https_root_pem(&self) -> &str {
        &self.https_root_pem
    }

    /// `https://127.0.0.1:PORT` of the management interface.
    pub fn management_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.management_port)
    }

    /// The root (PEM) of the CA that signs the certificates Pebble issues, from the
    /// management port's `/roots/0`.
    pub async fn fetch_root_pem(&self) -> std::result::Result<String, String> {
        let body = self.management_get("/roots/0").await?;
        if !body.contains("BEGIN CERTIFICATE") {
            return Err(format!("pebble: GET /roots/0: not a certificate: {body}"));
        }
        Ok(body)
    }

    /// The body of a successful GET of `path` on the management port.
    async fn management_get(&self, path: &str) -> std::result::Result<String, String> {
        let root = reqwest::Certificate::from_pem(self.https_root_pem.as_bytes())
            .map_err(|e| format!("pebble: https root: {e}"))?;
        let client = reqwest::Client::builder()
            .add_root_certificate(root)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("pebble: client: {e}"))?;
        let url = format!("{}{path}", self.management_url());
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("pebble: GET {url}: {e:?}"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| format!("pebble: GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("pebble: GET {url}: HTTP {status}: {body}"));
        }
        Ok(body)
    }

    /// What the management port's `/cert-status-by-serial/SERIAL` says of a certificate
    /// Pebble issued (`serial` in hex): its JSON, with `Status` ("Valid" or "Revoked") and,
    /// once revoked, `Reason`.
    pub async fn cert_status(
        &self,
        serial: &str,
    ) -> std::result::Result<serde_json::Value, String> {
        let body = self
            .management_get(&format!("/cert-status-by-serial/{serial}"))
            .await?;
        serde_json::from_str(&body)
            .map_err(|e| format!("pebble: cert status {serial}: {e}: {body}"))
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Until both listeners accept connections and the log says the directory is served.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(Error::other(format!(
                    "pebble exited during start-up ({status}); log:\n{}",
                    self.log()
                )));
            }
            let up = |port: u16| {
                TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    Duration::from_millis(200),
                )
                .is_ok()
            };
            if self.log().contains("ACME directory available")
                && up(self.acme_port)
                && up(self.management_port)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::other(format!(
                    "pebble did not answer within {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `MAILFLEET_PEBBLE` names the binary to use (a path that is not a file counts as "not
/// installed"); otherwise Debian's path, then `PATH`.
fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MAILFLEET_PEBBLE") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let fixed = PathBuf::from(PEBBLE_BINARY);
    if fixed.is_file() {
        return Some(fixed);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pebble"))
            .find(|p| p.is_file())
    })
}

/// A CA, and a certificate it signed for `localhost` and `127.0.0.1`, with its key: (CA
/// PEM, certificate PEM, key PEM).
fn https_certificate() -> std::result::Result<(String, String, String), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "mailfleet test CA for Pebble's HTTPS");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = Issuer::from_params(&ca, &ca_key);
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// Distinct ports free on 127.0.0.1 (held together while chosen, so they differ).
fn free_tcp_ports<const N: usize>() -> Result<[u16; N]> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in ports.iter_mut() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        *port = listener.local_addr()?.port();
        held.push(listener);
    }
    Ok(ports)
}

/// A TCP port free on 127.0.0.1 now (for a test's own listener, e.g. the http-01 responder
/// Pebble is pointed at).
pub fn free_port() -> Result<u16> {
    let [port] = free_tcp_ports::<1>()?;
    Ok(port)
}

/// The chain verified up to `root_pem` for server authentication at `name`, as a TLS client
/// would.
pub fn verify_chain(
    chain_pem: &str,
    root_pem: &str,
    name: &str,
) -> std::result::Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("chain pem: {e:?}"))?;
    let root = rustls_pki_types::CertificateDer::from_pem_slice(root_pem.as_bytes())
        .map_err(|e| format!("root pem: {e:?}"))?;
    let anchor = webpki::anchor_from_trusted_cert(&root).map_err(|e| format!("anchor: {e}"))?;
    let (leaf, rest) = chain.split_first().ok_or("empty chain")?;
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("leaf: {e}"))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        rest,
        rustls_pki_types::UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| format!("chain: {e}"))?;
    let server = rustls_pki_types::ServerName::try_from(name).map_err(|e| format!("name: {e}"))?;
    ee.verify_is_valid_for_subject_name(&server)
        .map_err(|e| format!("name {name}: {e}"))
}
