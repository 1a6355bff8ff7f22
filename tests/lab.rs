//! The lab's hosts are real: network namespaces on a bridge, each with its own address and
//! its own OpenSSH server, reachable from this machine; and `down` leaves nothing behind.
//! Root only (CI runs as root); skipped elsewhere unless MAILFLEET_REQUIRE_SERVICES=1.

use mailfleet::lab::{parse_subnet, LabSpec};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

fn can_run() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let tools = [
        "/usr/sbin/sshd",
        "/usr/bin/ssh-keygen",
        "/usr/sbin/ip",
        "/usr/bin/ip",
    ]
    .iter()
    .filter(|p| std::path::Path::new(p).exists())
    .count()
        >= 3;
    if root && tools {
        return true;
    }
    let why = if root {
        "openssh-server and iproute2 are needed (apt-get install -y openssh-server iproute2)"
    } else {
        "the lab needs root"
    };
    if std::env::var("MAILFLEET_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{why} and MAILFLEET_REQUIRE_SERVICES=1");
    }
    eprintln!("skipped: {why}");
    false
}

/// A lab of its own: a bridge and subnet no other test uses.
fn lab(dir: &tempfile::TempDir) -> LabSpec {
    let n = std::process::id() % 200 + 20;
    LabSpec {
        bridge: format!("mft{:x}", std::process::id() % 0xfffff),
        subnet: parse_subnet(&format!("10.{n}.77.0/24")).expect("subnet"),
        dir: dir.path().join("lab"),
    }
}

fn banner(addr: Ipv4Addr) -> String {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from((addr, 22)), Duration::from_secs(5))
        .expect("connect to the host's port 22");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("banner");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn namespaces(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

use mailfleet::lab::alive;

#[test]
fn lab_hosts_are_real_hosts_and_down_leaves_nothing() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let spec = lab(&dir);
    let key_file = dir.path().join("id");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key_file)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let public = std::fs::read_to_string(key_file.with_extension("pub")).expect("public key");
    // Whatever happens below, the machine is left as it was.
    struct Down(LabSpec);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = self.0.down();
        }
    }
    let _down = Down(spec.clone());

    spec.up().expect("up");
    spec.up().expect("up again changes nothing");
    let (first, _) = spec.host_range();
    let a_ip = first;
    let b_ip = Ipv4Addr::from(u32::from(first) + 1);
    let a = spec.create_host("a1", a_ip, &public).expect("host a1");
    let b = spec.create_host("b2", b_ip, &public).expect("host b2");
    assert_eq!(a.ip, a_ip);
    let prefix = format!("{}-", spec.bridge);
    let mut found = namespaces(&prefix);
    found.sort();
    assert_eq!(found, [a.netns.clone(), b.netns.clone()]);
    // Each answers as an SSH server, on its own address, from this machine through the
    // bridge.
    for h in [&a, &b] {
        assert!(banner(h.ip).starts_with("SSH-2.0-OpenSSH"), "{h:?}");
    }
    let a_pid = a.sshd_pid.expect("sshd runs");
    let again = spec.create_host("a1", a_ip, &public).expect("again");
    assert_eq!(
        again.sshd_pid,
        Some(a_pid),
        "a host that exists is left as it is"
    );
    let status = spec.status().expect("status");
    assert!(status.bridge_up);
    assert_eq!(status.hosts.len(), 2);

    spec.delete_host("a1").expect("delete");
    assert!(!alive(a_pid), "its server is stopped");
    assert_eq!(namespaces(&prefix), vec![b.netns.clone()]);
    assert!(!a.dir.exists());
    spec.delete_host("a1")
        .expect("deleting a deleted host succeeds");

    let b_pid = b.sshd_pid.expect("sshd runs");
    spec.down().expect("down");
    assert!(namespaces(&prefix).is_empty(), "no namespace left");
    assert!(!alive(b_pid), "no process left");
    assert!(!spec.dir.exists(), "no file left");
    let link = std::process::Command::new("ip")
        .args(["link", "show", "dev", &spec.bridge])
        .output()
        .expect("ip link");
    assert!(!link.status.success(), "no bridge left");
    spec.down().expect("down twice is fine");
}
