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

/// A lab of its own: a bridge and subnet no other test uses, in a folder its hosts'
/// daemons can reach.
fn lab(dir: &tempfile::TempDir) -> LabSpec {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
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

/// Takes the lab down when the test ends, however it ends.
struct Down(LabSpec);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = self.0.down();
    }
}

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

mod support;

#[path = "support/pdns.rs"]
mod pdns;

/// The lab as a cloud: requests on a lab cluster are provisioned on real hosts (each its own
/// namespace, address and SSH server), found again by idempotency key, and deprovisioning
/// removes the hosts; the inventory and reconcile agree with the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_cluster_provisions_real_hosts_and_deprovisioning_removes_them() {
    use mailfleet::access::ssh;
    use mailfleet::engine;
    use support::*;
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let n = std::process::id() % 200 + 20;
    let bridge = format!("mfp{:x}", std::process::id() % 0xfffff);
    let cfg = config(&format!(
        r#"{FAST}
[providers.lab]
bridge = "{bridge}"
subnet = "10.{n}.78.0/24"
dir = "{dir}"
[[clusters]]
name = "lab-dallas"
provider = "lab"
region = "dallas"
default = true
access = "provider-view"
capacity = {{ cpu = 64, memory_gb = 256, storage_gb = 4000, vm_slots = 20 }}
"#,
        dir = dir.path().join("lab").display()
    ));
    let spec = cfg.providers.lab.spec().expect("lab spec");
    let _down = Down(spec.clone());
    let store = open(&db_path(&dir), &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let a = create(&ctx, "acme", "dallas", "ssd-1", "lab-a").await;
    let b = create(&ctx, "acme", "dallas", "ssd-1", "lab-b").await;
    engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;
    let prefix = format!("{bridge}-");
    let live = store.lab_list_live().await.expect("inventory");
    assert_eq!(live.len(), 2, "{live:?}");
    for req in [&a, &b] {
        let d = store.request_detail(&req.id).await.expect("detail");
        assert_eq!(d.request.state, "completed", "{:?}", d.request.error);
        let ip: Ipv4Addr = d
            .resources
            .iter()
            .find(|r| r.kind == "ip")
            .and_then(|r| r.provider_ref.as_deref())
            .and_then(|ip| ip.parse().ok())
            .expect("ip");
        let row = live
            .iter()
            .find(|r| r.idempotency_key == req.id)
            .expect("one instance per request");
        assert_eq!(row.ip, ip.to_string());
        assert!(
            row.rdns
                .as_deref()
                .is_some_and(|r| r.starts_with(&req.label)),
            "{row:?}"
        );
        // A real host answers at the address the pipeline recorded.
        assert!(banner(ip).starts_with("SSH-2.0-OpenSSH"), "{req:?}");
    }
    assert_eq!(namespaces(&prefix).len(), 2);

    // mailfleet logs in with its own key, kept beside the database, and pins the host key.
    let id =
        mailfleet::access::provisioning_identity(&store, &cfg.dkim.key_env, chrono::Utc::now())
            .await
            .expect("identity");
    let again =
        mailfleet::access::provisioning_identity(&store, &cfg.dkim.key_env, chrono::Utc::now())
            .await
            .expect("identity");
    assert_eq!(id.public, again.public, "made once, then read back");
    let row = &live[0];
    let addr = SocketAddr::from((row.ip.parse::<Ipv4Addr>().expect("ip"), 22));
    let wait = Duration::from_secs(10);
    let s = ssh::connect(addr, None, &id, wait).await.expect("login");
    let pin = s.host_key.clone();
    assert!(pin.starts_with("SHA256:"), "{pin}");
    // The session runs inside the host: its own address is the instance's.
    let out = s
        .exec("ip -4 -o addr show dev eth0", None)
        .await
        .expect("exec");
    assert!(
        out.ok() && out.stdout.contains(&format!(" {}/", row.ip)),
        "{out:?}"
    );
    let put = s
        .put("/tmp/mailfleet-lab-test/a b.txt", 0o600, b"secret\n")
        .await
        .expect("put");
    assert!(put.ok(), "{put:?}");
    let back = s
        .exec("stat -c %a '/tmp/mailfleet-lab-test/a b.txt' && cat '/tmp/mailfleet-lab-test/a b.txt' && rm -r /tmp/mailfleet-lab-test", None)
        .await
        .expect("read back");
    assert_eq!(back.stdout, "600\nsecret\n");
    let failed = s.exec("echo nope >&2; exit 3", None).await.expect("exec");
    assert_eq!(
        (failed.status, failed.tail()),
        (Some(3), "nope".to_string())
    );
    s.close().await;
    ssh::connect(addr, Some(&pin), &id, wait)
        .await
        .expect("the pinned key")
        .close()
        .await;
    // Another host's key at this address is refused, naming both.
    let other = &live[1];
    let other_pin = ssh::connect(
        SocketAddr::from((other.ip.parse::<Ipv4Addr>().expect("ip"), 22)),
        None,
        &id,
        wait,
    )
    .await
    .expect("login")
    .host_key
    .clone();
    assert_ne!(other_pin, pin, "each host has its own key");
    let e = ssh::connect(addr, Some(&other_pin), &id, wait)
        .await
        .err()
        .expect("refused");
    let said = e.to_string();
    assert!(
        said.contains("host key changed") && said.contains(&pin),
        "{said}"
    );
    // A key the host does not know is refused.
    let (stranger, _) = ssh::Identity::generate().expect("key");
    let e = ssh::connect(addr, None, &stranger, wait)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("refused mailfleet's key"), "{e}");

    for req in [&a, &b] {
        ask_deprovision(&ctx, &req.id).await;
    }
    engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;
    for req in [&a, &b] {
        let row = store
            .get_request(&req.id)
            .await
            .expect("read")
            .expect("row");
        assert_eq!(row.state, "deprovisioned", "{:?}", row.error);
    }
    assert!(namespaces(&prefix).is_empty(), "the hosts are gone");
    assert!(store.lab_list_live().await.expect("inventory").is_empty());
    let report = engine::reconcile::reconcile(&ctx).await.expect("reconcile");
    assert!(
        report.orphans.is_empty() && report.missing.is_empty(),
        "{report:?}"
    );
}

