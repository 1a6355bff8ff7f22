//! The monitoring agent (`mailfleet agent`), which runs on each node: every interval it
//! measures the node (CPU, memory, the mail queue's disk, its network, the Postfix queue)
//! and counts its deliveries from the Postfix log since its last report, then sends the
//! report, signed with the node's own token, to `mailfleet serve`. Reports are spooled to
//! disk first and sent oldest first, so that a server that cannot be reached, or an agent
//! restarted, delays them rather than losing them.
//!
//! Also the engine's side of tokens: each node's is issued once, kept like DKIM keys
//! (sealed under `[dkim] key_env`, or a 0600 file beside the database).

pub mod report;

use report::Report;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// Issues a new token for `agent` (its node's provisioning request), kept in the store;
/// returns it (hex) for installing on the node. A new token replaces the old.
pub async fn issue_token(
    store: &crate::store::Store,
    key_env: &str,
    agent: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Zeroizing<String>, String> {
    use ring::rand::SecureRandom;
    let mut raw = Zeroizing::new([0u8; 32]);
    ring::rand::SystemRandom::new()
        .fill(&mut raw[..])
        .map_err(|_| "no randomness for a token".to_string())?;
    let token = Zeroizing::new(report::hex(&raw[..]));
    let stem: String = agent
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let kept = crate::dkim::keep(
        key_env,
        &store.key_dir("agents"),
        &format!("agent-{stem}"),
        token.as_bytes(),
        &format!("agent/{agent}"),
    )
    .map_err(|e| format!("the agent token: {e}"))?;
    store
        .save_agent_token(
            agent,
            kept.sealed,
            kept.file.map(|f| store.key_record(Path::new(&f))),
            now,
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(token)
}

/// An agent's token as kept, if it has one, and when it was issued (which token it is).
pub async fn token_of(
    store: &crate::store::Store,
    key_env: &str,
    agent: &str,
) -> Result<Option<(Zeroizing<Vec<u8>>, String)>, String> {
    let Some(kept) = store.agent_token(agent).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let file = kept
        .file
        .as_deref()
        .map(|f| store.key_path(f).display().to_string());
    let bytes = crate::dkim::recover(
        key_env,
        kept.sealed.as_deref(),
        file.as_deref(),
        &format!("agent/{agent}"),
    )
    .map_err(|e| format!("the agent token of {agent}: {e}"))?;
    Ok(Some((bytes, kept.issued_at)))
}

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `https://HOST:PORT` of `mailfleet serve`.
    pub server: String,
    /// Its node's provisioning request id.
    pub agent: String,
    pub token_file: PathBuf,
    /// The PEM root `serve`'s certificate chains to.
    pub ca_file: PathBuf,
    /// Where the agent keeps its sequence number, its place in the mail log and its unsent
    /// reports.
    pub state_dir: PathBuf,
    /// The Postfix log to count deliveries in (none: counts stay 0).
    pub maillog: Option<PathBuf>,
    /// The mail queue's folder (its filesystem's free space is reported).
    pub queue_dir: PathBuf,
    /// A Maildir where complaint feedback (ARF reports from mailbox providers' feedback
    /// loops) is delivered; each new report is a complaint (none: complaints stay 0).
    pub feedback_maildir: Option<PathBuf>,
    pub interval: Duration,
}

/// Deliveries counted in a stretch of Postfix log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub delivered: u64,
    pub bounced: u64,
    pub deferred: u64,
}

/// The queue id of a Postfix log line: "4F2A" in "postfix/smtp[1]: 4F2A: to=<…>".
fn queue_id(line: &str) -> Option<&str> {
    let rest = &line[line.find("]: ")? + 3..];
    let id = &rest[..rest.find(':')?];
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())).then_some(id)
}

/// Counts the delivery results in Postfix log lines (`status=sent`, `status=bounced`,
/// `status=deferred` of the smtp and local delivery agents). Mail from the null sender
/// (`from=<>`: the node's own bounce notices, DSNs) is not the node's sending and is not
/// counted: `null_senders` keeps the queue ids of such mail, seen here or in the stretch
/// before (a notice's `from=<>` and its delivery may fall either side of a read).
pub fn count_log(text: &str, null_senders: &mut std::collections::HashSet<String>) -> Counted {
    let mut c = Counted::default();
    let mut seen_now = std::collections::HashSet::new();
    for line in text.lines() {
        if line.contains(" from=<>,") {
            if let Some(id) = queue_id(line) {
                seen_now.insert(id.to_string());
            }
        }
    }
    for line in text.lines() {
        if !line.contains(" to=<") {
            continue;
        }
        if let Some(id) = queue_id(line) {
            if seen_now.contains(id) || null_senders.contains(id) {
                continue;
            }
        }
        if line.contains(" status=sent ") || line.ends_with(" status=sent") {
            c.delivered += 1;
        } else if line.contains(" status=bounced") {
            c.bounced += 1;
        } else if line.contains(" status=deferred") {
            c.deferred += 1;
        }
    }
    // This stretch's, for the next: older ones have long been delivered or bounced.
    *null_senders = seen_now;
    c
}

