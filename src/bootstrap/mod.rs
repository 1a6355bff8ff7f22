//! What a sending node runs, rendered: Postfix (main.cf, master.cf), OpenDKIM (its config,
//! key and signing tables, the domain's key), the node's certificate, an nftables firewall
//! that lets in only SSH and mail, Fail2Ban jails for sshd and Postfix, and the commands
//! that install packages and load it all. Pure: the same inputs give the same files, so a
//! bootstrap that is run again writes nothing new, and `mailfleet bootstrap render` shows
//! exactly what would be installed.
//!
//! Secrets (the DKIM private key, the certificate's key) are files of their own, marked as
//! secret: written to the node with mode 0600, never printed.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The ports a sending node opens: SSH, SMTP, SMTPS (implicit TLS submission), submission.
pub const OPEN_PORTS: [u16; 4] = [22, 25, 465, 587];
/// Where OpenDKIM listens for Postfix, on the node's own loopback, as Postfix names it.
pub const MILTER: &str = "inet:127.0.0.1:8891";
/// The same socket as OpenDKIM names it (port@host: another syntax for the same place).
pub const MILTER_SOCKET: &str = "inet:8891@127.0.0.1";

/// The sub-tasks of a bootstrap, in the order it runs them; each is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Task {
    Packages,
    Tls,
    Opendkim,
    Postfix,
    Firewall,
    Fail2ban,
    Reload,
    /// The monitoring agent, reporting to `mailfleet serve`.
    Agent,
}

impl Task {
    pub const ALL: [Task; 8] = [
        Task::Packages,
        Task::Tls,
        Task::Opendkim,
        Task::Postfix,
        Task::Firewall,
        Task::Fail2ban,
        Task::Reload,
        Task::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Packages => "packages",
            Task::Tls => "tls_install",
            Task::Opendkim => "opendkim",
            Task::Postfix => "postfix",
            Task::Firewall => "nftables",
            Task::Fail2ban => "fail2ban",
            Task::Reload => "reload",
            Task::Agent => "agent",
        }
    }
}

/// Where things go on the node. A Debian or Ubuntu server keeps the packages' own places;
/// a lab node keeps everything under its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub postfix_dir: PathBuf,
    /// Set for a node that is not the machine's only Postfix (a lab node): its own queue
    /// and data directories.
    pub queue_directory: Option<PathBuf>,
    pub data_directory: Option<PathBuf>,
    pub opendkim_conf: PathBuf,
    pub opendkim_dir: PathBuf,
    /// Where OpenDKIM keeps its pid file (a lab node's own).
    pub opendkim_run: PathBuf,
    pub tls_dir: PathBuf,
    pub nftables_conf: PathBuf,
    pub fail2ban_jail: PathBuf,
    pub mailname: PathBuf,
    /// The agent's token and the root it trusts.
    pub agent_dir: PathBuf,
    /// A lab host's own folder (its queue, data, pid files and mail log): set, the node
    /// shares the machine's programs and runs its daemons itself (no systemd, no apt).
    pub lab_dir: Option<PathBuf>,
}

impl Layout {
    /// The packages' own places on Debian and Ubuntu.
    pub fn debian() -> Layout {
        Layout {
            postfix_dir: "/etc/postfix".into(),
            queue_directory: None,
            data_directory: None,
            opendkim_conf: "/etc/opendkim.conf".into(),
            opendkim_dir: "/etc/opendkim".into(),
            opendkim_run: "/run/opendkim".into(),
            tls_dir: "/etc/mailfleet/tls".into(),
            nftables_conf: "/etc/nftables.conf".into(),
            fail2ban_jail: "/etc/fail2ban/jail.d/mailfleet.local".into(),
            mailname: "/etc/mailname".into(),
            agent_dir: "/etc/mailfleet/agent".into(),
            lab_dir: None,
        }
    }

    /// A lab host's: inside its namespace `/etc/postfix` is the host's own (see
    /// [`crate::lab`]), so everything else goes under it, and what Postfix and OpenDKIM
    /// write at run time goes in the host's folder `dir`.
    pub fn lab(dir: &Path) -> Layout {
        let own = Path::new("/etc/postfix/mailfleet");
        Layout {
            postfix_dir: "/etc/postfix".into(),
            queue_directory: Some(dir.join("spool")),
            data_directory: Some(dir.join("lib")),
            opendkim_conf: own.join("opendkim/opendkim.conf"),
            opendkim_dir: own.join("opendkim"),
            opendkim_run: dir.join("run"),
            tls_dir: own.join("tls"),
            nftables_conf: own.join("nftables.conf"),
            fail2ban_jail: own.join("fail2ban.local"),
            mailname: own.join("mailname"),
            agent_dir: own.join("agent"),
            lab_dir: Some(dir.to_path_buf()),
        }
    }