/// Reads an SMTP reply (all its lines) from `s`.
fn smtp_reply(s: &mut TcpStream) -> String {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(s.try_clone().expect("clone"));
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).expect("reply") == 0 {
            break;
        }
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] == b' ' {
            break;
        }
    }
    all
}

/// A lab host bootstrapped over SSH runs what a sending node runs: Postfix answering on 25
/// and 587 as its hostname and offering STARTTLS, OpenDKIM on its milter port, and the
/// firewall loaded in its own network namespace; a second bootstrap changes nothing, and a
/// configuration Postfix refuses fails its sub-task with what Postfix said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_host_bootstrapped_over_ssh_runs_postfix_opendkim_and_its_firewall() {
    use mailfleet::access::ssh;
    use mailfleet::bootstrap::{render, Contents, Layout, NodeConfig, Task};
    use std::io::Write;
    if !can_run() {
        return;
    }
    if !std::path::Path::new("/usr/sbin/postfix").exists()
        || !std::path::Path::new("/usr/sbin/opendkim").exists()
    {
        if std::env::var("MAILFLEET_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("postfix and opendkim are needed and MAILFLEET_REQUIRE_SERVICES=1");
        }
        eprintln!("skipped: postfix and opendkim are not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut spec = lab(&dir);
    spec.bridge = format!("mfb{:x}", std::process::id() % 0xfffff);
    // Its own subnet too: the lab cluster test takes the next one (78).
    spec.subnet.0 = Ipv4Addr::from(u32::from(spec.subnet.0) + 512);
    let _down = Down(spec.clone());
    spec.up().expect("up");
    let (id, _) = ssh::Identity::generate().expect("key");
    let (ip, _) = spec.host_range();
    let host = spec.create_host("n1", ip, &id.public).expect("host");
    let session = ssh::connect(
        SocketAddr::from((ip, 22)),
        None,
        &id,
        Duration::from_secs(10),
    )
    .await
    .expect("login");

    let hostname = "mx1.lab.test";
    // mailfleet's sink, on the lab's gateway: where the node's test message goes.
    let sink = mailfleet::access::sink::Sink::start(
        SocketAddr::from((spec.gateway(), 0)),
        "sink.mailfleet.test",
    )
    .await
    .expect("sink");
    let dkim = mailfleet::dkim::generate_rsa().expect("dkim key");
    let cert = rcgen::generate_simple_self_signed(vec![hostname.to_string()]).expect("cert");
    let node = NodeConfig {
        hostname: hostname.into(),
        domain: "lab.test".into(),
        ip,
        selector: "mf1".into(),
        dkim_key: Some(mailfleet::dkim::pkcs8_pem(&dkim.private_der).to_string()),
        cert_chain: Some(cert.cert.pem()),
        cert_key: Some(cert.signing_key.serialize_pem()),
        daily_cap: Some(240),
        relay_networks: vec![],
        sink: Some(("sink.mailfleet.test".into(), sink.addr())),
        agent: None,
    };
    let layout = Layout::lab(&host.dir);
    let bundle = render(&node, &layout);
    let done = ssh::install(&session, &bundle)
        .await
        .unwrap_or_else(|(t, e)| {
            let log = std::fs::read_to_string(host.dir.join("maillog")).unwrap_or_default();
            panic!("{t:?}: {e}\n{log}")
        });
    let tasks: Vec<Task> = done.iter().map(|(t, _)| *t).collect();
    assert_eq!(tasks, Task::ALL);

    // Postfix answers on the host's address as the node, and offers STARTTLS.
    for port in [25u16, 587] {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(5))
                .expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let banner = smtp_reply(&mut s);
        assert!(
            banner.starts_with(&format!("220 {hostname} ESMTP")),
            "{port}: {banner}"
        );
        s.write_all(b"EHLO probe.test\r\n").expect("ehlo");
        let ehlo = smtp_reply(&mut s);
        assert!(ehlo.contains("STARTTLS"), "{port}: {ehlo}");
        let _ = s.write_all(b"QUIT\r\n");
    }
    // As a peer checks it: the banner names the node, STARTTLS is offered, and the
    // certificate verifies for its hostname against the root that issued it.
    let root = cert.cert.pem();
    for port in [25u16, 587] {
        let addr = SocketAddr::from((ip, port));
        let roots = mailfleet::access::smtp::roots_from_pem(&root).expect("root");
        let seen = mailfleet::access::smtp::check(addr, hostname, roots, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{port}: {e}"));
        assert!(
            seen.banner.starts_with(&format!("220 {hostname} ESMTP")),
            "{seen:?}"
        );
        assert!(seen.tls.starts_with("TLS 1."), "{seen:?}");
    }
    let smtp = SocketAddr::from((ip, 25));
    // A certificate no trusted root issued, and a name it was not issued for, are refused.
    let other = rcgen::generate_simple_self_signed(vec![hostname.to_string()]).expect("cert");
    let roots = mailfleet::access::smtp::roots_from_pem(&other.cert.pem()).expect("root");
    let e = mailfleet::access::smtp::check(smtp, hostname, roots, Duration::from_secs(10))
        .await
        .expect_err("unknown issuer");
    assert!(e.contains("STARTTLS handshake"), "{e}");
    let roots = mailfleet::access::smtp::roots_from_pem(&root).expect("root");
    let e = mailfleet::access::smtp::check(smtp, "mx2.lab.test", roots, Duration::from_secs(10))
        .await
        .expect_err("another name");
    assert!(
        e.contains("the banner names \"mx1.lab.test\", not mx2.lab.test"),
        "{e}"
    );

    // The node sends a message through its own Postfix: OpenDKIM signs it for the domain,
    // and it arrives at the sink from the node's address.
    let to = sink.address_for("lab1");
    let message = format!(
        "From: postmaster@lab.test\r\nTo: {to}\r\nSubject: mailfleet test\r\n\r\nhello from {hostname}\r\n"
    );
    let sent = session
        .exec(
            &format!("/usr/sbin/sendmail -f postmaster@{hostname} {to}"),
            Some(message.as_bytes()),
        )
        .await
        .expect("sendmail");
    assert!(sent.ok(), "{sent:?}");
    let got = sink
        .wait_for("lab1", Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "no test message at the sink:\n{}",
                std::fs::read_to_string(host.dir.join("maillog")).unwrap_or_default()
            )
        });
    assert_eq!(
        got.peer,
        std::net::IpAddr::V4(ip),
        "sent from the node's address"
    );
    assert_eq!(got.helo, hostname);
    assert_eq!(got.mail_from, format!("postmaster@{hostname}"));
    let sig = got
        .header("DKIM-Signature")
        .expect("signed by the node's OpenDKIM");
    assert!(sig.contains("d=lab.test") && sig.contains("s=mf1"), "{sig}");

    // The node's records, published by mailfleet's own publisher on a real PowerDNS: the
    // signature verifies and SPF passes for the node's address; a changed body, or the same
    // message from another address, does not.
    if let Some(dns) = pdns::Pdns::start().expect("pdns") {
        use mailfleet::access::verdict;
        use mailfleet::dns::DnsProvider;
        use mailfleet::domain::records::{plan, DmarcPolicy, RecordInput};
        dns.add_zone("lab.test").expect("zone");
        let records = plan(&RecordInput {
            domain: "lab.test".into(),
            hostname: hostname.into(),
            ip: ip.to_string(),
            selector: "mf1".into(),
            dkim_rsa: Some(dkim.public_b64.clone()),
            dkim_ed25519: None,
            dmarc: DmarcPolicy::None,
            dmarc_rua: None,
            spf_extra: vec![],
            mta_sts_id: None,
            tls_rpt_rua: None,
            ttl: 60,
        })
        .expect("plan");
        let publisher = mailfleet::dns::powerdns::PowerDns::new(
            &dns.api_url(),
            "localhost",
            dns.api_key().to_string(),
            Duration::from_secs(5),
        )
        .expect("client");
        publisher
            .publish("lab.test", &records)
            .await
            .expect("publish");
        let auth = verdict::authenticator(dns.dns_addr()).expect("resolver");
        let v = verdict::check(
            &auth,
            &got.data,
            "lab.test",
            got.peer,
            &got.helo,
            &got.mail_from,
        )
        .await;
        assert!(v.passed(), "{v:?}");
        assert_eq!(v.dkim.as_deref(), Ok("d=lab.test s=mf1: pass"));
        let mut changed = got.data.clone();
        let at = changed.len() - 4;
        changed[at] ^= 0x20;
        let v = verdict::check(
            &auth,
            &changed,
            "lab.test",
            got.peer,
            &got.helo,
            &got.mail_from,
        )
        .await;
        assert!(v.dkim.is_err(), "{v:?}");
        let elsewhere = std::net::IpAddr::V4(Ipv4Addr::from(u32::from(ip) + 7));
        let v = verdict::check(
            &auth,
            &got.data,
            "lab.test",
            elsewhere,
            &got.helo,
            &got.mail_from,
        )
        .await;
        assert!(v.spf.as_ref().is_err_and(|e| e.contains("fail")), "{v:?}");
    } else if std::env::var("MAILFLEET_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("PowerDNS is needed and MAILFLEET_REQUIRE_SERVICES=1");
    }

    // OpenDKIM listens on the host's own loopback; the firewall is loaded in its namespace.
    let listening = session.exec("ss -ltn", None).await.expect("ss");
    assert!(listening.stdout.contains("127.0.0.1:8891"), "{listening:?}");
    let rules = session
        .exec("nft list table inet mailfleet", None)
        .await
        .expect("nft");
    assert!(
        rules.ok() && rules.stdout.contains("policy drop"),
        "{rules:?}"
    );
    assert!(rules.stdout.contains("22, 25, 465, 587"), "{rules:?}");
    let machine = std::process::Command::new("nft")
        .args(["list", "table", "inet", "mailfleet"])
        .output()
        .expect("nft");
    assert!(
        !machine.status.success(),
        "the machine's own firewall is untouched"
    );

    // Again: nothing to change, and it still holds.
    ssh::install(&session, &bundle)
        .await
        .expect("a second bootstrap");

    // A master.cf Postfix refuses: the postfix sub-task fails, with what it said.
    let mut broken = bundle.clone();
    for f in &mut broken.files {
        if f.path.ends_with("master.cf") {
            if let Contents::Text(t) = &mut f.contents {
                t.push_str("bogus      inet  x       -       n       -       -       smtpd\n");
            }
        }
    }
    let (task, said) = ssh::install(&session, &broken).await.expect_err("refused");
    assert_eq!(task, Task::Postfix, "{said}");
    assert!(said.contains("invalid private field"), "{said}");
    session.close().await;

    let etc = std::path::Path::new("/etc/netns").join(&host.netns);
    assert!(etc.exists());
    spec.down().expect("down");
    assert!(!etc.exists(), "the host's /etc/netns is gone");
    assert!(namespaces(&format!("{}-", spec.bridge)).is_empty());
}