/// The most of a feedback message read to tell whether it is an ARF report: the report's
/// parts come first, and a message longer than this is no report of ours to parse.
const FEEDBACK_PEEK: u64 = 64 * 1024;

/// Whether a message is an abuse complaint in the Abuse Reporting Format (RFC 5965): a
/// `multipart/report` with `report-type=feedback-report` whose feedback part says
/// `Feedback-Type: abuse` (other types, such as `not-spam` or `virus`, are no complaint).
pub fn is_abuse_report(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("multipart/report")
        && lower.contains("report-type=feedback-report")
        && lower
            .lines()
            .any(|l| l.trim_start().starts_with("feedback-type:") && l.contains("abuse"))
}

/// Counts the complaints newly delivered to a feedback Maildir: each message in `new/`
/// is read (its start), counted if it is an abuse report, and moved to `cur/` marked seen,
/// so it is counted once. Moved before the report that counts it is written: an agent
/// killed in between under-counts those complaints rather than counting them twice (a
/// doubled complaint could pause a node that did nothing wrong).
fn count_feedback(maildir: &Path) -> u64 {
    use std::io::Read;
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else {
        return 0;
    };
    let cur = maildir.join("cur");
    let _ = std::fs::create_dir_all(&cur);
    let mut complaints = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let mut head = String::new();
        let read = std::fs::File::open(&path)
            .and_then(|f| f.take(FEEDBACK_PEEK).read_to_string(&mut head));
        let name = entry.file_name().to_string_lossy().into_owned();
        if std::fs::rename(&path, cur.join(format!("{name}:2,S"))).is_err() {
            // Not moved: left for the next round, and not counted now.
            continue;
        }
        if read.is_ok() && is_abuse_report(&head) {
            complaints += 1;
        }
    }
    complaints
}

/// The agent's state on disk.
struct State {
    dir: PathBuf,
}