    /// Everything under `root`: a node that shares its machine (the lab).
    pub fn under(root: &Path) -> Layout {
        Layout {
            postfix_dir: root.join("etc/postfix"),
            queue_directory: Some(root.join("spool/postfix")),
            data_directory: Some(root.join("lib/postfix")),
            opendkim_conf: root.join("etc/opendkim.conf"),
            opendkim_dir: root.join("etc/opendkim"),
            opendkim_run: root.join("run/opendkim"),
            tls_dir: root.join("etc/mailfleet/tls"),
            nftables_conf: root.join("etc/nftables.conf"),
            fail2ban_jail: root.join("etc/fail2ban/jail.d/mailfleet.local"),
            mailname: root.join("etc/mailname"),
            agent_dir: root.join("etc/mailfleet/agent"),
            lab_dir: None,
        }
    }
}

/// What a node's configuration is made from.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's fully qualified name: its banner, EHLO name, certificate name and PTR.
    pub hostname: String,
    /// The domain it sends for and signs as.
    pub domain: String,
    pub ip: Ipv4Addr,
    pub selector: String,
    /// The domain's DKIM private key (PEM). `None` when only showing what would be
    /// installed: the file is then named, not filled.
    pub dkim_key: Option<String>,
    /// The node's certificate chain and key (PEM); `None` as for `dkim_key`.
    pub cert_chain: Option<String>,
    pub cert_key: Option<String>,
    /// The warm-up's cap for today; `None` once the warm-up is over (no cap).
    pub daily_cap: Option<u64>,
    /// Networks (CIDR) whose applications may relay through the node on submission.
    pub relay_networks: Vec<String>,
    /// mailfleet's mail sink (its domain and address), where verification's test message
    /// goes: the node routes that domain there.
    pub sink: Option<(String, std::net::SocketAddr)>,
    /// The monitoring agent to install, when `[serve] agent_url` is set.
    pub agent: Option<AgentInstall>,
}

/// Where a Debian node keeps the `mailfleet` program its agent runs.
pub const AGENT_PROGRAM: &str = "/usr/local/bin/mailfleet";

/// What the node's agent needs: where to report, as whom, with which token, trusting
/// which root, how often; and the program (`mailfleet`) on the node.
#[derive(Clone)]
pub struct AgentInstall {
    pub url: String,
    pub id: String,
    /// The node's token (hex); `None` in a preview.
    pub token: Option<String>,
    pub root_pem: String,
    pub interval_secs: u64,
    /// Where the `mailfleet` program is on the node.
    pub program: PathBuf,
}

impl std::fmt::Debug for AgentInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentInstall")
            .field("url", &self.url)
            .field("id", &self.id)
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

/// A file's contents: text, or a secret that is installed but never shown.
#[derive(Clone, PartialEq, Eq)]
pub enum Contents {
    Text(String),
    Secret {
        what: &'static str,
        pem: String,
    },
    /// A secret not at hand (a preview): named only.
    Withheld {
        what: &'static str,
    },
}

impl std::fmt::Debug for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Contents::Text(t) => write!(f, "Text({} bytes)", t.len()),
            Contents::Secret { what, pem } => write!(f, "Secret({what}, {} bytes)", pem.len()),
            Contents::Withheld { what } => write!(f, "Withheld({what})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub task: Task,
    pub path: PathBuf,
    pub mode: u32,
    /// The account that owns it on the node.
    pub owner: &'static str,
    pub contents: Contents,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub files: Vec<File>,
    /// Shell commands per sub-task, run after its files are in place.
    pub commands: Vec<(Task, String)>,
}

