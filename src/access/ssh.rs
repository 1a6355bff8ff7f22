//! SSH to a node: mailfleet's own provisioning identity (an Ed25519 key it made, its private
//! half kept like DKIM keys), host keys pinned on first contact and checked after, and
//! commands run with their input, output and exit status.

use russh::client::{self, AuthResult, Handle};
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zeroize::Zeroizing;

/// The account mailfleet logs in as on a node.
pub const USER: &str = "root";

/// PKCS#8 (RFC 8410) of an Ed25519 key: this prefix, then the 32-byte seed.
const PKCS8_ED25519: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("ssh {addr}: {what}")]
    Connect { addr: SocketAddr, what: String },
    #[error(
        "ssh {addr}: the host key changed: pinned {pinned}, offered {offered} (a different server \
         answers at this address; if the node was rebuilt, forget its pin)"
    )]
    HostKeyChanged {
        addr: SocketAddr,
        pinned: String,
        offered: String,
    },
    #[error("ssh {addr}: the node refused mailfleet's key for {USER}")]
    Refused { addr: SocketAddr },
    #[error("ssh {addr}: {what}")]
    Session { addr: SocketAddr, what: String },
    #[error("ssh key: {0}")]
    Key(String),
}

/// mailfleet's SSH identity.
#[derive(Clone)]
pub struct Identity {
    key: Arc<PrivateKey>,
    /// The public half as an OpenSSH line (`ssh-ed25519 AAAA… mailfleet`).
    pub public: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new identity, and its private half as PKCS#8 DER to be kept.
    pub fn generate() -> Result<(Identity, Zeroizing<Vec<u8>>), SshError> {
        use ring::rand::{SecureRandom, SystemRandom};
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(&mut seed[..])
            .map_err(|_| SshError::Key("no randomness for a new key".into()))?;
        let mut der = Zeroizing::new(PKCS8_ED25519.to_vec());
        der.extend_from_slice(&seed[..]);
        Ok((Self::from_seed(&seed)?, der))
    }

    /// The identity kept as PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Identity, SshError> {
        let seed = der
            .strip_prefix(&PKCS8_ED25519[..])
            .filter(|s| s.len() == 32)
            .ok_or_else(|| SshError::Key("the kept key is not an Ed25519 PKCS#8 key".into()))?;
        let mut s = Zeroizing::new([0u8; 32]);
        s.copy_from_slice(seed);
        Self::from_seed(&s)
    }

    fn from_seed(seed: &[u8; 32]) -> Result<Identity, SshError> {
        let pair = Ed25519Keypair::from_seed(seed);
        let key = PrivateKey::new(KeypairData::Ed25519(pair), "mailfleet")
            .map_err(|e| SshError::Key(e.to_string()))?;
        let public = key
            .public_key()
            .to_openssh()
            .map_err(|e| SshError::Key(e.to_string()))?;
        Ok(Identity {
            key: Arc::new(key),
            public,
        })
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit status; `None` when it ended on a signal.
    pub status: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }

    /// The last lines of what it said, for a sub-task's evidence.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let from = lines.len().saturating_sub(3);
        lines[from..].join(" | ")
    }
}

struct Checker {
    pinned: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            return Ok(false);
        };
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        let ok = self.pinned.as_deref().is_none_or(|p| p == fp);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp);
        Ok(ok)
    }
}

/// A logged-in session on a node.
pub struct Session {
    handle: Handle<Checker>,
    addr: SocketAddr,
    /// The host key's fingerprint (`SHA256:…`) the node presented.
    pub host_key: String,
}

/// Connects to `addr` and logs in with `id`. With `pinned`, a node presenting another host
/// key is refused; without, the key it presents is returned in `Session::host_key` for the
/// caller to pin.
pub async fn connect(
    addr: SocketAddr,
    pinned: Option<&str>,
    id: &Identity,
    timeout: Duration,
) -> Result<Session, SshError> {
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(timeout.max(Duration::from_secs(30))),
        ..Default::default()
    });
    let seen = Arc::new(Mutex::new(None));
    let checker = Checker {
        pinned: pinned.map(String::from),
        seen: seen.clone(),
    };
    let connected = tokio::time::timeout(timeout, client::connect(config, addr, checker))
        .await
        .map_err(|_| SshError::Connect {
            addr,
            what: format!("no answer within {} ms", timeout.as_millis()),
        })?;
    let offered = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut handle = match connected {
        Ok(h) => h,
        Err(russh::Error::UnknownKey) => {
            return Err(SshError::HostKeyChanged {
                addr,
                pinned: pinned.unwrap_or("-").to_string(),
                offered: offered.unwrap_or_else(|| "a certificate".into()),
            })
        }
        Err(e) => {
            return Err(SshError::Connect {
                addr,
                what: e.to_string(),
            })
        }
    };
    let auth = handle
        .authenticate_publickey(USER, PrivateKeyWithHashAlg::new(id.key.clone(), None))
        .await
        .map_err(|e| SshError::Session {
            addr,
            what: e.to_string(),
        })?;
    if !matches!(auth, AuthResult::Success) {
        return Err(SshError::Refused { addr });
    }
    Ok(Session {
        handle,
        addr,
        host_key: offered.unwrap_or_default(),
    })
}