#[path = "support/pebble.rs"]
mod pebble;

/// Issue 15's rehearsal, end to end on real hosts: three nodes of one domain go through the
/// whole pipeline — a lab host each, the mail stack installed over SSH, records on a real
/// PowerDNS (a real PTR among them), a certificate from Pebble — and each proves it sends
/// authenticated mail: a test message through its own Postfix reaches mailfleet's sink
/// with a DKIM signature and SPF that mail-auth verifies. The engine is killed with SIGKILL
/// during one node's configure, and the next one finishes it. A fourth node, whose Postfix
/// refuses its configuration (a fault the lab injects), fails that sub-task and rolls back,
/// leaving no host, no record and no certificate. Deprovisioning removes everything, and
/// reconcile finds nothing amiss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_real_nodes_are_provisioned_verified_and_torn_down_through_the_pipeline() {
    use mailfleet::engine;
    use support::*;
    if !can_run() {
        return;
    }
    for bin in ["/usr/sbin/postfix", "/usr/sbin/opendkim"] {
        if !std::path::Path::new(bin).exists() {
            if std::env::var("MAILFLEET_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{bin} is needed and MAILFLEET_REQUIRE_SERVICES=1");
            }
            eprintln!("skipped: {bin} is not installed");
            return;
        }
    }
    let Some(dns) = pdns::Pdns::start().expect("pdns") else {
        return;
    };
    let n = std::process::id() % 200 + 20;
    let reverse = format!("80.{n}.10.in-addr.arpa");
    dns.add_zone("lab.test").expect("zone");
    dns.add_zone(&reverse).expect("reverse zone");
    let Some(ca) = pebble::Pebble::start(dns.dns_addr()).expect("pebble") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let root = dir.path().join("pebble-https.pem");
    std::fs::write(&root, ca.https_root_pem()).expect("root");
    let key_env = "MAILFLEET_TEST_LAB_PDNS_KEY";
    std::env::set_var(key_env, dns.api_key());
    let bridge = format!("mfe{:x}", std::process::id() % 0xfffff);
    // PowerDNS on SQLite answers 500 for a moment when several writes meet: retried over
    // a second or two, as a real engine's backoff would.
    let fast = FAST
        .split("\n[dns]\n")
        .next()
        .unwrap_or(FAST)
        .replace(
            "retry_backoff = [\"10ms\", \"20ms\", \"40ms\"]",
            "retry_backoff = [\"100ms\", \"300ms\", \"1s\"]\nmax_retries = 5",
        )
        .replace("retry_cap = \"100ms\"", "retry_cap = \"2s\"");
    assert!(fast.contains("max_retries = 5"), "{fast}");
    let overrides = format!(
        r#"{fast}
[providers.lab]
bridge = "{bridge}"
subnet = "10.{n}.80.0/24"
dir = "{lab}"
faults = ["mx4:postfix", "mx5:test_message", "mx6:packages"]
[[clusters]]
name = "lab-dallas"
provider = "lab"
region = "dallas"
default = true
capacity = {{ cpu = 64, memory_gb = 256, storage_gb = 4000, vm_slots = 20 }}
[dns]
provider = "powerdns"
nameservers = ["{ns}"]
propagation_timeout = "20s"
propagation_interval = "100ms"
[dns.powerdns]
api_url = "{api}"
api_key_env = "{key_env}"
[tls]
acme = "{acme}"
ca_roots = ["{root}"]
contact = ["mailto:ops@lab.test"]
order_timeout = "60s"
[verify]
message_timeout = "8s"
[serve]
listen = "10.{n}.80.1:8443"
agent_url = "https://10.{n}.80.1:8443"
agent_program = "{program}"
heartbeat_interval = "1s"
"#,
        lab = dir.path().join("lab").display(),
        program = env!("CARGO_BIN_EXE_mailfleet"),
        ns = dns.dns_addr(),
        api = dns.api_url(),
        acme = ca.directory_url(),
        root = root.display(),
    );
    let cfg = config(&overrides);
    let spec = cfg.providers.lab.spec().expect("lab spec");
    let _down = Down(spec.clone());
    // serve, on the lab's gateway, for the agents the bootstrap installs.
    spec.up().expect("lab up");
    let serve_id = mailfleet::serve::identity(&cfg, &open(&db_path(&dir), &cfg).await)
        .expect("serve identity");
    let cfg_path = dir.path().join("lab.toml");
    std::fs::write(&cfg_path, &overrides).expect("config");
    let db = db_path(&dir);
    let store = open(&db, &cfg).await;
    let ctx = sim_ctx(&store, &cfg, system_clock());
    let prefix = format!("{bridge}-");
    let server = mailfleet::serve::Server::new(store.clone(), &cfg, system_clock());
    let _listening = mailfleet::serve::listen(
        cfg.serve.listen.parse().expect("addr"),
        &serve_id,
        server.clone(),
    )
    .await
    .expect("serve listens on the gateway");

    // The engine as its own process, killed with SIGKILL once mx1's bootstrap is under way.
    let mx1 = create_in(&ctx, "mx1", "lab.test").await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailfleet"))
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&cfg_path)
        .arg("work")
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env_remove("MAILFLEET_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the engine");
    let started = std::time::Instant::now();
    loop {
        let d = store.request_detail(&mx1).await.expect("detail");
        let bootstrapping = d
            .tasks
            .iter()
            .any(|t| t.step == "configure" && t.name == "packages" && t.status == "done");
        if bootstrapping {
            assert_eq!(d.request.state, "configuring");
            break;
        }
        assert!(
            !matches!(
                d.request.state.as_str(),
                "completed" | "failed" | "rolling_back" | "rolled_back"
            ),
            "mx1 left configure before it was killed: {} {:?}",
            d.request.state,
            d.request.error
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "mx1 never began its bootstrap: {} {:?}",
            d.request.state,
            d.request.error
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let killed_at = chrono::Utc::now();
    let cut = store.get_request(&mx1).await.expect("read").expect("row");
    assert_eq!(cut.state, "configuring", "killed during configure");

    // Five more: two that succeed; one whose Postfix refuses what it is given, one whose
    // test message never arrives, one whose packages fail to install.
    let mx2 = create_in(&ctx, "mx2", "lab.test").await;
    let mx3 = create_in(&ctx, "mx3", "lab.test").await;
    let mx4 = create_in(&ctx, "mx4", "lab.test").await;
    let mx5 = create_in(&ctx, "mx5", "lab.test").await;
    let mx6 = create_in(&ctx, "mx6", "lab.test").await;
    // The killed engine's lease lapses; the next engine takes mx1 up where it stopped.
    tokio::time::sleep(Duration::from_millis(800)).await;
    engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;

    let live = store.lab_list_live().await.expect("inventory");
    let states: Vec<String> = all_requests(&store)
        .await
        .iter()
        .map(|r| format!("{} {} {:?}", r.label, r.state, r.error))
        .collect();
    assert_eq!(live.len(), 3, "{states:#?}");
    assert_eq!(namespaces(&prefix).len(), 3);
    for (label, id) in [("mx1", &mx1), ("mx2", &mx2), ("mx3", &mx3)] {
        let d = store.request_detail(id).await.expect("detail");
        assert_eq!(
            d.request.state, "completed",
            "{label}: {:?}",
            d.request.error
        );
        let node = d.node.as_ref().expect("a node");
        assert_eq!(node.status, "warming", "{label}");
        let task = |step: &str, name: &str| {
            d.tasks
                .iter()
                .find(|t| t.step == step && t.name == name)
                .unwrap_or_else(|| panic!("{label}: no {step}/{name} in {:?}", d.tasks))
        };
        for name in mailfleet::domain::BOOTSTRAP_TASKS {
            assert_eq!(task("configure", name).status, "done", "{label} {name}");
        }
        let said = |step: &str, name: &str| task(step, name).detail.clone().unwrap_or_default();
        let host = format!("{label}.lab.test");
        assert!(
            said("verify", "rdns_confirm").contains(&format!("→ {host} →")),
            "{label}"
        );
        for probe in ["smtp_probe", "submission_probe"] {
            let s = said("verify", probe);
            assert!(
                s.starts_with(&format!("220 {host} ESMTP")) && s.contains("TLS 1."),
                "{label} {probe}: {s}"
            );
        }
        let m = said("verify", "test_message");
        assert!(
            m.contains("DKIM d=lab.test")
                && m.contains(": pass; SPF")
                && m.ends_with(&format!(
                    "pass for {}",
                    node.ip_address.clone().unwrap_or_default()
                )),
            "{label}: {m}"
        );
        let ip = node.ip_address.clone().unwrap_or_default();
        let o: Vec<&str> = ip.split('.').collect();
        let ptr = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
        assert!(
            dns.records(&reverse)
                .contains(&(ptr, "PTR".into(), format!("{host}."))),
            "{label}: a real PTR"
        );
    }
    // Each node's agent reports to serve: its heartbeats arrive, and the test message its
    // Postfix delivered is counted on its warm-up day from its own log.
    for id in [&mx1, &mx2, &mx3] {
        let node = store
            .request_detail(id)
            .await
            .expect("detail")
            .node
            .expect("node");
        let start = std::time::Instant::now();
        loop {
            let n = store.get_node(&node.id).await.expect("node");
            let w = store
                .node_warmup(&node.id)
                .await
                .expect("warmup")
                .expect("warming");
            let delivered = w.log.last().map(|d| d.delivered).unwrap_or(0);
            if n.last_heartbeat.is_some() && delivered >= 1 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{}: no heartbeat with its delivery: {:?} {:?}; agent said: {}",
                node.hostname,
                n.last_heartbeat,
                w.log.last(),
                std::fs::read_to_string(
                    spec.host_dir(
                        &live
                            .iter()
                            .find(|r| r.idempotency_key == **id)
                            .expect("host")
                            .host_id
                    )
                    .join("agent.out")
                )
                .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        server.counts().get("accepted").copied().unwrap_or(0) >= 3,
        "{:?}",
        server.counts()
    );

    // The warm-up's cap is enforced on each node: its Postfix gets the hourly limit, and a
    // new one when a day closes and the cap moves.
    let master = |label: &str| {
        let row = live.iter().find(|r| r.label == label).expect("host");
        let host = spec.host(&row.host_id).expect("host").expect("there");
        std::fs::read_to_string(
            std::path::Path::new("/etc/netns")
                .join(&host.netns)
                .join("postfix/master.cf"),
        )
        .expect("master.cf")
    };
    let limit_of = |text: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix("-o smtpd_client_message_rate_limit="))
            .and_then(|v| v.parse().ok())
    };
    let pushed = engine::caps::pass(&ctx).await;
    assert_eq!(pushed.len(), 3, "{pushed:?}");
    assert!(pushed.iter().all(|(_, r)| r.is_ok()), "{pushed:?}");
    let mx2_node = store
        .request_detail(&mx2)
        .await
        .expect("detail")
        .node
        .expect("node");
    let cap = |w: &mailfleet::store::WarmupState| u64::try_from(w.cap).expect("cap");
    let day1 = store
        .node_warmup(&mx2_node.id)
        .await
        .expect("warmup")
        .expect("warming");
    assert_eq!(
        limit_of(&master("mx2")),
        mailfleet::bootstrap::hourly_limit(Some(cap(&day1)))
    );
    assert!(engine::caps::pass(&ctx).await.is_empty(), "nothing changed");
    mailfleet::warmup::close_days(
        &store,
        &cfg,
        &mailfleet::warmup::Reported,
        chrono::Utc::now() + chrono::Duration::days(1),
    )
    .await
    .expect("a day closes");
    let day2 = store
        .node_warmup(&mx2_node.id)
        .await
        .expect("warmup")
        .expect("warming");
    assert_ne!(cap(&day2), cap(&day1), "{day2:?}");
    let pushed = engine::caps::pass(&ctx).await;
    assert!(pushed.iter().all(|(_, r)| r.is_ok()), "{pushed:?}");
    assert_eq!(
        limit_of(&master("mx2")),
        mailfleet::bootstrap::hourly_limit(Some(cap(&day2))),
        "{pushed:?}"
    );

    // mx1's bootstrap ran again, whole, after the kill (every sub-task is idempotent).
    let mx1_detail = store.request_detail(&mx1).await.expect("detail");
    let packages = mx1_detail
        .tasks
        .iter()
        .find(|t| t.step == "configure" && t.name == "packages")
        .expect("packages");
    let at = chrono::DateTime::parse_from_rfc3339(&packages.updated_at).expect("time");
    assert!(at > killed_at, "{packages:?} after {killed_at}");
    let took = |d: &mailfleet::store::RequestDetail| {
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("time");
        let first = d
            .transitions
            .first()
            .map(|t| t.at.clone())
            .unwrap_or_default();
        let last = d
            .transitions
            .last()
            .map(|t| t.at.clone())
            .unwrap_or_default();
        (t(&last) - t(&first)).num_milliseconds()
    };
    let one = store.request_detail(&mx2).await.expect("detail");
    for t in one
        .tasks
        .iter()
        .filter(|t| t.step == "configure" || t.step == "verify")
    {
        println!(
            "  {} {}/{}: {}",
            t.updated_at.get(11..23).unwrap_or(""),
            t.step,
            t.name,
            t.detail.as_deref().unwrap_or("")
        );
    }
    println!(
        "one full provisioning on a real lab host (queued to completed, mx2): {:.1} s",
        took(&one) as f64 / 1000.0
    );

    // The faults: each failed its sub-task with the evidence, and the rollback left nothing
    // of the node: no host, no record, no PTR, no certificate in force.
    for (label, id, task, evidence) in [
        ("mx4", &mx4, "postfix: ", "broken"),
        ("mx5", &mx5, "test_message: ", "the node's queue"),
        ("mx6", &mx6, "packages: ", "fault injected"),
    ] {
        let d = store.request_detail(id).await.expect("detail");
        assert_eq!(
            d.request.state, "rolled_back",
            "{label}: {:?}",
            d.request.error
        );
        let error = d.request.error.clone().unwrap_or_default();
        assert!(
            error.contains(task) && error.contains(evidence),
            "{label}: {error}"
        );
        println!("{label} rolled back: {error}");
        assert!(
            d.certificates.iter().all(|c| c.status != "active"),
            "{label}: {:?}",
            d.certificates
        );
        assert!(
            d.records.iter().all(|r| r.status == "removed" || !r.owned),
            "{label}: {:?}",
            d.records
        );
        let zone = dns.records("lab.test");
        assert!(!zone.iter().any(|(n, _, _)| n.contains(label)), "{zone:?}");
        assert!(!dns
            .records(&reverse)
            .iter()
            .any(|(_, _, c)| c.contains(label)));
    }
    let mx5_error = store
        .get_request(&mx5)
        .await
        .expect("read")
        .and_then(|r| r.error)
        .unwrap_or_default();
    assert!(
        mx5_error.contains("no test message reached the sink") && mx5_error.contains("within 8s"),
        "{mx5_error}"
    );

    // Renewal: every certificate made due at once (the CA's are good for years); each new
    // one is installed on its node, Postfix reloaded, and the node serves it before it is
    // recorded as the one in force.
    let old = store
        .active_cert_for_host("mx2.lab.test")
        .await
        .expect("read")
        .expect("a certificate");
    let mut due = cfg.clone();
    due.tls.renew_before_days = 3650;
    let renewed = engine::renew::pass(&sim_ctx(&store, &due, system_clock())).await;
    assert_eq!(renewed.len(), 3, "{renewed:?}");
    assert!(renewed.iter().all(|(_, r)| r.is_ok()), "{renewed:?}");
    let new = store
        .active_cert_for_host("mx2.lab.test")
        .await
        .expect("read")
        .expect("a certificate");
    assert_ne!(new.0, old.0, "a new certificate is in force");
    let live = store.lab_list_live().await.expect("inventory");
    let row = live.iter().find(|r| r.label == "mx2").expect("mx2's host");
    let node = mailfleet::access::NodeRef {
        instance_id: row.id.clone(),
        ip: row.ip.parse().expect("ip"),
        hostname: "mx2.lab.test".into(),
        domain: "lab.test".into(),
    };
    let access = ctx
        .cluster(Some("lab-dallas"))
        .expect("cluster")
        .access
        .clone();
    let seen = access
        .probe(&node, mailfleet::providers::Probe::Smtp)
        .await
        .expect("the node serves the new certificate");
    assert!(
        seen.ends_with(&format!("serves certificate {}", new.0)),
        "{seen}"
    );

    // A host presenting another key than the one pinned is refused, naming both; nothing is
    // sent to it.
    let mx3_row = live.iter().find(|r| r.label == "mx3").expect("mx3's host");
    let mx3_pin = store
        .pinned_host_key(&mx3_row.id)
        .await
        .expect("read")
        .expect("pinned on first contact");
    let mx2_pin = store
        .pinned_host_key(&row.id)
        .await
        .expect("read")
        .expect("pinned");
    store.forget_host_key(&row.id).await.expect("forget");
    store
        .pin_host_key(&row.id, &row.ip, &mx3_pin, chrono::Utc::now())
        .await
        .expect("pin another");
    let e = access
        .probe(&node, mailfleet::providers::Probe::TestMessage)
        .await
        .expect_err("another host key");
    assert!(
        e.kind == mailfleet::providers::ErrorKind::Invalid
            && e.to_string().contains("host key changed")
            && e.to_string().contains(&mx2_pin),
        "{e}"
    );
    store.forget_host_key(&row.id).await.expect("forget");
    store
        .pin_host_key(&row.id, &row.ip, &mx2_pin, chrono::Utc::now())
        .await
        .expect("pin back");

    // `bootstrap render` shows what the lab host runs, in the host's own places, with its
    // secrets named and never printed.
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_mailfleet"))
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&cfg_path)
        .args(["bootstrap", "render"])
        .arg(&one.node.as_ref().expect("mx2's node").id)
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env_remove("MAILFLEET_CONFIG")
        .output()
        .expect("render");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let host_dir = spec.host_dir(&row.host_id);
    assert!(
        text.contains(&format!(
            "queue_directory = {}",
            host_dir.join("spool").display()
        )) && text.contains("myhostname = mx2.lab.test")
            && !text.contains("BEGIN PRIVATE KEY"),
        "{text}"
    );

    for id in [&mx1, &mx2, &mx3] {
        ask_deprovision(&ctx, id).await;
    }
    engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;
    for id in [&mx1, &mx2, &mx3] {
        let row = store.get_request(id).await.expect("read").expect("row");
        assert_eq!(row.state, "deprovisioned", "{:?}", row.error);
    }
    assert!(namespaces(&prefix).is_empty(), "the hosts are gone");
    assert!(store.lab_list_live().await.expect("inventory").is_empty());
    // The nodes' records are gone; the domain's own (its DKIM key's and its DMARC policy)
    // stay with the domain, whose key outlives its nodes.
    let left: Vec<String> = dns
        .records("lab.test")
        .into_iter()
        .map(|(n, t, _)| format!("{n} {t}"))
        .collect();
    assert_eq!(
        left,
        ["_dmarc.lab.test. TXT", "mf1._domainkey.lab.test. TXT"],
        "only the domain's own records are left"
    );
    assert_eq!(dns.records(&reverse), vec![], "no PTR left");
    let report = engine::reconcile::reconcile(&ctx).await.expect("reconcile");
    assert!(
        report.orphans.is_empty() && report.missing.is_empty(),
        "{report:?}"
    );
}