/// Submissions an application may make in an hour on the node, from the day's warm-up cap:
/// the cap spread over 24 hours (at least 1). `None`: no cap.
pub fn hourly_limit(daily_cap: Option<u64>) -> Option<u64> {
    daily_cap.map(|c| c.div_ceil(24).max(1))
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

impl NodeConfig {
    fn key_path(&self, l: &Layout) -> PathBuf {
        l.opendkim_dir
            .join("keys")
            .join(&self.domain)
            .join(format!("{}.private", self.selector))
    }
    fn cert_path(&self, l: &Layout) -> PathBuf {
        l.tls_dir.join(format!("{}.crt", self.hostname))
    }
    fn cert_key_path(&self, l: &Layout) -> PathBuf {
        l.tls_dir.join(format!("{}.key", self.hostname))
    }
}

/// Renders everything a sending node runs.
pub fn render(n: &NodeConfig, l: &Layout) -> Bundle {
    let mut files = Vec::new();
    let secret = |what: &'static str, pem: &Option<String>| match pem {
        Some(pem) => Contents::Secret {
            what,
            pem: pem.clone(),
        },
        None => Contents::Withheld { what },
    };
    files.push(File {
        task: Task::Tls,
        path: n.cert_path(l),
        mode: 0o644,
        owner: "root",
        contents: match &n.cert_chain {
            Some(c) => Contents::Text(c.clone()),
            None => Contents::Withheld {
                what: "the node's certificate chain",
            },
        },
    });
    files.push(File {
        task: Task::Tls,
        path: n.cert_key_path(l),
        mode: 0o600,
        owner: "root",
        contents: secret("the node's TLS private key", &n.cert_key),
    });
    files.push(File {
        task: Task::Opendkim,
        path: n.key_path(l),
        mode: 0o600,
        owner: "opendkim",
        contents: secret("the domain's DKIM private key", &n.dkim_key),
    });
    files.push(File {
        task: Task::Opendkim,
        path: l.opendkim_conf.clone(),
        mode: 0o644,
        owner: "root",
        contents: Contents::Text(opendkim_conf(n, l)),
    });
    let sel = format!("{}._domainkey.{}", n.selector, n.domain);
    files.push(File {
        task: Task::Opendkim,
        path: l.opendkim_dir.join("KeyTable"),
        mode: 0o644,
        owner: "root",
        contents: Contents::Text(format!(
            "{sel} {}:{}:{}\n",
            n.domain,
            n.selector,
            p(&n.key_path(l))
        )),
    });
    files.push(File {
        task: Task::Opendkim,
        path: l.opendkim_dir.join("SigningTable"),
        mode: 0o644,
        owner: "root",
        contents: Contents::Text(format!("*@{} {sel}\n", n.domain)),
    });
    files.push(File {
        task: Task::Opendkim,
        path: l.opendkim_dir.join("TrustedHosts"),
        mode: 0o644,
        owner: "root",
        contents: Contents::Text(format!(
            "127.0.0.1\n::1\n{}\n{}\n",
            n.ip,
            n.relay_networks.join("\n")
        )),
    });
    files.push(File {
        task: Task::Postfix,
        path: l.mailname.clone(),
        mode: 0o644,
        owner: "root",
        contents: Contents::Text(format!("{}\n", n.hostname)),
    });
    files.push(File {
        task: Task::Postfix,
        path: l.postfix_dir.join("main.cf"),
        mode: 0o644,
        owner: "root",
        contents: Contents::Text(main_cf(n, l)),
    });
    files.push(File {
        task: Task::Postfix,
        path: l.postfix_dir.join("master.cf"),
        mode: 0o644,
        owner: "root",
        contents: Contents::Text(master_cf(n)),
    });
    files.push(File {
        task: Task::Firewall,
        path: l.nftables_conf.clone(),
        mode: 0o644,
        owner: "root",
        contents: Contents::Text(nftables()),
    });
    files.push(File {
        task: Task::Fail2ban,
        path: l.fail2ban_jail.clone(),
        mode: 0o644,
        owner: "root",
        contents: Contents::Text(FAIL2BAN.to_string()),
    });
    let mut commands = match &l.lab_dir {
        None => debian_commands(n, l),
        Some(dir) => lab_commands(n, l, dir),
    };
    match &n.agent {
        Some(a) => {
            files.push(File {
                task: Task::Agent,
                path: l.agent_dir.join("token"),
                mode: 0o600,
                owner: "root",
                contents: match &a.token {
                    Some(t) => Contents::Secret {
                        what: "the node's agent token",
                        pem: t.clone(),
                    },
                    None => Contents::Withheld {
                        what: "the node's agent token",
                    },
                },
            });
            files.push(File {
                task: Task::Agent,
                path: l.agent_dir.join("root.pem"),
                mode: 0o644,
                owner: "root",
                contents: Contents::Text(a.root_pem.clone()),
            });
            let queue = l
                .queue_directory
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/spool/postfix"));
            let args = |state: &Path, log: &Path| {
                format!(
                    "agent --server {} --id {} --token-file {} --ca-file {} --state-dir {} \
                     --maillog {} --queue-dir {} --interval {}s",
                    a.url,
                    a.id,
                    p(&l.agent_dir.join("token")),
                    p(&l.agent_dir.join("root.pem")),
                    p(state),
                    p(log),
                    p(&queue),
                    a.interval_secs
                )
            };
            match &l.lab_dir {
                Some(dir) => {
                    // Started by hand, its own session, in the host's namespace; stopped
                    // with the host.
                    let pid = p(&dir.join("agent.pid"));
                    commands.push((
                        Task::Agent,
                        format!(
                            "old=$(cat {pid} 2>/dev/null); if [ -n \"$old\" ]; then kill $old 2>/dev/null; fi; \
                             XDG_STATE_HOME={dir} setsid {prog} {args} </dev/null >{out} 2>&1 & echo $! > {pid}; \
                             sleep 0.5; kill -0 $(cat {pid}) 2>/dev/null || {{ echo 'the agent stopped:' >&2; \
                             tail -n 3 {out} >&2; exit 1; }}",
                            dir = p(dir),
                            prog = p(&a.program),
                            args = args(&dir.join("agent-state"), &dir.join("maillog")),
                            out = p(&dir.join("agent.out")),
                        ),
                    ));
                }
                None => {
                    files.push(File {
                        task: Task::Agent,
                        path: "/etc/systemd/system/mailfleet-agent.service".into(),
                        mode: 0o644,
                        owner: "root",
                        contents: Contents::Text(format!(
                            "# Written by mailfleet: changes are overwritten.\n[Unit]\n\
                             Description=mailfleet monitoring agent\nAfter=network-online.target postfix.service\n\n\
                             [Service]\nExecStart={} {}\nRestart=always\nRestartSec=5\n\n\
                             [Install]\nWantedBy=multi-user.target\n",
                            p(&a.program),
                            args(
                                Path::new("/var/lib/mailfleet-agent"),
                                Path::new("/var/log/mail.log")
                            )
                        )),
                    });
                    commands.push((
                        Task::Agent,
                        format!(
                            "test -x {prog} && systemctl daemon-reload && systemctl enable mailfleet-agent \
                             && systemctl restart mailfleet-agent",
                            prog = p(&a.program)
                        ),
                    ));
                }
            }
        }
        None => commands.push((
            Task::Agent,
            "echo 'skipped: [serve] agent_url is not set'".to_string(),
        )),
    }
    Bundle { files, commands }
}

