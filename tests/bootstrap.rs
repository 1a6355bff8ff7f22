//! The configuration a sending node runs, checked by the real programs that will load it:
//! Postfix's `postconf`, OpenDKIM, nftables and Fail2Ban, on files rendered into a node's
//! folder as the lab lays them out.

use mailfleet::bootstrap::{render, write_files, Layout, NodeConfig};
use std::path::Path;
use std::process::Command;

/// The program, or `None` to skip where it is not installed (a newcomer's laptop); with
/// MAILFLEET_REQUIRE_SERVICES=1 (CI) a missing one fails the test.
fn program(name: &str, package: &str) -> Option<String> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p.display().to_string());
        }
    }
    if std::env::var("MAILFLEET_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{name} not installed and MAILFLEET_REQUIRE_SERVICES=1: run `apt-get install -y {package}`");
    }
    eprintln!("skipped: {name} is not installed");
    None
}

fn node() -> NodeConfig {
    let key = mailfleet::dkim::generate_rsa().expect("key");
    let pem = mailfleet::dkim::pkcs8_pem(&key.private_der).to_string();
    NodeConfig {
        hostname: "mx1.example.test".into(),
        domain: "example.test".into(),
        ip: "192.0.2.10".parse().expect("ip"),
        selector: "mf1".into(),
        dkim_key: Some(pem.clone()),
        cert_chain: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        cert_key: Some(pem),
        daily_cap: Some(2000),
        relay_networks: vec!["10.20.0.0/16".into()],
        sink: None,
        agent: None,
    }
}

fn written() -> (tempfile::TempDir, Layout) {
    let dir = tempfile::tempdir().expect("tmp");
    let layout = Layout::under(dir.path());
    let b = render(&node(), &layout);
    let wrote = write_files(&b).expect("write");
    assert_eq!(
        wrote.len(),
        b.files.len(),
        "every file written the first time"
    );
    assert!(
        write_files(&b).expect("again").is_empty(),
        "a second run writes nothing"
    );
    (dir, layout)
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn postfix_reads_the_main_cf_and_master_cf_without_a_complaint() {
    let Some(postconf) = program("postconf", "postfix") else {
        return;
    };
    let (_dir, l) = written();
    let dir = l.postfix_dir.display().to_string();
    let (ok, said) = run(&postconf, &["-c", &dir, "-n"]);
    assert!(ok, "{said}");
    assert!(!said.contains("warning"), "postconf warns:\n{said}");
    assert!(said.contains("myhostname = mx1.example.test"), "{said}");
    let (ok, said) = run(&postconf, &["-c", &dir, "-M"]);
    assert!(ok && !said.contains("warning"), "{said}");
    for service in ["smtp/inet", "submission/inet", "smtps/inet", "qmgr/unix"] {
        assert!(
            said.contains(service.split('/').next().unwrap_or("")),
            "{service}: {said}"
        );
    }
    let (ok, said) = run(
        &postconf,
        &[
            "-c",
            &dir,
            "-P",
            "submission/inet/smtpd_client_message_rate_limit",
        ],
    );
    assert!(ok, "{said}");
    assert!(
        said.trim().ends_with("= 84"),
        "2000 a day is 84 an hour: {said}"
    );
}

#[test]
fn opendkim_accepts_its_configuration_and_key() {
    let Some(opendkim) = program("opendkim", "opendkim") else {
        return;
    };
    let (_dir, l) = written();
    let (ok, said) = run(
        &opendkim,
        &["-n", "-x", &l.opendkim_conf.display().to_string()],
    );
    assert!(ok, "opendkim -n refused the config:\n{said}");
}

#[test]
fn nftables_accepts_the_firewall() {
    let Some(nft) = program("nft", "nftables") else {
        return;
    };
    let (_dir, l) = written();
    // A dry run: the ruleset is parsed and checked by the kernel, nothing is loaded.
    let (ok, said) = run(&nft, &["-c", "-f", &l.nftables_conf.display().to_string()]);
    if !ok && said.contains("Operation not permitted") {
        eprintln!("skipped: nft -c needs CAP_NET_ADMIN");
        return;
    }
    assert!(ok, "nft -c refused the ruleset:\n{said}");
}

#[test]
fn fail2ban_accepts_the_jails() {
    let Some(client) = program("fail2ban-client", "fail2ban") else {
        return;
    };
    if !Path::new("/etc/fail2ban/jail.conf").exists() {
        eprintln!("skipped: no /etc/fail2ban to test the jails against");
        return;
    }
    let (_dir, l) = written();
    // Fail2Ban's own configuration, with ours in its jail.d.
    let conf = tempfile::tempdir().expect("tmp");
    let (ok, said) = run(
        "cp",
        &["-a", "/etc/fail2ban/.", &conf.path().display().to_string()],
    );
    assert!(ok, "{said}");
    std::fs::copy(&l.fail2ban_jail, conf.path().join("jail.d/mailfleet.local")).expect("copy");
    let (ok, said) = run(&client, &["-c", &conf.path().display().to_string(), "-t"]);
    assert!(ok, "fail2ban-client -t refused the jails:\n{said}");
    assert!(said.contains("OK"), "{said}");
}