/// Issue 16: a node whose real Postfix bounces more than 5% of a burst is paused by the
/// warm-up from its real counts. One node through the whole pipeline (a lab host, the mail
/// stack and its agent installed over SSH, records on a real PowerDNS, a certificate from
/// Pebble); then a burst through its own Postfix to mailfleet's sink, which refuses one
/// recipient in ten with a 550. The node's agent counts the deliveries and bounces in its
/// Postfix log and reports them to serve; the day boundary pauses the node, with the
/// bounce rate as the reason and the medium bounce alert raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_that_bounces_a_burst_is_paused_by_the_warm_up_from_its_real_counts() {
    use mailfleet::access::ssh;
    use mailfleet::domain::warmup::Decision;
    use mailfleet::engine;
    use support::*;
    if !can_run() {
        return;
    }
    for bin in ["/usr/sbin/postfix", "/usr/sbin/opendkim"] {
        if !std::path::Path::new(bin).exists() {
            if std::env::var("MAILFLEET_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{bin} is needed and MAILFLEET_REQUIRE_SERVICES=1");
            }
            eprintln!("skipped: {bin} is not installed");
            return;
        }
    }
    let began = std::time::Instant::now();
    let Some(dns) = pdns::Pdns::start().expect("pdns") else {
        return;
    };
    // Its own subnet and bridge: the other lab tests take 77 to 80.
    let n = std::process::id() % 200 + 20;
    let reverse = format!("81.{n}.10.in-addr.arpa");
    dns.add_zone("lab.test").expect("zone");
    dns.add_zone(&reverse).expect("reverse zone");
    let Some(ca) = pebble::Pebble::start(dns.dns_addr()).expect("pebble") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let root = dir.path().join("pebble-https.pem");
    std::fs::write(&root, ca.https_root_pem()).expect("root");
    let key_env = "MAILFLEET_TEST_LAB_BOUNCE_PDNS_KEY";
    std::env::set_var(key_env, dns.api_key());
    let bridge = format!("mfw{:x}", std::process::id() % 0xfffff);
    // As the three-node rehearsal: PowerDNS on SQLite answers 500 for a moment when writes
    // meet, retried as a real engine's backoff would.
    let fast = FAST
        .split("\n[dns]\n")
        .next()
        .unwrap_or(FAST)
        .replace(
            "retry_backoff = [\"10ms\", \"20ms\", \"40ms\"]",
            "retry_backoff = [\"100ms\", \"300ms\", \"1s\"]\nmax_retries = 5",
        )
        .replace("retry_cap = \"100ms\"", "retry_cap = \"2s\"");
    let cfg = config(&format!(
        r#"{fast}
[providers.lab]
bridge = "{bridge}"
subnet = "10.{n}.81.0/24"
dir = "{lab}"
[[clusters]]
name = "lab-dallas"
provider = "lab"
region = "dallas"
default = true
capacity = {{ cpu = 64, memory_gb = 256, storage_gb = 4000, vm_slots = 20 }}
[dns]
provider = "powerdns"
nameservers = ["{ns}"]
propagation_timeout = "20s"
propagation_interval = "100ms"
[dns.powerdns]
api_url = "{api}"
api_key_env = "{key_env}"
[tls]
acme = "{acme}"
ca_roots = ["{root}"]
contact = ["mailto:ops@lab.test"]
order_timeout = "60s"
[verify]
message_timeout = "8s"
[serve]
listen = "10.{n}.81.1:8443"
agent_url = "https://10.{n}.81.1:8443"
agent_program = "{program}"
heartbeat_interval = "1s"
"#,
        lab = dir.path().join("lab").display(),
        program = env!("CARGO_BIN_EXE_mailfleet"),
        ns = dns.dns_addr(),
        api = dns.api_url(),
        acme = ca.directory_url(),
        root = root.display(),
    ));
    let spec = cfg.providers.lab.spec().expect("lab spec");
    let _down = Down(spec.clone());
    spec.up().expect("lab up");
    let store = open(&db_path(&dir), &cfg).await;
    let serve_id = mailfleet::serve::identity(&cfg, &store).expect("serve identity");
    let server = mailfleet::serve::Server::new(store.clone(), &cfg, system_clock());
    let _listening = mailfleet::serve::listen(
        cfg.serve.listen.parse().expect("addr"),
        &serve_id,
        server.clone(),
    )
    .await
    .expect("serve listens on the gateway");

    let ctx = sim_ctx(&store, &cfg, system_clock());
    let id = create_in(&ctx, "mx1", "lab.test").await;
    // The engine's own context (and the sink its verification starts) ends with the run.
    engine::run_until_idle(sim_ctx(&store, &cfg, system_clock())).await;
    let d = store.request_detail(&id).await.expect("detail");
    assert_eq!(d.request.state, "completed", "{:?}", d.request.error);
    let node = d.node.expect("a node");
    assert_eq!(node.status, "warming");
    let provisioned = began.elapsed();
    let row = store
        .lab_list_live()
        .await
        .expect("inventory")
        .into_iter()
        .find(|r| r.idempotency_key == id)
        .expect("the node's host");
    let host_dir = spec.host_dir(&row.host_id);
    let evidence = || {
        format!(
            "agent said:\n{}\nmaillog:\n{}",
            std::fs::read_to_string(host_dir.join("agent.out")).unwrap_or_default(),
            std::fs::read_to_string(host_dir.join("maillog")).unwrap_or_default()
        )
    };
    // The verification's test message, counted first: what the burst adds is measured
    // from there.
    let before = open_day_when(&store, &node.id, |d| d.delivered >= 1, &evidence).await;
    assert_eq!(
        (before.bounced, before.deferred),
        (0, 0),
        "{before:?}\n{}",
        evidence()
    );

    // mailfleet's sink again, where the node routes the sink's domain, refusing on request.
    let sink_addr = SocketAddr::from((spec.gateway(), mailfleet::config::LAB_SINK_PORT));
    let mut sink = None;
    for _ in 0..40 {
        match mailfleet::access::sink::Sink::start(sink_addr, &cfg.verify.sink_domain).await {
            Ok(s) => {
                sink = Some(s);
                break;
            }
            // The engine's sink lets go of the port as its context ends.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let sink = sink.expect("the sink listens where the node sends");

    // The burst: 40 messages through the node's own Postfix, one recipient each; every
    // tenth to a recipient the sink refuses. Each has its own return path at the sink, so
    // each bounce's DSN can be told apart when it comes back.
    const BURST: i64 = 40;
    const REFUSED: i64 = 4;
    let mut script = String::from("set -e\n");
    let mut refused = Vec::new();
    for i in 1..=BURST {
        let to = if i % 10 == 0 {
            let a = sink.bounce_address_for(&format!("burst{i}"));
            refused.push(a.clone());
            a
        } else {
            sink.address_for(&format!("burst{i}"))
        };
        let from = sink.address_for(&format!("ret{i}"));
        script.push_str(&format!(
            "printf 'From: {from}\\nTo: {to}\\nSubject: burst {i}\\n\\nmessage {i} of the burst\\n' \
             | /usr/sbin/sendmail -f {from} {to}\n"
        ));
    }
    assert_eq!(refused.len() as i64, REFUSED);
    let id_key =
        mailfleet::access::provisioning_identity(&store, &cfg.dkim.key_env, chrono::Utc::now())
            .await
            .expect("identity");
    let session = ssh::connect(
        SocketAddr::from((row.ip.parse::<Ipv4Addr>().expect("ip"), 22)),
        None,
        &id_key,
        Duration::from_secs(10),
    )
    .await
    .expect("login");
    let sent = session
        .exec("sh -s", Some(script.as_bytes()))
        .await
        .expect("sendmail");
    assert!(sent.ok(), "{sent:?}");
    session.close().await;
    let burst_at = std::time::Instant::now();

    // Each refused message bounced for real: the sink refused its recipient, and the
    // node's Postfix sent its sender a DSN with the sink's 550.
    for (i, to) in (1..=BURST).filter(|i| i % 10 == 0).zip(&refused) {
        let dsn = sink
            .wait_for(&format!("ret{i}"), Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("no DSN for {to}\n{}", evidence()));
        let text = String::from_utf8_lossy(&dsn.data);
        assert!(
            dsn.mail_from.is_empty()
                && dsn
                    .header("Content-Type")
                    .is_some_and(|c| c.contains("report-type=delivery-status"))
                && text.contains(to.as_str())
                && text.contains("550 5.1.1"),
            "{dsn:?}\n{text}"
        );
    }
    let mut seen = sink.refused();
    seen.sort();
    let mut want = refused.clone();
    want.sort();
    assert_eq!(seen, want, "refused once each, nothing else");

    // The agent reads them in the node's Postfix log and serve counts them on its open day:
    // the 36 delivered, the 4 refused as bounced; the 4 DSNs the node's Postfix sent back
    // (from the null sender) are not its sending and are not counted.
    let after = open_day_when(
        &store,
        &node.id,
        |d| d.delivered >= before.delivered + BURST - REFUSED && d.bounced >= REFUSED,
        &evidence,
    )
    .await;
    let counted = burst_at.elapsed();
    assert_eq!(
        (after.sent, after.delivered, after.bounced, after.deferred),
        (
            before.sent + BURST,
            before.delivered + BURST - REFUSED,
            REFUSED,
            0
        ),
        "{after:?}\n{}",
        evidence()
    );

    // The day boundary: the node is paused, for its bounce rate, from those counts.
    let done = mailfleet::warmup::close_days(
        &store,
        &cfg,
        &mailfleet::warmup::Reported,
        chrono::Utc::now() + chrono::Duration::days(1),
    )
    .await
    .expect("the day closes");
    let sent_total = u64::try_from(after.sent).expect("sent");
    let rate = format!("{:.2}%", REFUSED as f64 * 100.0 / sent_total as f64);
    let reason = format!("bounces {rate} of {sent_total} sent, above 5.00%");
    assert_eq!(
        done,
        [(
            node.id.clone(),
            chrono::NaiveDate::parse_from_str(&after.date, "%Y-%m-%d").expect("date"),
            Decision::Pause {
                reason: reason.clone()
            }
        )]
    );
    let n = store.get_node(&node.id).await.expect("node");
    assert_eq!(
        (n.status.as_str(), n.status_reason.as_deref()),
        ("paused", Some(format!("warm-up: {reason}").as_str()))
    );
    let w = store
        .node_warmup(&node.id)
        .await
        .expect("warmup")
        .expect("its warm-up");
    assert_eq!(
        (w.status.as_str(), w.reason.as_deref(), w.day),
        ("paused", Some(reason.as_str()), 1)
    );
    let closed = w
        .log
        .iter()
        .find(|d| d.date == after.date)
        .expect("the closed day");
    assert_eq!(
        (
            closed.sent,
            closed.delivered,
            closed.bounced,
            closed.decision.as_deref(),
            closed.reason.as_deref()
        ),
        (
            after.sent,
            after.delivered,
            REFUSED,
            Some("paused"),
            Some(reason.as_str())
        )
    );
    let alerts: Vec<_> = store
        .alerts(true, 100)
        .await
        .expect("alerts")
        .into_iter()
        .filter(|a| a.kind == "bounce")
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (
            alerts[0].severity.as_str(),
            alerts[0].node_id.as_deref(),
            alerts[0].message.as_str()
        ),
        (
            "medium",
            Some(node.id.as_str()),
            format!(
                "mx1 bounce rate {:.1}% ({REFUSED} of {sent_total} sent) is above 5.0%: warm-up paused",
                REFUSED as f64 * 100.0 / sent_total as f64
            )
            .as_str()
        )
    );
    println!(
        "provisioned in {:.1} s; the burst counted {:.1} s after it was sent; {:.1} s in all",
        provisioned.as_secs_f64(),
        counted.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
}

/// The node's open warm-up day, once the node has a heartbeat and `done` holds for the day;
/// fails, with `evidence`, after 30 s.
async fn open_day_when(
    store: &mailfleet::store::Store,
    node_id: &str,
    done: impl Fn(&mailfleet::store::WarmupDay) -> bool,
    evidence: &dyn Fn() -> String,
) -> mailfleet::store::WarmupDay {
    let start = std::time::Instant::now();
    loop {
        let n = store.get_node(node_id).await.expect("node");
        let w = store
            .node_warmup(node_id)
            .await
            .expect("warmup")
            .expect("warming");
        let open = w
            .log
            .iter()
            .find(|d| Some(d.date.as_str()) == w.date.as_deref())
            .cloned();
        if let Some(day) = open.filter(|d| n.last_heartbeat.is_some() && done(d)) {
            return day;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not counted within 30 s: heartbeat {:?}, open day {:?}\n{}",
            n.last_heartbeat,
            w.log.last(),
            evidence()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