/// A Debian or Ubuntu server: packages from apt, daemons under systemd.
fn debian_commands(n: &NodeConfig, l: &Layout) -> Vec<(Task, String)> {
    let pf = p(&l.postfix_dir);
    vec![
        (
            Task::Packages,
            "dpkg-query -W -f='${Status}\\n' postfix opendkim opendkim-tools nftables fail2ban \
             2>/dev/null | grep -c '^install ok installed$' | grep -qx 5 || \
             DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix opendkim \
             opendkim-tools nftables fail2ban"
                .to_string(),
        ),
        (
            Task::Opendkim,
            format!(
                "chown opendkim: {} && opendkim -n -x {}",
                p(&n.key_path(l)),
                p(&l.opendkim_conf)
            ),
        ),
        (
            Task::Postfix,
            format!("postconf -c {pf} -M >/dev/null && postfix -c {pf} check"),
        ),
        (Task::Firewall, format!("nft -c -f {}", p(&l.nftables_conf))),
        (Task::Fail2ban, "fail2ban-client -t".to_string()),
        (
            Task::Reload,
            format!(
                "systemctl restart opendkim && (postfix -c {pf} reload || postfix -c {pf} start) \
                 && nft -f {} && systemctl reload-or-restart fail2ban",
                p(&l.nftables_conf)
            ),
        ),
    ]
}

/// A lab host: the machine's programs, its own daemons started here; Fail2Ban (which reads
/// the machine's journal) is not run per host.
fn lab_commands(n: &NodeConfig, l: &Layout, dir: &Path) -> Vec<(Task, String)> {
    let run = p(&l.opendkim_run);
    let data = l.data_directory.as_deref().map(p).unwrap_or_default();
    let pid = format!("{run}/opendkim.pid");
    vec![
        (
            Task::Packages,
            "command -v postfix && command -v opendkim && command -v nft".to_string(),
        ),
        (
            Task::Opendkim,
            format!(
                "mkdir -p {run} && chown opendkim: {run} {} && opendkim -n -x {}",
                p(&n.key_path(l)),
                p(&l.opendkim_conf)
            ),
        ),
        (
            Task::Postfix,
            format!(
                "mkdir -p {data} {queue} && chown postfix: {data} && chmod 755 {} \
                 && postconf -M >/dev/null && postfix check",
                p(dir),
                queue = l.queue_directory.as_deref().map(p).unwrap_or_default()
            ),
        ),
        (Task::Firewall, format!("nft -c -f {}", p(&l.nftables_conf))),
        (
            Task::Fail2ban,
            "echo 'jail written; Fail2Ban is not run per lab host'".to_string(),
        ),
        (
            Task::Reload,
            format!(
                "old=$(cat {pid} 2>/dev/null); if [ -n \"$old\" ] && kill $old 2>/dev/null; then \
                 for i in $(seq 50); do kill -0 $old 2>/dev/null || break; sleep 0.1; done; fi; \
                 rm -f {pid}; opendkim -x {conf} \
                 && for i in $(seq 50); do [ -s {pid} ] && break; sleep 0.1; done \
                 && kill -0 $(cat {pid}) \
                 && (postfix status 2>/dev/null && postfix reload || postfix start) \
                 && nft -f {nft}",
                conf = p(&l.opendkim_conf),
                nft = p(&l.nftables_conf)
            ),
        ),
    ]
}

