//! The lab: real hosts on this machine, for rehearsing a fleet. Each host is a Linux
//! network namespace on a bridge, with its own address from the lab's subnet and its own
//! OpenSSH server (and, once bootstrapped, its own Postfix and OpenDKIM), its files under
//! the lab's folder. Needs root and Debian's iproute2 and openssh-server.
//!
//! Everything the lab makes is named from its bridge (`<bridge>-<id>` namespaces, veth
//! ends `<bridge><n>`) and kept under its folder (and each host's `/etc/netns/<namespace>`),
//! so `down` finds and removes all of it: no namespace, process, bridge or file is left
//! behind.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the lab is and what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// The bridge's name (at most 10 characters: the names of the lab's links grow from it).
    pub bridge: String,
    /// The subnet hosts take their addresses from; its first address is the bridge's (the
    /// hosts' gateway).
    pub subnet: (Ipv4Addr, u8),
    /// The lab's folder: each host's files, under `hosts/<id>`.
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab: {0}")]
    Failed(String),
    #[error("lab: {what}: {err}")]
    Io { what: String, err: std::io::Error },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |err| LabError::Io { what, err }
}

/// One host of the lab, as found on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub id: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    /// The OpenSSH server's process, when it runs.
    pub sshd_pid: Option<u32>,
}

/// What `status` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabStatus {
    pub bridge_up: bool,
    pub gateway: Ipv4Addr,
    pub hosts: Vec<Host>,
}

/// Parses "10.77.0.0/24" (a prefix of 16 to 29 bits).
pub fn parse_subnet(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let a: Ipv4Addr = a.trim().parse().ok()?;
    let l: u8 = l.trim().parse().ok()?;
    if !(16..=29).contains(&l) {
        return None;
    }
    let net = u32::from(a) & (u32::MAX << (32 - u32::from(l)));
    Some((Ipv4Addr::from(net), l))
}