impl State {
    fn open(dir: &Path) -> Result<State, String> {
        std::fs::create_dir_all(dir.join("spool"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(State {
            dir: dir.to_path_buf(),
        })
    }

    fn read_u64(&self, name: &str) -> u64 {
        std::fs::read_to_string(self.dir.join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn write_u64(&self, name: &str, v: u64) -> Result<(), String> {
        write_whole(&self.dir.join(name), v.to_string().as_bytes())
    }

    /// Unsent reports, oldest first.
    fn spooled(&self) -> Vec<(u64, PathBuf)> {
        let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(self.dir.join("spool"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                let seq = p.file_stem()?.to_str()?.parse().ok()?;
                (p.extension()? == "json").then_some((seq, p))
            })
            .collect();
        out.sort();
        out
    }
}

/// Writes a file whole: beside it first, then renamed over it.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes).map_err(|e| format!("{}: {e}", aside.display()))?;
    std::fs::rename(&aside, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The log since `offset` (from the start if the log was rotated or truncated), and the new
/// offset.
fn read_log_since(path: &Path, offset: u64) -> (String, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return (String::new(), offset);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = if len < offset { 0 } else { offset };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return (String::new(), offset);
    }
    let mut buf = Vec::new();
    // At most 64 MiB a round: what is left is read at the next.
    let _ = f.take(64 << 20).read_to_end(&mut buf);
    // Only whole lines: a line being written is counted next time.
    let whole = buf
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    (
        String::from_utf8_lossy(&buf[..whole]).into_owned(),
        from + whole as u64,
    )
}

/// Messages in the Postfix queue (`postqueue -j`: one JSON object a line).
fn queue_len() -> u64 {
    std::process::Command::new("postqueue")
        .arg("-j")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            o.stdout
                .split(|b| *b == b'\n')
                .filter(|l| l.starts_with(b"{"))
                .count() as u64
        })
        .unwrap_or(0)
}

/// What the machine measures.
struct Machine {
    sys: sysinfo::System,
    disks: sysinfo::Disks,
    nets: sysinfo::Networks,
    /// Queue ids of null-sender mail in the last stretch of log read (see `count_log`).
    null_senders: std::collections::HashSet<String>,
}

impl Machine {
    fn new() -> Machine {
        let mut sys = sysinfo::System::new();
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        Machine {
            sys,
            disks: sysinfo::Disks::new_with_refreshed_list(),
            nets: sysinfo::Networks::new_with_refreshed_list(),
            null_senders: Default::default(),
        }
    }

    /// (cpu %, memory used, memory total, bytes free on `queue_dir`'s filesystem, network
    /// bytes received and sent since the last call).
    fn measure(&mut self, queue_dir: &Path) -> (f64, u64, u64, u64, u64, u64) {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.disks.refresh(true);
        self.nets.refresh(true);
        let cpu = f64::from(self.sys.global_cpu_usage()).clamp(0.0, 100.0);
        let free = self
            .disks
            .list()
            .iter()
            .filter(|d| queue_dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
            .map(|d| d.available_space())
            .unwrap_or(0);
        let (rx, tx) = self
            .nets
            .list()
            .values()
            .fold((0, 0), |(r, t), n| (r + n.received(), t + n.transmitted()));
        (
            if cpu.is_finite() { cpu } else { 0.0 },
            self.sys.used_memory().min(self.sys.total_memory()),
            self.sys.total_memory(),
            free,
            rx,
            tx,
        )
    }
}

/// One round: the node measured, its deliveries counted, the report spooled.
fn make_report(s: &Settings, state: &State, m: &mut Machine) -> Result<u64, String> {
    let (cpu, used, total, free, rx, tx) = m.measure(&s.queue_dir);
    let mut counted = Counted::default();
    let mut offset = state.read_u64("maillog.offset");
    if let Some(log) = &s.maillog {
        let (text, next) = read_log_since(log, offset);
        counted = count_log(&text, &mut m.null_senders);
        offset = next;
    }
    let complaints = s
        .feedback_maildir
        .as_deref()
        .map(count_feedback)
        .unwrap_or(0);
    let seq = state.read_u64("seq") + 1;
    let r = Report {
        seq,
        measured_at: chrono::Utc::now().to_rfc3339(),
        cpu_pct: cpu,
        mem_used: used,
        mem_total: total,
        queue_free: free,
        queue_len: queue_len(),
        net_rx: rx,
        net_tx: tx,
        delivered: counted.delivered,
        bounced: counted.bounced,
        deferred: counted.deferred,
        complaints,
    };
    let body = serde_json::to_vec(&r).map_err(|e| e.to_string())?;
    // The report first, then the sequence and the log's place: a crash in between sends a
    // report twice at worst (the server takes a sequence number once), never loses one.
    write_whole(&state.dir.join("spool").join(format!("{seq}.json")), &body)?;
    state.write_u64("seq", seq)?;
    state.write_u64("maillog.offset", offset)?;
    Ok(seq)
}

/// Sends the spooled reports, oldest first, until one cannot be sent.
async fn flush(
    s: &Settings,
    state: &State,
    http: &reqwest::Client,
    token: &[u8],
) -> Result<usize, String> {
    let url = format!("{}/v1/report", s.server.trim_end_matches('/'));
    let mut sent = 0;
    for (seq, path) in state.spooled() {
        let body = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let time = chrono::Utc::now().timestamp();
        let answer = http
            .post(&url)
            .header(report::AGENT_HEADER, &s.agent)
            .header(report::TIME_HEADER, time.to_string())
            .header(report::SIGNATURE_HEADER, report::sign(token, time, &body))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("report {seq}: {e}"))?;
        let status = answer.status();
        let said = answer.text().await.unwrap_or_default();
        // Taken, or taken before (a replay of our own): either way it is the server's now.
        if status.is_success() || (status.as_u16() == 409 && said.contains("replay")) {
            let _ = std::fs::remove_file(&path);
            sent += 1;
            continue;
        }
        return Err(format!(
            "report {seq}: HTTP {status}: {}",
            crate::domain::validate::sanitize(&said.chars().take(200).collect::<String>())
        ));
    }
    Ok(sent)
}

/// Runs the agent until `stop` resolves.
pub async fn run(s: Settings, stop: impl std::future::Future<Output = ()>) -> Result<(), String> {
    let token = Zeroizing::new(
        std::fs::read_to_string(&s.token_file)
            .map_err(|e| format!("{}: {e}", s.token_file.display()))?
            .trim()
            .to_string(),
    );
    if token.is_empty() {
        return Err(format!("{}: empty", s.token_file.display()));
    }
    let ca = std::fs::read(&s.ca_file).map_err(|e| format!("{}: {e}", s.ca_file.display()))?;
    let root =
        reqwest::Certificate::from_pem(&ca).map_err(|e| format!("{}: {e}", s.ca_file.display()))?;
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let state = State::open(&s.state_dir)?;
    let mut machine = Machine::new();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tick.tick() => {}
        }
        match make_report(&s, &state, &mut machine) {
            Ok(seq) => tracing::debug!(seq, "report made"),
            Err(e) => tracing::warn!(error = %e, "cannot make a report"),
        }
        match flush(&s, &state, &http, token.as_bytes()).await {
            Ok(n) => tracing::debug!(sent = n, "reports sent"),
            Err(e) => tracing::warn!(error = %e, "reports kept for later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_counted_from_postfix_log_lines() {
        let log = "\
Dec  7 10:00:01 mx1 postfix/smtp[1]: 4F2A: to=<a@example.com>, relay=mx.example.com[192.0.2.1]:25, delay=0.2, status=sent (250 2.0.0 Ok)
Dec  7 10:00:02 mx1 postfix/smtp[1]: 4F2B: to=<b@example.com>, relay=none, delay=30, status=deferred (connect to example.com: Connection refused)
Dec  7 10:00:03 mx1 postfix/smtp[1]: 4F2C: to=<c@example.com>, relay=mx.example.com[192.0.2.1]:25, status=bounced (host said: 550 5.1.1 no such user)
Dec  7 10:00:04 mx1 postfix/qmgr[1]: 4F2A: removed
Dec  7 10:00:05 mx1 postfix/smtpd[1]: connect from unknown[192.0.2.9]
Dec  7 10:00:06 mx1 postfix/bounce[1]: 4F2C: sender non-delivery notification: 5D1E
Dec  7 10:00:06 mx1 postfix/qmgr[1]: 5D1E: from=<>, size=2401, nrcpt=1 (queue active)
Dec  7 10:00:07 mx1 postfix/smtp[1]: 5D1E: to=<sender@example.org>, relay=mx.example.org[192.0.2.3]:25, status=sent (250 ok)
Dec  7 10:00:08 mx1 postfix/qmgr[1]: 6E2F: from=<>, size=2401, nrcpt=1 (queue active)
";
        let mut null = Default::default();
        assert_eq!(
            count_log(log, &mut null),
            Counted {
                delivered: 1,
                bounced: 1,
                deferred: 1
            },
            "the bounce notice 5D1E is not the node's sending"
        );
        // A notice whose delivery is in the next stretch read is not counted either.
        let next = "Dec  7 10:00:09 mx1 postfix/smtp[1]: 6E2F: to=<x@example.org>, relay=r[192.0.2.3]:25, status=sent (250 ok)\n";
        assert_eq!(count_log(next, &mut null), Counted::default());
    }

    #[test]
    fn abuse_reports_in_the_feedback_maildir_are_counted_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let md = dir.path();
        std::fs::create_dir_all(md.join("new")).expect("new");
        let arf = |kind: &str| {
            format!(
                "From: fbl@mailbox.example\r\nContent-Type: multipart/report; report-type=feedback-report;\r\n\tboundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n--b1\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: {kind}\r\nUser-Agent: fbl/1.0\r\nVersion: 1\r\n--b1--\r\n"
            )
        };
        std::fs::write(md.join("new/1.fbl"), arf("abuse")).expect("write");
        std::fs::write(md.join("new/2.fbl"), arf("abuse")).expect("write");
        std::fs::write(md.join("new/3.fbl"), arf("not-spam")).expect("write");
        std::fs::write(md.join("new/4.txt"), "Subject: hello\r\n\r\nnot a report").expect("write");
        assert_eq!(count_feedback(md), 2);
        // Counted once: all moved to cur/, seen.
        assert_eq!(count_feedback(md), 0);
        assert_eq!(std::fs::read_dir(md.join("cur")).expect("cur").count(), 4);
        assert!(md.join("cur/1.fbl:2,S").exists());
        // No Maildir: nothing, and no error.
        assert_eq!(count_feedback(&dir.path().join("absent")), 0);
    }

    #[test]
    fn the_log_is_read_from_where_it_was_left_and_again_after_a_rotation() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("maillog");
        std::fs::write(&log, "one\ntwo\npart").expect("write");
        let (text, at) = read_log_since(&log, 0);
        assert_eq!((text.as_str(), at), ("one\ntwo\n", 8));
        let (text, at) = read_log_since(&log, at);
        assert_eq!((text.as_str(), at), ("", 8), "a line being written waits");
        std::fs::write(&log, "new\n").expect("rotate");
        let (text, at) = read_log_since(&log, 8);
        assert_eq!((text.as_str(), at), ("new\n", 4), "rotated: from the start");
    }
}