fn main_cf(n: &NodeConfig, l: &Layout) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by mailfleet for the sending node {}: changes are overwritten.",
        n.hostname
    );
    let mut networks = vec!["127.0.0.0/8".to_string()];
    networks.extend(n.relay_networks.iter().cloned());
    let lines: Vec<(&str, String)> = vec![
        ("compatibility_level", "3.6".into()),
        ("myhostname", n.hostname.clone()),
        ("mydomain", n.domain.clone()),
        ("myorigin", "$mydomain".into()),
        // A sending node delivers nothing locally but to its own postmaster.
        ("mydestination", "$myhostname, localhost".into()),
        ("inet_interfaces", "all".into()),
        ("inet_protocols", "ipv4".into()),
        // Mail leaves from the node's own address: the one its PTR and SPF name.
        ("smtp_bind_address", n.ip.to_string()),
        ("mynetworks", networks.join(", ")),
        ("relay_domains", String::new()),
        ("smtpd_banner", "$myhostname ESMTP".into()),
        ("biff", "no".into()),
        ("append_dot_mydomain", "no".into()),
        ("disable_vrfy_command", "yes".into()),
        ("smtpd_helo_required", "yes".into()),
        ("message_size_limit", "26214400".into()),
        ("smtpd_tls_cert_file", p(&n.cert_path(l))),
        ("smtpd_tls_key_file", p(&n.cert_key_path(l))),
        ("smtpd_tls_security_level", "may".into()),
        ("smtpd_tls_protocols", ">=TLSv1.2".into()),
        ("smtpd_tls_mandatory_protocols", ">=TLSv1.2".into()),
        ("smtpd_tls_loglevel", "1".into()),
        ("smtp_tls_security_level", "may".into()),
        ("smtp_tls_protocols", ">=TLSv1.2".into()),
        ("smtp_tls_loglevel", "1".into()),
        (
            "smtpd_relay_restrictions",
            "permit_mynetworks, reject_unauth_destination".into(),
        ),
        ("milter_protocol", "6".into()),
        ("milter_default_action", "tempfail".into()),
        ("smtpd_milters", MILTER.into()),
        ("non_smtpd_milters", MILTER.into()),
        // The warm-up's cap, enforced: an application's submissions per hour.
        ("anvil_rate_time_unit", "3600s".into()),
    ];
    for (k, v) in lines {
        if v.is_empty() {
            let _ = writeln!(s, "{k} =");
        } else {
            let _ = writeln!(s, "{k} = {v}");
        }
    }
    if let Some(q) = &l.queue_directory {
        let _ = writeln!(s, "queue_directory = {}", p(q));
    }
    if let Some(d) = &l.data_directory {
        let _ = writeln!(s, "data_directory = {}", p(d));
    }
    if let Some((domain, addr)) = &n.sink {
        let _ = writeln!(
            s,
            "transport_maps = inline:{{ {{ {domain} = smtp:[{}]:{} }} }}",
            addr.ip(),
            addr.port()
        );
    }
    // A lab host has no syslog of its own: Postfix writes its log in the host's folder.
    if let Some(dir) = &l.lab_dir {
        let _ = writeln!(s, "maillog_file = {}", p(&dir.join("maillog")));
        let _ = writeln!(s, "maillog_file_prefixes = /var, /dev/stdout, {}", p(dir));
    }
    s
}