/// Runs a program; its output on success, or an error that says what it printed.
fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(io(format!("cannot run {program}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(LabError::Failed(format!(
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn ip(args: &[&str]) -> Result<String, LabError> {
    run("ip", args)
}

/// Whether a process lives: it exists and is not a zombie waiting to be reaped (a server
/// that daemonized is reaped by the machine's init, in its own time).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: i32) {
    if let Ok(p) = i32::try_from(pid) {
        // SAFETY: a plain kill(2) of a process the lab started in its own namespace.
        unsafe {
            libc::kill(p, sig);
        }
    }
}

impl LabSpec {
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.0) + 1)
    }

    /// The addresses hosts may take: the subnet's, but its network, the gateway and its
    /// broadcast address.
    pub fn host_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let net = u32::from(self.subnet.0);
        let size = 1u32 << (32 - u32::from(self.subnet.1));
        (Ipv4Addr::from(net + 2), Ipv4Addr::from(net + size - 2))
    }

    /// The reverse zone the hosts' PTR records are in: the subnet's /24 (or /16 for a
    /// wider subnet), as `C.B.A.in-addr.arpa`.
    pub fn reverse_zone(&self) -> String {
        let o = self.subnet.0.octets();
        if self.subnet.1 >= 24 {
            format!("{}.{}.{}.in-addr.arpa", o[2], o[1], o[0])
        } else {
            format!("{}.{}.in-addr.arpa", o[1], o[0])
        }
    }

    fn netns_of(&self, id: &str) -> String {
        format!("{}-{id}", self.bridge)
    }

    fn hosts_dir(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    /// The folder of host `id`.
    pub fn host_dir(&self, id: &str) -> PathBuf {
        self.hosts_dir().join(id)
    }

    /// Makes the bridge (with the gateway address) and the folder; what is there already
    /// is kept.
    pub fn up(&self) -> Result<(), LabError> {
        if self.bridge.is_empty() || self.bridge.len() > 10 {
            return Err(LabError::Failed(format!(
                "bridge name {:?}: 1 to 10 characters",
                self.bridge
            )));
        }
        std::fs::create_dir_all(self.hosts_dir()).map_err(io("cannot make the lab's folder"))?;
        // The hosts' daemons (Postfix, OpenDKIM) run as their own accounts and must reach
        // their folders.
        {
            use std::os::unix::fs::PermissionsExt;
            for d in [self.dir.clone(), self.hosts_dir()] {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
                    .map_err(io("cannot open the lab's folder to its daemons"))?;
            }
        }
        if !self.bridge_exists() {
            ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        }
        let cidr = format!("{}/{}", self.gateway(), self.subnet.1);
        let has = ip(&["-4", "-o", "addr", "show", "dev", &self.bridge])?;
        if !has.contains(&format!(" {cidr} ")) {
            ip(&["addr", "add", &cidr, "dev", &self.bridge])?;
        }
        ip(&["link", "set", &self.bridge, "up"])?;
        Ok(())
    }

    fn bridge_exists(&self) -> bool {
        ip(&["link", "show", "dev", &self.bridge]).is_ok()
    }

    /// The lab's namespaces on the machine.
    fn namespaces(&self) -> Result<Vec<String>, LabError> {
        let prefix = format!("{}-", self.bridge);
        Ok(ip(&["netns", "list"])?
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix))
            .map(String::from)
            .collect())
    }

    /// Makes a host: its namespace on the bridge at `addr`, and its OpenSSH server taking
    /// `authorized_key` (an OpenSSH public key line) for root. A host that exists already is
    /// returned as it is.
    pub fn create_host(
        &self,
        id: &str,
        addr: Ipv4Addr,
        authorized_key: &str,
    ) -> Result<Host, LabError> {
        if id.is_empty() || id.len() > 8 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(LabError::Failed(format!(
                "host id {id:?}: 1 to 8 letters or digits"
            )));
        }
        if let Some(h) = self.host(id)? {
            if h.sshd_pid.is_some() {
                return Ok(h);
            }
        }
        let ns = self.netns_of(id);
        let dir = self.host_dir(id);
        std::fs::create_dir_all(&dir).map_err(io("cannot make the host's folder"))?;
        std::fs::write(dir.join("address"), addr.to_string())
            .map_err(io("cannot record the host's address"))?;
        if !self.namespaces()?.contains(&ns) {
            ip(&["netns", "add", &ns])?;
        }
        let outer = format!("{}{id}", &self.bridge[..self.bridge.len().min(7)]);
        let outer = &outer[..outer.len().min(15)];
        if ip(&["link", "show", "dev", outer]).is_err() {
            ip(&[
                "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
        }
        ip(&["link", "set", outer, "master", &self.bridge])?;
        ip(&["link", "set", outer, "up"])?;
        let cidr = format!("{addr}/{}", self.subnet.1);
        let inside = |args: &[&str]| -> Result<String, LabError> {
            let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["link", "set", "lo", "up"])?;
        if !inside(&["-4", "-o", "addr", "show", "dev", "eth0"])?.contains(&format!(" {cidr} ")) {
            inside(&["addr", "add", &cidr, "dev", "eth0"])?;
        }
        inside(&["link", "set", "eth0", "up"])?;
        let gw = self.gateway().to_string();
        if !inside(&["route", "show", "default"])?.contains(&gw) {
            inside(&["route", "add", "default", "via", &gw])?;
        }
        self.own_etc(&ns)?;
        self.start_sshd(id, &ns, &dir, addr, authorized_key)?;
        self.host(id)?
            .ok_or_else(|| LabError::Failed(format!("host {id} vanished as it was made")))
    }

    /// The host's own `/etc/postfix`: `ip netns exec` mounts `/etc/netns/NS/postfix` over
    /// `/etc/postfix` for what it starts (the host's SSH server, so every session), which
    /// lets each host run its own Postfix with the machine's programs. It starts as a copy
    /// of the machine's (the files Postfix itself needs), made once.
    fn own_etc(&self, ns: &str) -> Result<(), LabError> {
        let mine = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&mine).map_err(io("cannot make /etc/netns for the host"))?;
        // Its resolver asks the gateway (the lab's DNS, when one runs there): an answer or
        // a refusal at once, never a wait on servers it cannot reach.
        std::fs::write(
            mine.join("resolv.conf"),
            format!(
                "nameserver {}\noptions timeout:1 attempts:1\n",
                self.gateway()
            ),
        )
        .map_err(io("cannot write the host's resolv.conf"))?;
        let postfix = mine.join("postfix");
        if postfix.exists() || !Path::new("/etc/postfix").is_dir() {
            return Ok(());
        }
        run(
            "cp",
            &["-a", "/etc/postfix", &postfix.display().to_string()],
        )?;
        Ok(())
    }

    fn start_sshd(
        &self,
        id: &str,
        ns: &str,
        dir: &Path,
        addr: Ipv4Addr,
        authorized_key: &str,
    ) -> Result<(), LabError> {
        let key = dir.join("ssh_host_ed25519_key");
        if !key.exists() {
            let k = key.display().to_string();
            run(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-C", id, "-f", &k],
            )?;
        }
        let keys = dir.join("authorized_keys");
        std::fs::write(&keys, format!("{}\n", authorized_key.trim()))
            .map_err(io("cannot write authorized_keys"))?;
        let pid_file = dir.join("sshd.pid");
        let conf = dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "# The lab host {id}'s OpenSSH server, written by mailfleet.\n\
                 ListenAddress {addr}\nPort 22\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n",
                key.display(),
                pid_file.display(),
                keys.display()
            ),
        )
        .map_err(io("cannot write sshd_config"))?;
        // The privilege separation directory OpenSSH wants.
        std::fs::create_dir_all("/run/sshd").map_err(io("cannot make /run/sshd"))?;
        let conf = conf.display().to_string();
        run("ip", &["netns", "exec", ns, "/usr/sbin/sshd", "-f", &conf])?;
        // It writes its pid file once it listens.
        for _ in 0..100 {
            if read_pid(&pid_file).is_some_and(alive) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(LabError::Failed(format!(
            "host {id}: sshd did not start (no pid in {})",
            pid_file.display()
        )))
    }

    /// The host `id`, if its folder is there.
    pub fn host(&self, id: &str) -> Result<Option<Host>, LabError> {
        let dir = self.host_dir(id);
        let Ok(addr) = std::fs::read_to_string(dir.join("address")) else {
            return Ok(None);
        };
        let ip: Ipv4Addr = addr
            .trim()
            .parse()
            .map_err(|_| LabError::Failed(format!("host {id}: its address file holds {addr:?}")))?;
        Ok(Some(Host {
            id: id.to_string(),
            netns: self.netns_of(id),
            ip,
            sshd_pid: read_pid(&dir.join("sshd.pid")).filter(|p| alive(*p)),
            dir,
        }))
    }

    /// Every host whose folder is there, by id.
    pub fn hosts(&self) -> Result<Vec<Host>, LabError> {
        let mut ids: Vec<String> = match std::fs::read_dir(self.hosts_dir()) {
            Ok(d) => d
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(_) => vec![],
        };
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            if let Some(h) = self.host(&id)? {
                out.push(h);
            }
        }
        Ok(out)
    }

    /// Powers a host off: every process in its namespace stops; the namespace, its address
    /// and its files stay.
    pub fn stop_host(&self, id: &str) -> Result<(), LabError> {
        let ns = self.netns_of(id);
        if self.namespaces()?.contains(&ns) {
            stop_all_in(&ns)?;
        }
        Ok(())
    }

    /// Powers a stopped host back on: its SSH server starts again with the keys it had.
    pub fn start_host(&self, id: &str) -> Result<Host, LabError> {
        let h = self
            .host(id)?
            .ok_or_else(|| LabError::Failed(format!("host {id} does not exist")))?;
        if h.sshd_pid.is_some() {
            return Ok(h);
        }
        let key = std::fs::read_to_string(h.dir.join("authorized_keys")).unwrap_or_default();
        self.create_host(id, h.ip, &key)
    }

    /// Removes a host: every process in its namespace, the namespace (its link goes with
    /// it) and its folder. Removing one that is gone succeeds.
    pub fn delete_host(&self, id: &str) -> Result<(), LabError> {
        let ns = self.netns_of(id);
        if self.namespaces()?.contains(&ns) {
            stop_all_in(&ns)?;
            ip(&["netns", "del", &ns])?;
        }
        let dir = self.host_dir(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("cannot remove the host's folder"))?;
        }
        let etc = Path::new("/etc/netns").join(&ns);
        if etc.exists() {
            std::fs::remove_dir_all(&etc).map_err(io("cannot remove the host's /etc/netns"))?;
        }
        Ok(())
    }

    /// Removes everything the lab made: its hosts (found by their folders and by their
    /// namespaces' names), the bridge and the folder.
    pub fn down(&self) -> Result<(), LabError> {
        for h in self.hosts()? {
            self.delete_host(&h.id)?;
        }
        let prefix = format!("{}-", self.bridge);
        for ns in self.namespaces()? {
            if let Some(id) = ns.strip_prefix(&prefix) {
                self.delete_host(id)?;
            }
        }
        if self.bridge_exists() {
            ip(&["link", "del", &self.bridge])?;
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(io("cannot remove the lab's folder"))?;
        }
        Ok(())
    }

    pub fn status(&self) -> Result<LabStatus, LabError> {
        Ok(LabStatus {
            bridge_up: self.bridge_exists(),
            gateway: self.gateway(),
            hosts: self.hosts()?,
        })
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Stops every process in a namespace: asked first, then killed.
fn stop_all_in(ns: &str) -> Result<(), LabError> {
    let pids = |ns: &str| -> Result<Vec<u32>, LabError> {
        Ok(ip(&["netns", "pids", ns])?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    };
    for p in pids(ns)? {
        signal(p, libc::SIGTERM);
    }
    for _ in 0..100 {
        if pids(ns)?.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in pids(ns)? {
        signal(p, libc::SIGKILL);
    }
    for _ in 0..100 {
        if pids(ns)?.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(LabError::Failed(format!(
        "namespace {ns}: processes still running after SIGKILL"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_gives_a_gateway_and_the_hosts_addresses() {
        let (net, len) = parse_subnet("10.77.0.9/24").expect("subnet");
        assert_eq!((net, len), ("10.77.0.0".parse().expect("ip"), 24));
        let spec = LabSpec {
            bridge: "mflab".into(),
            subnet: (net, len),
            dir: "/tmp/x".into(),
        };
        assert_eq!(spec.gateway().to_string(), "10.77.0.1");
        let (lo, hi) = spec.host_range();
        assert_eq!(
            (lo.to_string(), hi.to_string()),
            ("10.77.0.2".into(), "10.77.0.254".into())
        );
        assert_eq!(parse_subnet("10.0.0.0/8"), None, "too big a lab");
        assert_eq!(parse_subnet("10.0.0.0/30"), None, "no room for hosts");
        assert_eq!(parse_subnet("10.0.0/24"), None);
    }
}