impl Session {
    /// Runs `command` with `input` on its standard input; waits for it to end.
    pub async fn exec(&self, command: &str, input: Option<&[u8]>) -> Result<Output, SshError> {
        let addr = self.addr;
        let fail = |e: russh::Error| SshError::Session {
            addr,
            what: e.to_string(),
        };
        let mut ch = self.handle.channel_open_session().await.map_err(fail)?;
        ch.exec(true, command).await.map_err(fail)?;
        if let Some(bytes) = input {
            ch.data(bytes).await.map_err(fail)?;
        }
        ch.eof().await.map_err(fail)?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut status = None;
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => err.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::Failure => {
                    return Err(SshError::Session {
                        addr,
                        what: format!("the node refused to run {command:?}"),
                    })
                }
                _ => {}
            }
        }
        Ok(Output {
            status,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }

    /// Writes a file on the node whole: into a file beside it with its mode, then renamed
    /// over it; parents made (readable by the daemons that need them: modes 0755). Its contents travel on the command's input, never in the
    /// command line.
    pub async fn put(&self, path: &str, mode: u32, contents: &[u8]) -> Result<Output, SshError> {
        let q = shell_quote(path);
        let aside = shell_quote(&format!("{path}.mailfleet-new"));
        let cmd = format!(
            "(umask 022 && mkdir -p \"$(dirname {q})\") && umask 077 && cat > {aside} && chmod {mode:o} {aside} && mv -f {aside} {q}"
        );
        self.exec(&cmd, Some(contents)).await
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Installs a bootstrap through a session, sub-task by sub-task in order (see
/// [`install_task`]). Stops at the first that fails, naming the sub-task and what the node
/// said. Returns each sub-task's evidence.
pub async fn install(
    s: &Session,
    b: &crate::bootstrap::Bundle,
) -> Result<Vec<(crate::bootstrap::Task, String)>, (crate::bootstrap::Task, String)> {
    let mut done = Vec::new();
    for task in crate::bootstrap::Task::ALL {
        match install_task(s, b, task).await {
            Ok(evidence) => done.push((task, evidence)),
            Err(e) => return Err((task, e.to_string())),
        }
    }
    Ok(done)
}

/// Why a bootstrap sub-task failed: the connection (worth trying again), or the node's own
/// answer (a file it would not take, a command that failed: trying again changes nothing).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Ssh(#[from] SshError),
    #[error("{0}")]
    Node(String),
}

/// One sub-task of a bootstrap: its files put whole, then its commands run. Running it
/// again changes nothing that is already as rendered (the commands are written to be run
/// again). Returns its evidence.
pub async fn install_task(
    s: &Session,
    b: &crate::bootstrap::Bundle,
    task: crate::bootstrap::Task,
) -> Result<String, InstallError> {
    use crate::bootstrap::Contents;
    let mut wrote = 0;
    for f in b.files.iter().filter(|f| f.task == task) {
        let path = f.path.display().to_string();
        let bytes: &[u8] = match &f.contents {
            Contents::Text(t) => t.as_bytes(),
            Contents::Secret { pem, .. } => pem.as_bytes(),
            Contents::Withheld { what } => {
                return Err(InstallError::Node(format!("{path}: {what} is not at hand")))
            }
        };
        let out = s.put(&path, f.mode, bytes).await?;
        if !out.ok() {
            return Err(InstallError::Node(format!(
                "writing {path}: {}",
                out.tail()
            )));
        }
        wrote += 1;
    }
    let mut said = Vec::new();
    for (_, cmd) in b.commands.iter().filter(|(t, _)| *t == task) {
        let out = s.exec(cmd, None).await?;
        if !out.ok() {
            return Err(InstallError::Node(format!(
                "exit {}: {}",
                out.status
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "by signal".into()),
                out.tail()
            )));
        }
        let tail = out.tail();
        if !tail.is_empty() {
            said.push(tail);
        }
    }
    Ok(match (wrote, said.is_empty()) {
        (0, true) => "done".to_string(),
        (0, false) => said.join("; "),
        (n, true) => format!("{n} file(s) written"),
        (n, false) => format!("{n} file(s) written; {}", said.join("; ")),
    })
}

/// A word for a POSIX shell: in single quotes, any single quote spelled out.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_kept_and_read_back_is_the_same_key() {
        let (id, der) = Identity::generate().expect("key");
        assert!(id.public.starts_with("ssh-ed25519 AAAA"), "{}", id.public);
        assert_eq!(der.len(), 48);
        let back = Identity::from_pkcs8(&der).expect("read back");
        assert_eq!(back.public, id.public);
        assert!(Identity::from_pkcs8(&der[..40]).is_err());
        assert!(!format!("{id:?}").contains("key:"), "Debug shows no key");
    }

    #[test]
    fn quoting_keeps_a_path_one_word() {
        assert_eq!(
            shell_quote("/etc/postfix/main.cf"),
            "'/etc/postfix/main.cf'"
        );
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}
