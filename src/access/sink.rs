//! mailfleet's internal mail sink: a small SMTP server that takes test messages for its own
//! domain, so that verification can prove a node sends mail through its own Postfix (and
//! OpenDKIM) to a real peer. Each message is kept with who sent it, from where, and its
//! bytes, and handed to whoever waits for its token (the recipient's local part).
//!
//! Input is a stranger's: lines are bounded, a message is bounded, recipients outside the
//! sink's domain are refused, and nothing it receives is ever interpreted.
//!
//! It also refuses on request, so that a node's real Postfix can be made to bounce: a
//! recipient whose local part starts with [`BOUNCE_PREFIX`] gets a permanent 550 at RCPT,
//! which the node logs as `status=bounced` and answers with a DSN to the sender, as it
//! would for a mailbox that does not exist.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The largest message the sink takes.
pub const MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// The longest command line it reads (RFC 5321 allows 512; data lines 1000).
const MAX_LINE: usize = 4096;
/// Recipients whose local part starts with this (any case) are refused with a 550.
pub const BOUNCE_PREFIX: &str = "bounce-";
/// The most refused recipients remembered (a stranger could send any number).
const MAX_REFUSED: usize = 10_000;

/// A message the sink took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub peer: IpAddr,
    pub helo: String,
    pub mail_from: String,
    pub rcpt: Vec<String>,
    /// The message as sent, dot-unstuffed, lines ending in CRLF.
    pub data: Vec<u8>,
}

impl Received {
    /// The value of the first header named `name` (unfolded), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.data);
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let mut found: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = found.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push(' ');
                    v.push_str(line.trim());
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    found = Some(v.trim().to_string());
                }
            }
        }
        found
    }
}

#[derive(Default)]
struct Inbox {
    by_token: Mutex<HashMap<String, Received>>,
    /// Recipients refused because they asked to be (see [`BOUNCE_PREFIX`]), in order.
    refused: Mutex<Vec<String>>,
    arrived: Notify,
}