fn master_cf(n: &NodeConfig) -> String {
    let limit = match hourly_limit(n.daily_cap) {
        Some(h) => format!(
            "\n  -o smtpd_client_message_rate_limit={h}\n  -o smtpd_client_event_limit_exceptions="
        ),
        None => String::new(),
    };
    // The submission services: TLS required, relaying for the listed networks only (no SASL
    // backend is installed), the warm-up's hourly limit on each client.
    let submit = |name: &str, wrapper: bool| {
        format!(
            "{name:<10} inet  n       -       n       -       -       smtpd\n  -o syslog_name=postfix/{name}\n  \
             -o smtpd_tls_security_level=encrypt{}\n  -o smtpd_relay_restrictions=permit_mynetworks,reject{limit}\n",
            if wrapper {
                "\n  -o smtpd_tls_wrappermode=yes"
            } else {
                ""
            },
        )
    };
    // Postfix's own defaults for each service; nothing chrooted (a lab node's queue is not
    // a chroot jail, and upstream Postfix chroots nothing by default).
    let mut s = String::from(
        "# Written by mailfleet: changes are overwritten.\n\
         # service  type  private unpriv  chroot  wakeup  maxproc command + args\n\
         smtp       inet  n       -       n       -       -       smtpd\n",
    );
    s.push_str(&submit("submission", false));
    s.push_str(&submit("smtps", true));
    for (name, kind, private, unpriv, wakeup, maxproc, cmd) in [
        ("pickup", "unix", "n", "-", "60", "1", "pickup"),
        ("cleanup", "unix", "n", "-", "-", "0", "cleanup"),
        ("qmgr", "unix", "n", "-", "300", "1", "qmgr"),
        ("tlsmgr", "unix", "-", "-", "1000?", "1", "tlsmgr"),
        ("rewrite", "unix", "-", "-", "-", "-", "trivial-rewrite"),
        ("bounce", "unix", "-", "-", "-", "0", "bounce"),
        ("defer", "unix", "-", "-", "-", "0", "bounce"),
        ("trace", "unix", "-", "-", "-", "0", "bounce"),
        ("verify", "unix", "-", "-", "-", "1", "verify"),
        ("flush", "unix", "n", "-", "1000?", "0", "flush"),
        ("proxymap", "unix", "-", "-", "-", "-", "proxymap"),
        ("proxywrite", "unix", "-", "-", "-", "1", "proxymap"),
        ("smtp", "unix", "-", "-", "-", "-", "smtp"),
        ("relay", "unix", "-", "-", "-", "-", "smtp"),
        ("showq", "unix", "n", "-", "-", "-", "showq"),
        ("error", "unix", "-", "-", "-", "-", "error"),
        ("retry", "unix", "-", "-", "-", "-", "error"),
        ("discard", "unix", "-", "-", "-", "-", "discard"),
        ("local", "unix", "-", "n", "-", "-", "local"),
        ("lmtp", "unix", "-", "-", "-", "-", "lmtp"),
        ("anvil", "unix", "-", "-", "-", "1", "anvil"),
        ("scache", "unix", "-", "-", "-", "1", "scache"),
        ("postlog", "unix-dgram", "n", "-", "-", "1", "postlogd"),
    ] {
        let _ = writeln!(
            s,
            "{name:<10} {kind:<5} {private:<7} {unpriv:<7} n       {wakeup:<7} {maxproc:<7} {cmd}"
        );
    }
    s
}

fn opendkim_conf(n: &NodeConfig, l: &Layout) -> String {
    format!(
        "# Written by mailfleet for {host}: changes are overwritten.\n\
         Syslog yes\n\
         UMask 007\n\
         Mode sv\n\
         Canonicalization relaxed/simple\n\
         OversignHeaders From\n\
         Socket {MILTER_SOCKET}\n\
         PidFile {run}/opendkim.pid\n\
         UserID opendkim\n\
         KeyTable refile:{dir}/KeyTable\n\
         SigningTable refile:{dir}/SigningTable\n\
         ExternalIgnoreList refile:{dir}/TrustedHosts\n\
         InternalHosts refile:{dir}/TrustedHosts\n",
        host = n.hostname,
        run = p(&l.opendkim_run),
        dir = p(&l.opendkim_dir),
    )
}