/// The running sink; it stops when dropped.
pub struct Sink {
    addr: SocketAddr,
    domain: String,
    inbox: Arc<Inbox>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    /// Listens on `bind` for mail to `domain`.
    pub async fn start(bind: SocketAddr, domain: &str) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let inbox = Arc::new(Inbox::default());
        let (d, i) = (domain.to_ascii_lowercase(), inbox.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let (d, i) = (d.clone(), i.clone());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(120),
                        session(stream, peer.ip(), &d, &i),
                    )
                    .await;
                });
            }
        });
        Ok(Sink {
            addr,
            domain: domain.to_ascii_lowercase(),
            inbox,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address whose messages `token` names.
    pub fn address_for(&self, token: &str) -> String {
        format!("probe-{token}@{}", self.domain)
    }

    /// An address the sink refuses with a permanent 550 at RCPT: mail to it bounces.
    pub fn bounce_address_for(&self, token: &str) -> String {
        format!("{BOUNCE_PREFIX}{token}@{}", self.domain)
    }

    /// The recipients refused so far because they asked to be, in the order refused.
    pub fn refused(&self) -> Vec<String> {
        self.inbox
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The message sent to `address_for(token)`, once it has arrived; `None` after `wait`.
    pub async fn wait_for(&self, token: &str, wait: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.inbox.arrived.notified();
            if let Some(r) = self
                .inbox
                .by_token
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(token)
            {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

async fn session(
    stream: TcpStream,
    peer: IpAddr,
    domain: &str,
    inbox: &Inbox,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(format!("220 {domain} mailfleet sink ESMTP\r\n").as_bytes())
        .await?;
    let (mut helo, mut from, mut rcpt) = (String::new(), None::<String>, Vec::<String>::new());
    loop {
        let Some(line) = read_line(&mut r).await? else {
            return Ok(());
        };
        let upper = line.to_ascii_uppercase();
        let answer: String = if upper.starts_with("EHLO ") || upper.starts_with("HELO ") {
            helo = line[5..].trim().to_string();
            (from, rcpt) = (None, Vec::new());
            if upper.starts_with("EHLO") {
                format!("250-{domain}\r\n250-SIZE {MAX_MESSAGE}\r\n250 8BITMIME\r\n")
            } else {
                format!("250 {domain}\r\n")
            }
        } else if upper.starts_with("MAIL FROM:") {
            match path(&line[10..]) {
                Some(p) => {
                    from = Some(p);
                    rcpt.clear();
                    "250 2.1.0 Ok\r\n".into()
                }
                None => "501 5.1.7 Bad sender address syntax\r\n".into(),
            }
        } else if upper.starts_with("RCPT TO:") {
            match (from.is_some(), path(&line[8..])) {
                (false, _) => "503 5.5.1 MAIL first\r\n".into(),
                (true, Some(p)) if p.to_ascii_lowercase().ends_with(&format!("@{domain}")) => {
                    if p.to_ascii_lowercase().starts_with(BOUNCE_PREFIX) {
                        // 5.1.1, "bad destination mailbox": a hard bounce, never retried.
                        let said = format!(
                            "550 5.1.1 <{p}>: mailbox unavailable (refused on request)\r\n"
                        );
                        note_refused(inbox, p);
                        said
                    } else {
                        rcpt.push(p);
                        "250 2.1.5 Ok\r\n".into()
                    }
                }
                (true, Some(_)) => "550 5.7.1 Not a mailbox of this sink\r\n".into(),
                (true, None) => "501 5.1.3 Bad recipient address syntax\r\n".into(),
            }
        } else if upper == "DATA" {
            if rcpt.is_empty() {
                "503 5.5.1 RCPT first\r\n".into()
            } else {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                match read_data(&mut r).await? {
                    Some(data) => {
                        let got = Received {
                            peer,
                            helo: helo.clone(),
                            mail_from: from.clone().unwrap_or_default(),
                            rcpt: rcpt.clone(),
                            data,
                        };
                        keep(inbox, got);
                        (from, rcpt) = (None, Vec::new());
                        "250 2.0.0 Ok: kept\r\n".into()
                    }
                    None => "552 5.3.4 Message too big\r\n".into(),
                }
            }
        } else if upper == "RSET" {
            (from, rcpt) = (None, Vec::new());
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "NOOP" {
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "QUIT" {
            w.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 Command not recognized\r\n".into()
        };
        w.write_all(answer.as_bytes()).await?;
    }
}

/// The address inside `<...>` (with any parameters after it left out).
fn path(arg: &str) -> Option<String> {
    let arg = arg.trim();
    let inner = arg.strip_prefix('<')?.split_once('>')?.0;
    (!inner.contains(char::is_whitespace) && inner.len() <= 320).then(|| inner.to_string())
}

fn note_refused(inbox: &Inbox, rcpt: String) {
    let mut refused = inbox.refused.lock().unwrap_or_else(|p| p.into_inner());
    if refused.len() < MAX_REFUSED {
        refused.push(rcpt);
    }
}

fn keep(inbox: &Inbox, got: Received) {
    let tokens: Vec<String> = got
        .rcpt
        .iter()
        .filter_map(|r| r.split_once('@'))
        .filter_map(|(local, _)| local.strip_prefix("probe-"))
        .map(str::to_ascii_lowercase)
        .collect();
    let mut map = inbox.by_token.lock().unwrap_or_else(|p| p.into_inner());
    for t in tokens {
        map.insert(t, got.clone());
    }
    drop(map);
    inbox.arrived.notify_waiters();
}

/// One command line, without its CRLF; `None` at the end of the stream.
async fn read_line<R: tokio::io::AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The message after DATA, up to the lone dot; `None` when it is too big (what is left of it
/// is read and dropped).
async fn read_data<R: tokio::io::AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut too_big = false;
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the connection ended inside DATA",
            ));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok((!too_big).then_some(data));
        }
        let body = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        if data.len() + body.len() > MAX_MESSAGE {
            too_big = true;
        }
        if !too_big {
            data.extend_from_slice(body);
        }
    }
}

use tokio::io::AsyncReadExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_message_for_a_token_is_handed_to_its_waiter_and_strangers_are_refused() {
        let sink = Sink::start("127.0.0.1:0".parse().expect("addr"), "sink.test")
            .await
            .expect("sink");
        let mut s = TcpStream::connect(sink.addr()).await.expect("connect");
        let script = format!(
            "EHLO node.test\r\nMAIL FROM:<a@node.test> SIZE=10\r\nRCPT TO:<x@elsewhere.test>\r\n\
             RCPT TO:<{}>\r\nDATA\r\nSubject: hi\r\nX-Long: a\r\n  b\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
            sink.address_for("t1")
        );
        s.write_all(script.as_bytes()).await.expect("send");
        let mut said = String::new();
        s.read_to_string(&mut said).await.expect("read");
        assert!(said.contains("550 5.7.1"), "{said}");
        assert!(said.contains("250 2.0.0 Ok: kept"), "{said}");
        let got = sink
            .wait_for("t1", Duration::from_secs(5))
            .await
            .expect("arrived");
        assert_eq!(got.mail_from, "a@node.test");
        assert_eq!(got.helo, "node.test");
        assert_eq!(got.header("subject").as_deref(), Some("hi"));
        assert_eq!(got.header("x-long").as_deref(), Some("a b"));
        assert!(got.data.ends_with(b"\r\n.dot\r\n"), "dot-unstuffed");
        assert!(sink
            .wait_for("t2", Duration::from_millis(50))
            .await
            .is_none());
    }

    /// Mail to a `bounce-` recipient is refused for good at RCPT (a 5.1.1 that a node's
    /// Postfix logs as bounced), and only that recipient: the message's other recipients
    /// are kept; a message with none left is refused at DATA; a `bounce-` address of
    /// another domain is refused as a stranger's, not counted among those asked for.
    #[tokio::test]
    async fn bounce_recipients_are_refused_at_rcpt_and_the_rest_kept() {
        let sink = Sink::start("127.0.0.1:0".parse().expect("addr"), "Sink.Test")
            .await
            .expect("sink");
        let hard = sink.bounce_address_for("a1");
        assert_eq!(hard, "bounce-a1@sink.test");
        let mut s = TcpStream::connect(sink.addr()).await.expect("connect");
        let script = format!(
            "EHLO node.test\r\nMAIL FROM:<a@node.test>\r\nRCPT TO:<{hard}>\r\n\
             RCPT TO:<BOUNCE-B2@SINK.TEST>\r\nDATA\r\nRCPT TO:<bounce-c3@elsewhere.test>\r\n\
             RCPT TO:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\nSubject: half\r\n\r\nbody\r\n.\r\nQUIT\r\n",
            sink.address_for("t3"),
            sink.address_for("bounce-t4"),
        );
        s.write_all(script.as_bytes()).await.expect("send");
        let mut said = String::new();
        s.read_to_string(&mut said).await.expect("read");
        let replies: Vec<&str> = said.lines().filter(|l| !l.starts_with("250-")).collect();
        assert_eq!(
            replies,
            [
                "220 sink.test mailfleet sink ESMTP",
                "250 8BITMIME",
                "250 2.1.0 Ok",
                "550 5.1.1 <bounce-a1@sink.test>: mailbox unavailable (refused on request)",
                "550 5.1.1 <BOUNCE-B2@SINK.TEST>: mailbox unavailable (refused on request)",
                "503 5.5.1 RCPT first",
                "550 5.7.1 Not a mailbox of this sink",
                "250 2.1.5 Ok",
                "250 2.1.5 Ok",
                "354 End data with <CR><LF>.<CR><LF>",
                "250 2.0.0 Ok: kept",
                "221 2.0.0 Bye",
            ],
            "{said}"
        );
        assert_eq!(
            sink.refused(),
            ["bounce-a1@sink.test", "BOUNCE-B2@SINK.TEST"]
        );
        let got = sink
            .wait_for("t3", Duration::from_secs(5))
            .await
            .expect("the accepted recipient's message");
        assert_eq!(
            got.rcpt,
            [sink.address_for("t3"), sink.address_for("bounce-t4")],
            "only the refused recipients are left out"
        );
    }
}