fn nftables() -> String {
    let ports = OPEN_PORTS
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let lines = [
        "#!/usr/sbin/nft -f".to_string(),
        "# Written by mailfleet: a sending node lets in SSH and mail only.".to_string(),
        // Declared, then deleted and made again: loading the file twice replaces the table.
        "table inet mailfleet".to_string(),
        "delete table inet mailfleet".to_string(),
        "table inet mailfleet {".to_string(),
        "    chain input {".to_string(),
        "        type filter hook input priority filter; policy drop;".to_string(),
        "        iif \"lo\" accept".to_string(),
        "        ct state established,related accept".to_string(),
        "        ct state invalid drop".to_string(),
        "        ip protocol icmp accept".to_string(),
        "        meta l4proto ipv6-icmp accept".to_string(),
        format!("        tcp dport {{ {ports} }} accept"),
        "    }".to_string(),
        "}".to_string(),
    ];
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

const FAIL2BAN: &str = "# Written by mailfleet: changes are overwritten.\n\
[DEFAULT]\n\
banaction = nftables-multiport\n\
bantime = 1h\n\
findtime = 10m\n\
maxretry = 5\n\
\n\
[sshd]\n\
enabled = true\n\
backend = systemd\n\
\n\
[postfix]\n\
enabled = true\n\
mode = aggressive\n\
backend = systemd\n";

/// Writes the bundle's files on this machine (a lab node's folder): parents created, each
/// file replaced whole (written aside, then renamed) with its mode, and only where its
/// contents differ, so a second run changes nothing. A withheld secret is an error: there is
/// nothing to install. Returns the files it wrote.
pub fn write_files(b: &Bundle) -> std::io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let mut wrote = Vec::new();
    for f in &b.files {
        let bytes: &[u8] = match &f.contents {
            Contents::Text(t) => t.as_bytes(),
            Contents::Secret { pem, .. } => pem.as_bytes(),
            Contents::Withheld { what } => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{}: {what} is not at hand", p(&f.path)),
                ))
            }
        };
        let same = std::fs::read(&f.path).is_ok_and(|old| old == bytes)
            && std::fs::metadata(&f.path).is_ok_and(|m| m.permissions().mode() & 0o777 == f.mode);
        if same {
            continue;
        }
        if let Some(dir) = f.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let aside = f.path.with_file_name(format!(".{name}.mailfleet-new"));
        {
            use std::io::Write;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode_for(f.mode)
                .open(&aside)?;
            out.write_all(bytes)?;
            out.sync_all()?;
        }
        std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(f.mode))?;
        std::fs::rename(&aside, &f.path)?;
        wrote.push(f.path.clone());
    }
    Ok(wrote)
}

/// Opens a new file with its final mode from the start (a secret is never readable by
/// others, even for a moment).
trait ModeFor {
    fn mode_for(&mut self, mode: u32) -> &mut Self;
}

impl ModeFor for std::fs::OpenOptions {
    fn mode_for(&mut self, mode: u32) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(mode)
    }
}

/// The bundle as a person reads it: each file under a header naming its path, mode and
/// owner, the commands after; secrets named, never shown.
pub fn describe(b: &Bundle) -> String {
    let mut s = String::new();
    for t in Task::ALL {
        let files: Vec<&File> = b.files.iter().filter(|f| f.task == t).collect();
        let cmds: Vec<&String> = b
            .commands
            .iter()
            .filter(|(ct, _)| *ct == t)
            .map(|(_, c)| c)
            .collect();
        if files.is_empty() && cmds.is_empty() {
            continue;
        }
        let _ = writeln!(s, "## {}", t.as_str());
        for f in files {
            let _ = writeln!(
                s,
                "### {} (mode {:o}, owner {})",
                p(&f.path),
                f.mode,
                f.owner
            );
            match &f.contents {
                Contents::Text(t) => s.push_str(t),
                Contents::Secret { what, pem } => {
                    let _ = writeln!(
                        s,
                        "(secret: {what}, {} bytes; installed, never shown)",
                        pem.len()
                    );
                }
                Contents::Withheld { what } => {
                    let _ = writeln!(s, "({what}: installed from the store, not shown here)");
                }
            }
        }
        for c in cmds {
            let _ = writeln!(s, "$ {c}");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sub_tasks_are_recorded_in_the_configure_step_in_order_before_mail_stack() {
        use crate::domain::{Step, BOOTSTRAP_TASKS};
        assert_eq!(Task::ALL.map(Task::as_str), BOOTSTRAP_TASKS);
        let c = Step::Configure;
        let at = |t: &str| c.task_position(t);
        assert!(at("tls_certificate") < at("packages"));
        for w in BOOTSTRAP_TASKS.windows(2) {
            assert!(at(w[0]) < at(w[1]), "{w:?}");
        }
        assert!(at("reload") < at("mail_stack"));
        // The other steps keep their own order.
        assert_eq!(Step::Verify.task_position("test_message"), 6);
        assert_eq!(Step::Configure.task_position("firewall"), 1);
    }

    fn node() -> NodeConfig {
        NodeConfig {
            hostname: "mx1.example.test".into(),
            domain: "example.test".into(),
            ip: "192.0.2.10".parse().expect("ip"),
            selector: "mf1".into(),
            dkim_key: Some(
                "-----BEGIN PRIVATE KEY-----\nSECRETDKIM\n-----END PRIVATE KEY-----\n".into(),
            ),
            cert_chain: Some(
                "-----BEGIN CERTIFICATE-----\nCHAIN\n-----END CERTIFICATE-----\n".into(),
            ),
            cert_key: Some(
                "-----BEGIN PRIVATE KEY-----\nSECRETTLS\n-----END PRIVATE KEY-----\n".into(),
            ),
            daily_cap: Some(500),
            relay_networks: vec!["10.20.0.0/16".into()],
            sink: None,
            agent: None,
        }
    }

    fn text<'a>(b: &'a Bundle, name: &str) -> &'a str {
        b.files
            .iter()
            .find(|f| f.path.ends_with(name))
            .and_then(|f| match &f.contents {
                Contents::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}"))
    }

    #[test]
    fn the_warm_up_cap_is_spread_over_the_hours_of_the_day() {
        assert_eq!(hourly_limit(Some(500)), Some(21));
        assert_eq!(hourly_limit(Some(10)), Some(1));
        assert_eq!(hourly_limit(Some(0)), Some(1));
        assert_eq!(hourly_limit(None), None);
        let b = render(&node(), &Layout::debian());
        let master = text(&b, "master.cf");
        assert_eq!(
            master
                .matches("-o smtpd_client_message_rate_limit=21")
                .count(),
            2,
            "on submission and smtps:\n{master}"
        );
        let open = render(
            &NodeConfig {
                daily_cap: None,
                ..node()
            },
            &Layout::debian(),
        );
        assert!(!text(&open, "master.cf").contains("rate_limit"));
    }

    #[test]
    fn the_node_is_named_signs_for_its_domain_and_sends_from_its_address() {
        let l = Layout::debian();
        let b = render(&node(), &l);
        let main = text(&b, "main.cf");
        for want in [
            "myhostname = mx1.example.test\n",
            "smtp_bind_address = 192.0.2.10\n",
            "smtpd_tls_cert_file = /etc/mailfleet/tls/mx1.example.test.crt\n",
            "smtpd_milters = inet:127.0.0.1:8891\n",
            "mynetworks = 127.0.0.0/8, 10.20.0.0/16\n",
        ] {
            assert!(main.contains(want), "{want} in\n{main}");
        }
        assert!(!main.contains("queue_directory"), "Debian's own");
        assert_eq!(
            text(&b, "KeyTable"),
            "mf1._domainkey.example.test example.test:mf1:/etc/opendkim/keys/example.test/mf1.private\n"
        );
        assert_eq!(
            text(&b, "SigningTable"),
            "*@example.test mf1._domainkey.example.test\n"
        );
        let nft = text(&b, "nftables.conf");
        assert!(
            nft.contains("tcp dport { 22, 25, 465, 587 } accept"),
            "{nft}"
        );
        assert!(nft.contains("policy drop"), "{nft}");
        // The same inputs give the same files: a second run installs nothing new.
        assert_eq!(b, render(&node(), &l));
    }

    #[test]
    fn secrets_are_installed_private_and_never_described() {
        let b = render(&node(), &Layout::debian());
        for f in b
            .files
            .iter()
            .filter(|f| matches!(f.contents, Contents::Secret { .. }))
        {
            assert_eq!(f.mode, 0o600, "{:?}", f.path);
        }
        assert_eq!(
            b.files
                .iter()
                .filter(|f| matches!(f.contents, Contents::Secret { .. }))
                .count(),
            2
        );
        let shown = describe(&b);
        assert!(
            !shown.contains("SECRETDKIM") && !shown.contains("SECRETTLS"),
            "{shown}"
        );
        assert!(
            shown.contains("(secret: the domain's DKIM private key"),
            "{shown}"
        );
        assert!(
            shown.contains("CHAIN"),
            "the certificate is public: {shown}"
        );
        assert!(
            !format!("{b:?}").contains("SECRET"),
            "Debug shows no secret either"
        );
    }

    #[test]
    fn a_lab_node_keeps_everything_under_its_folder() {
        let root = Path::new("/var/lib/mailfleet-lab/n1");
        let b = render(&node(), &Layout::under(root));
        assert!(b.files.iter().all(|f| f.path.starts_with(root)), "{b:?}");
        let main = text(&b, "main.cf");
        assert!(
            main.contains("queue_directory = /var/lib/mailfleet-lab/n1/spool/postfix\n"),
            "{main}"
        );
    }
}
