//! The command line: parses arguments, loads the config, opens the store, and runs the
//! console, the headless engine, or one scripting command. Errors are one line on stderr
//! with a non-zero exit; a refused command writes nothing.

mod identity;
mod output;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{self, Config};
use crate::domain::validate::sanitize;
use crate::domain::RequestState;
use crate::engine::commands::CreateRequest;
use crate::engine::{self, Command, Ctx};
use crate::providers::Registry;
use crate::store::{Access, EventFilter, NodeFilter, RequestFilter, Store};
use clap::{Args, Parser, Subcommand};
use color_eyre::eyre::{eyre, Result, WrapErr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "mailfleet",
    version,
    about = "Terminal operations console for fleets of email-sending servers",
    after_help = after_help()
)]
pub struct Cli {
    /// Database: an SQLite file path (default: mailfleet.db in the XDG data dir), or a
    /// PostgreSQL URL (postgres://USER@HOST[:PORT]/DATABASE; the password from PGPASSWORD).
    #[arg(long, global = true, env = "MAILFLEET_DB", value_name = "PATH|URL")]
    pub db: Option<PathBuf>,
    /// Settings file, layered over the built-in defaults and your config.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Act for USER: only for accounts listed in [identity] impersonators; the history
    /// records "USER (via ACCOUNT)". Without it you are the account running mailfleet.
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Refuse every change.
    #[arg(long, global = true)]
    pub read_only: bool,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

fn after_help() -> String {
    let log = config::state_dir()
        .map(|d| d.join("mailfleet.log").display().to_string())
        .unwrap_or_else(|| "(no state directory on this system)".into());
    format!("Logs are written to {log} (level from MAILFLEET_LOG, default info).")
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create the database (and its directory), or bring an existing one's schema up to
    /// date. Only this, `demo` and `work` create a database.
    Init {
        #[arg(long)]
        json: bool,
    },
    /// Fill a fresh demo database (a temp file, or --db) and open the console on it.
    Demo {
        /// Nodes in the demo fleet (1 to 100000).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        nodes: u32,
        /// Seed for the fleet's randomness: the same seed gives the same fleet.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Run the engine headless: provision, roll back, detect stuck requests.
    Work {
        /// Exit once no request can make progress.
        #[arg(long)]
        until_idle: bool,
    },
    /// The engine headless, with an HTTPS listener ([serve] listen) for the nodes' agents,
    /// /healthz and /metrics; nodes whose agents go quiet are marked unhealthy.
    Serve,
    /// The monitoring agent a node runs: reports its health and deliveries to `serve`
    /// every interval, signed with the node's token (no database).
    Agent {
        /// `https://HOST:PORT` of `mailfleet serve`.
        #[arg(long)]
        server: String,
        /// The node's provisioning request id (its agent's name).
        #[arg(long)]
        id: String,
        /// A file holding the node's token.
        #[arg(long)]
        token_file: std::path::PathBuf,
        /// The PEM root serve's certificate chains to.
        #[arg(long)]
        ca_file: std::path::PathBuf,
        /// Where it keeps its sequence number, its place in the log and unsent reports.
        #[arg(long)]
        state_dir: std::path::PathBuf,
        /// The Postfix log to count deliveries in.
        #[arg(long)]
        maillog: Option<std::path::PathBuf>,
        /// The mail queue's folder (its disk's free space is reported).
        #[arg(long, default_value = "/var/spool/postfix")]
        queue_dir: std::path::PathBuf,
        /// A Maildir receiving complaint feedback (ARF reports from feedback loops): each
        /// abuse report delivered there counts as a complaint.
        #[arg(long)]
        feedback_maildir: Option<std::path::PathBuf>,
        /// How often it reports ("30s", "1m").
        #[arg(long, default_value = "30s")]
        interval: String,
    },
    /// Provisioning requests.
    #[command(subcommand)]
    Request(RequestCmd),
    /// Sending nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Tenants: quota limits and use.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Clusters: capacity, use, health; connectivity tests.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The database itself: `db migrate-to postgres://...`.
    #[command(subcommand)]
    Db(DbCmd),
    /// The event outbox, oldest first.
    Events {
        /// Keep printing new events as they are written.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// How many of the newest events to print first.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Only events whose name contains this.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Only events of this request (id prefix).
        #[arg(long)]
        request: Option<String>,
    },
    /// Warm-up plans and each node's warm-up.
    #[command(subcommand)]
    Warmup(WarmupCmd),
    /// DNS records for sending nodes.
    #[command(subcommand)]
    Dns(DnsCmd),
    /// DKIM keys (the private halves never leave their store in the clear).
    #[command(subcommand)]
    Dkim(DkimCmd),
    /// TLS certificates (their keys never leave their store in the clear).
    #[command(subcommand)]
    Tls(TlsCmd),
    /// What a sending node runs (Postfix, OpenDKIM, its certificate, firewall, Fail2Ban).
    #[command(subcommand)]
    Bootstrap(BootstrapCmd),
    /// The lab of real hosts on this machine (root): network namespaces on a bridge.
    #[command(subcommand)]
    Lab(LabCmd),
    /// Alerts (blocklist listings, bounce rates, unusable zones), newest first.
    Alerts {
        #[command(subcommand)]
        action: Option<AlertsCmd>,
        /// Resolved ones too.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// DNS blocklists: one-shot checks and the configured zones.
    #[command(subcommand)]
    Blocklist(BlocklistCmd),
    /// Compare the provider's inventory with the store: orphans and missing instances.
    Reconcile {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RequestCmd {
    /// Ask for a new sending node.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        region: String,
        #[arg(long)]
        plan: String,
        /// Hostname label, e.g. node-us-east-045.
        #[arg(long)]
        label: String,
        /// Mail domain for the node's hostname and records.
        #[arg(long)]
        domain: Option<String>,
        /// A request that must complete first (id prefix); repeatable.
        #[arg(long = "depends-on", value_name = "ID")]
        depends_on: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Create a batch of requests from a TOML or JSON file whose requests refer to each
    /// other by key; all of them or, if any is refused, none.
    Import {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List requests.
    List {
        #[arg(long, value_parser = parse_state)]
        state: Option<RequestState>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Everything about one request.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a request waiting for approval.
    Approve(Decision),
    /// Reject a request (a reason is required).
    Reject(Decision),
    /// Stop a completed service.
    Suspend(Decision),
    /// Restart a suspended service.
    Reactivate(Decision),
    /// Tear down an unfinished or failed request.
    Rollback(Decision),
    /// Tear down a completed or suspended service.
    Deprovision(Decision),
    /// Enter the access details of a request waiting for them (awaiting_input: a manual
    /// provider's vendor-managed server); the pipeline goes on.
    Provide {
        id: String,
        /// The server's public IPv4 address.
        #[arg(long)]
        ip: String,
        /// The port its SSH server listens on.
        #[arg(long = "ssh-port")]
        ssh_port: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct Decision {
    pub id: String,
    #[arg(long)]
    pub reason: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// Send a synthetic alert through the configured sinks ([alerting]) now, and say what
    /// became of it.
    Test,
    /// Acknowledge an open alert: on-call has it. Recorded with who, when and the note.
    Ack {
        /// The alert's id (or a unique prefix of it, as lists show it).
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Keep an open alert from the alert sinks for a while (it stays listed, marked
    /// silenced); `--for 0s` ends a silence.
    Silence {
        id: String,
        /// How long: "30m", "2h", "1d" (at most 7d).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (required): what is being done about it.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List nodes.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One node.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Issue the node a new agent token (the old one stops working) and write it to a
    /// file, mode 0600, for installing on the node.
    AgentToken {
        id: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Take a warming or active node out of rotation.
    Pause {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Put a paused node back in rotation, or bring one in maintenance back.
    Resume { id: String },
    /// Take a warming or active node out of rotation for work on it (`node resume` brings
    /// it back).
    Maintenance {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Check the node's IP on the blocklists now, and act on the answers.
    Check { id: String },
    /// Move the node to another plan: files a resize request (upgrade, check, confirm;
    /// rolled back by reverting the upgrade). Watch it with `request show`.
    Resize {
        id: String,
        #[arg(long)]
        plan: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Make the lab's bridge and folder ([providers.lab]).
    Up,
    /// The bridge and each host: its address and whether its SSH server runs.
    Status,
    /// Remove every host (namespace, processes, files), the bridge and the folder.
    Down,
}

#[derive(Debug, Subcommand)]
pub enum BootstrapCmd {
    /// Print every file and command the node's bootstrap would install and run (its
    /// private keys named, never shown).
    Render { node: String },
}

#[derive(Debug, Subcommand)]
pub enum DkimCmd {
    /// Make an RSA 2048 key for a domain and print its DNS record.
    New {
        domain: String,
        /// Default: [dkim] selector.
        #[arg(long)]
        selector: Option<String>,
        /// Make an Ed25519 key too (selector SELECTOR-ed), published beside the RSA one.
        #[arg(long)]
        ed25519: bool,
        #[arg(long)]
        json: bool,
    },
    /// The keys: domain, selector, where the private half is kept (never the key itself).
    List {
        #[arg(long)]
        json: bool,
    },
    /// New keys under a new selector: published and checked in the zone first, then the old
    /// keys are retired and their records removed.
    Rotate {
        domain: String,
        /// Leave the old selector's record in the zone (mail signed with it still verifies).
        #[arg(long)]
        keep_old: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TlsCmd {
    /// Each node's certificate: names, issuer, expiry, and whether renewal is due.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DnsCmd {
    /// The records a node needs (A, MX, SPF, DKIM, DMARC; MTA-STS and TLS-RPT on request),
    /// as a zone-file snippet or JSON. Changes nothing.
    Plan {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        hostname: String,
        #[arg(long)]
        ip: String,
        /// DKIM selector (default: the domain's newest key in the database, else
        /// [dkim] selector).
        #[arg(long)]
        selector: Option<String>,
        /// The DKIM RSA public key (base64 SubjectPublicKeyInfo, the p= value). Without
        /// it, the domain's key made by `dkim new` (or the configure step) is used when the
        /// database holds one; else the DKIM record is left out.
        #[arg(long, value_name = "BASE64")]
        dkim_public_key: Option<String>,
        #[arg(long, value_enum, default_value = "none")]
        dmarc: DmarcArg,
        /// Where DMARC aggregate reports go (default dmarc-reports@DOMAIN).
        #[arg(long, value_name = "ADDRESS")]
        dmarc_rua: Option<String>,
        /// More SPF mechanisms, e.g. include:_spf.example.net (repeatable).
        #[arg(long = "spf", value_name = "MECHANISM")]
        spf: Vec<String>,
        /// Add an MTA-STS record with this policy id.
        #[arg(long, value_name = "ID")]
        mta_sts: Option<String>,
        /// Add a TLS-RPT record reporting to this address.
        #[arg(long, value_name = "ADDRESS")]
        tls_rpt: Option<String>,
        #[arg(long, default_value_t = 300)]
        ttl: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DmarcArg {
    None,
    Quarantine,
    Reject,
}

#[derive(Debug, Subcommand)]
pub enum WarmupCmd {
    /// The warm-up plans: built-in and from the config.
    Plans {
        #[arg(long)]
        json: bool,
    },
    /// One plan's daily caps.
    Plan {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// A node's warm-up and its daily log.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Resume a node's warm-up (a paused node goes back into rotation).
    Resume {
        id: String,
        /// Where to start again: the current day, the start of its week, or day 1.
        #[arg(long, value_enum, default_value = "day")]
        from: ResumeArg,
    },
    /// Stretch (FACTOR above 1) or compress (below 1) the rest of a node's warm-up.
    Pace { id: String, factor: f64 },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ResumeArg {
    Day,
    Week,
    Start,
}

#[derive(Debug, Subcommand)]
pub enum BlocklistCmd {
    /// Check IPs on the blocklists now. Listed IPs are an answer, not a failure: the exit
    /// status is 0 unless the input is wrong.
    Check {
        /// IPv4 addresses.
        #[arg(required = true, value_name = "IP")]
        ips: Vec<String>,
        /// Only these zones (comma-separated); a zone not in the config is read with
        /// generic codes.
        #[arg(long, value_delimiter = ',', value_name = "ZONE,...")]
        zones: Vec<String>,
        /// One JSON array of {ip, zone, status, code, meaning, reason}.
        #[arg(long)]
        json: bool,
    },
    /// The zones checked, with severity and how their codes are read.
    Zones {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Every tenant with its quota use and limits.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// Copies this SQLite database (--db) into an empty PostgreSQL database, checked by
    /// row counts and checksums before it commits; the SQLite file is left as it is.
    MigrateTo {
        /// postgres://USER@HOST[:PORT]/DATABASE (the password from PGPASSWORD).
        url: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Every cluster with its capacity, what is reserved on it, and its health.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One round trip to the cluster's provider: success and latency in ms.
    Test {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

fn parse_state(s: &str) -> Result<RequestState, String> {
    s.parse()
}

/// The entry point: runs the CLI and turns any error into one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = color_eyre::install();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let chain: Vec<String> = e
                .chain()
                .map(|c| sanitize(&c.to_string()).into_owned())
                .collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

/// Everything a command needs.
pub struct Env {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub actor: String,
    pub clock: SharedClock,
}

impl Env {
    /// The engine's context: the composition root, where each cluster's provider is made
    /// from the config. A provider that cannot be used (a key not set) is an error here.
    pub fn ctx(&self) -> Result<Arc<Ctx>> {
        let providers = Registry::build(&self.cfg, &self.store, &self.clock)
            .map_err(|e| eyre!("config: {e}"))?;
        Ok(Ctx::new(
            self.store.clone(),
            providers,
            self.clock.clone(),
            self.cfg.clone(),
        ))
    }
}

fn db_path(cli: &Cli) -> Result<PathBuf> {
    match &cli.db {
        Some(p) => {
            let s = p.to_string_lossy();
            if crate::store::pg::is_url(&s) {
                return Ok(PathBuf::from(s.into_owned()));
            }
            Ok(PathBuf::from(
                s.strip_prefix("sqlite://").unwrap_or(&s).to_string(),
            ))
        }
        None => config::default_db_path()
            .ok_or_else(|| eyre!("--db: no data directory on this system; pass --db PATH")),
    }
}

/// `mailfleet lab up|status|down`.
fn lab(cli: &Cli, lc: &LabCmd) -> Result<ExitCode> {
    let cfg = config::load(cli.config.as_deref())?;
    let spec = cfg.providers.lab.spec()?;
    let dir = sanitize(&spec.dir.display().to_string()).into_owned();
    match lc {
        LabCmd::Up => {
            refuse_read_only(cli)?;
            spec.up()
                .map_err(|e| eyre!("{}", sanitize(&e.to_string())))?;
            println!(
                "lab up: bridge {} at {}/{}, folder {dir}",
                spec.bridge,
                spec.gateway(),
                spec.subnet.1
            );
        }
        LabCmd::Down => {
            refuse_read_only(cli)?;
            let n = spec
                .hosts()
                .map_err(|e| eyre!("{}", sanitize(&e.to_string())))?
                .len();
            spec.down()
                .map_err(|e| eyre!("{}", sanitize(&e.to_string())))?;
            println!(
                "lab down: {n} host(s), bridge {} and {dir} removed",
                spec.bridge
            );
        }
        LabCmd::Status => {
            let st = spec
                .status()
                .map_err(|e| eyre!("{}", sanitize(&e.to_string())))?;
            println!(
                "bridge {} {} (gateway {}), folder {dir}",
                spec.bridge,
                if st.bridge_up { "up" } else { "absent" },
                st.gateway
            );
            for h in &st.hosts {
                println!(
                    "  {}  {}  netns {}  sshd {}",
                    h.id,
                    h.ip,
                    h.netns,
                    h.sshd_pid
                        .map(|p| format!("running (pid {p})"))
                        .unwrap_or_else(|| "not running".into())
                );
            }
            if st.hosts.is_empty() {
                println!("  no hosts");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a node's bootstrap is made from, as the store knows it; its private keys left in
/// the store (a preview names them).
async fn node_config(env: &Env, node: &str) -> Result<crate::bootstrap::NodeConfig> {
    let id = env.store.resolve_node_id(node).await?;
    let n = env.store.get_node(&id).await?;
    let domain = match &n.request_id {
        Some(r) => env
            .store
            .get_request(r)
            .await?
            .and_then(|r| r.domain)
            .unwrap_or_else(|| crate::domain::hostname::DEFAULT_DOMAIN.to_string()),
        None => crate::domain::hostname::DEFAULT_DOMAIN.to_string(),
    };
    let ip = n
        .ip_address
        .as_deref()
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| eyre!("node {}: no IPv4 address recorded", sanitize(&n.label)))?;
    let selector = env
        .store
        .dkim_keys()
        .await?
        .into_iter()
        .rfind(|k| {
            k.domain == domain
                && k.retired_at.is_none()
                && k.algorithm == crate::dkim::Algorithm::Rsa2048.as_str()
        })
        .map(|k| k.selector)
        .ok_or_else(|| {
            eyre!(
                "node {}: the domain {} has no DKIM key (mailfleet dkim new {})",
                sanitize(&n.label),
                sanitize(&domain),
                sanitize(&domain)
            )
        })?;
    let warmup = env.store.node_warmup(&id).await?;
    let daily_cap = warmup
        .filter(|w| w.status != "completed")
        .and_then(|w| u64::try_from(w.cap).ok());
    Ok(crate::bootstrap::NodeConfig {
        hostname: n.hostname.clone(),
        domain,
        ip,
        selector,
        dkim_key: None,
        cert_chain: None,
        cert_key: None,
        daily_cap,
        relay_networks: vec![],
        sink: None,
        agent: (!env.cfg.serve.agent_url.is_empty()).then(|| crate::bootstrap::AgentInstall {
            url: env.cfg.serve.agent_url.clone(),
            id: n.request_id.clone().unwrap_or_default(),
            token: None,
            root_pem: std::fs::read_to_string(crate::serve::own_dir(&env.store).join("root.pem"))
                .unwrap_or_else(|_| "(serve's root, made when serve first starts)\n".into()),
            interval_secs: env.cfg.serve.heartbeat_interval.as_secs().max(1),
            program: crate::bootstrap::AGENT_PROGRAM.into(),
        }),
    })
}

/// Where a node keeps its files: a lab host's under its folder, any other in the Debian
/// packages' places.
async fn node_layout(env: &Env, node: &str) -> Result<crate::bootstrap::Layout> {
    let id = env.store.resolve_node_id(node).await?;
    let n = env.store.get_node(&id).await?;
    let lab = n
        .cluster
        .as_deref()
        .and_then(|c| env.cfg.clusters.iter().find(|k| k.name == c))
        .is_some_and(|c| c.provider == "lab");
    if let (true, Some(instance)) = (lab, n.provider_id.as_deref()) {
        if let Some(row) = env.store.lab_get(instance).await? {
            let spec = env.cfg.providers.lab.spec()?;
            return Ok(crate::bootstrap::Layout::lab(&spec.host_dir(&row.host_id)));
        }
    }
    Ok(crate::bootstrap::Layout::debian())
}

/// A domain's DKIM public keys kept in the database: (selector, base64 key).
#[derive(Debug, Default)]
struct StoredDkim {
    rsa: Option<(String, String)>,
    ed25519: Option<(String, String)>,
}

/// The domain's keys in use (not retired), for `dns plan`: the RSA key of `selector`, or
/// the newest one, and the Ed25519 key beside it (`SELECTOR-ed`). Nothing when the
/// database does not exist: planning needs none.
async fn stored_dkim(cli: &Cli, domain: &str, selector: Option<&str>) -> Result<StoredDkim> {
    let path = db_path(cli)?;
    let on_pg = crate::store::pg::is_url(&path.to_string_lossy());
    if !on_pg && !path.exists() {
        return Ok(StoredDkim::default());
    }
    let cfg = config::load(cli.config.as_deref())?;
    let store = Store::open_read_only(&path, &cfg.store).await?;
    let want = domain.trim_end_matches('.').to_ascii_lowercase();
    let keys: Vec<_> = store
        .dkim_keys()
        .await?
        .into_iter()
        .filter(|k| k.domain == want && k.retired_at.is_none())
        .collect();
    // Oldest first: the last match is the newest.
    let rsa = keys
        .iter()
        .rfind(|k| {
            k.algorithm == crate::dkim::Algorithm::Rsa2048.as_str()
                && selector.is_none_or(|s| k.selector == s)
        })
        .map(|k| (k.selector.clone(), k.public_key.clone()));
    let ed25519 = rsa.as_ref().and_then(|(s, _)| {
        let ed = format!("{s}-ed");
        keys.iter()
            .find(|k| k.selector == ed && k.algorithm == crate::dkim::Algorithm::Ed25519.as_str())
            .map(|k| (ed.clone(), k.public_key.clone()))
    });
    Ok(StoredDkim { rsa, ed25519 })
}

fn init_logging(to_stderr: bool) {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let file = config::state_dir().and_then(|d| {
        std::fs::create_dir_all(&d).ok()?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("mailfleet.log"))
            .ok()
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let _ = match (file, to_stderr) {
        (Some(f), true) => builder
            .with_writer(std::sync::Mutex::new(f).and(std::io::stderr))
            .try_init(),
        (Some(f), false) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        (None, true) => builder.with_writer(std::io::stderr).try_init(),
        (None, false) => Ok(()),
    };
}

/// How a command opens the database: only `init`, `demo` and `work` create one; commands
/// that only read never write (nor record the catalog).
fn access_of(cli: &Cli) -> Access {
    if matches!(cli.command, Some(Cmd::Demo { .. })) {
        return Access::Create;
    }
    if cli.read_only {
        return Access::ReadOnly;
    }
    let Some(command) = &cli.command else {
        // The console changes things.
        return Access::Write;
    };
    let reads = match command {
        Cmd::Init { .. } | Cmd::Demo { .. } | Cmd::Work { .. } | Cmd::Serve => {
            return Access::Create
        }
        Cmd::Request(rc) => matches!(rc, RequestCmd::List { .. } | RequestCmd::Show { .. }),
        Cmd::Node(nc) => matches!(nc, NodeCmd::List { .. } | NodeCmd::Show { .. }),
        Cmd::Warmup(wc) => matches!(
            wc,
            WarmupCmd::Plans { .. } | WarmupCmd::Plan { .. } | WarmupCmd::Show { .. }
        ),
        Cmd::Dkim(dc) => matches!(dc, DkimCmd::List { .. }),
        // Removes the challenge records a killed order left (from the database, with the
        // simulated DNS).
        Cmd::Reconcile { .. } => false,
        // Acknowledging and silencing write to the alert.
        Cmd::Alerts {
            action: Some(AlertsCmd::Ack { .. } | AlertsCmd::Silence { .. }),
            ..
        } => false,
        Cmd::Tenant(_)
        | Cmd::Cluster(_)
        | Cmd::Db(_)
        | Cmd::Events { .. }
        | Cmd::Alerts { .. }
        | Cmd::Tls(_)
        | Cmd::Bootstrap(_)
        | Cmd::Lab(_)
        | Cmd::Agent { .. }
        | Cmd::Dns(_)
        | Cmd::Blocklist(_) => true,
    };
    if reads {
        Access::Read
    } else {
        Access::Write
    }
}

async fn open(cli: &Cli) -> Result<Env> {
    open_at(cli, db_path(cli)?).await.map(|(env, _)| env)
}

/// Opens the database at `path` as the command needs; a command that changes things
/// records the config's catalog first.
async fn open_at(cli: &Cli, path: PathBuf) -> Result<(Env, crate::store::Opened)> {
    let cfg = Arc::new(config::load(cli.config.as_deref())?);
    // Who acts is settled before anything is opened (an unknown --as changes nothing).
    let mut actor = identity::actor(&cfg, cli.as_user.as_deref())?.to_string();
    let access = access_of(cli);
    let (store, opened) = Store::open_as(&path, &cfg.store, access).await?;
    if store.dialect() == crate::store::sql::Dialect::Postgres {
        // On a shared PostgreSQL the one who acts is the database role the server
        // authenticated, not this host's account (see `identity::database_actor`).
        let role = store.session_user().await?;
        actor = identity::database_actor(&cfg, &role, cli.as_user.as_deref())?.to_string();
    }
    let clock: SharedClock = Arc::new(SystemClock);
    if matches!(access, Access::Create | Access::Write) {
        store
            .sync_catalog(&cfg, clock.now())
            .await
            .wrap_err("recording the catalog")?;
    }
    Ok((
        Env {
            cfg,
            store,
            actor,
            clock,
        },
        opened,
    ))
}

/// `mailfleet init`: creates the database, or brings its schema up to date; says which.
async fn init(cli: &Cli, json: bool) -> Result<()> {
    let path = db_path(cli)?;
    let (env, opened) = open_at(cli, path.clone()).await?;
    env.store.settled().await;
    let shown = sanitize(&path.display().to_string()).into_owned();
    let schema = crate::store::SCHEMA_VERSION;
    if json {
        return output::print_json(&serde_json::json!({
            "path": path.display().to_string(), "created": opened.created,
            "applied": opened.applied, "schema": schema,
        }));
    }
    if opened.created {
        println!("created {shown} (schema {schema})");
    } else if opened.applied.is_empty() {
        println!("{shown} is up to date (schema {schema})");
    } else {
        let list: Vec<String> = opened.applied.iter().map(i64::to_string).collect();
        println!(
            "{shown}: brought up to date (schema {schema}; applied {})",
            list.join(", ")
        );
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<ExitCode> {
    init_logging(matches!(cli.command, Some(Cmd::Work { .. })));
    let Some(command) = &cli.command else {
        let env = open(&cli).await?;
        crate::tui::run(env, cli.read_only).await?;
        return Ok(ExitCode::SUCCESS);
    };
    if let Cmd::Demo { nodes, seed } = command {
        return demo(&cli, *nodes as usize, *seed).await;
    }
    if let Cmd::Db(DbCmd::MigrateTo { url, json }) = command {
        refuse_read_only(&cli)?;
        return migrate_to(&cli, url, *json).await;
    }
    if let Cmd::Init { json } = command {
        refuse_read_only(&cli)?;
        init(&cli, *json).await?;
        return Ok(ExitCode::SUCCESS);
    }
    // The lab is machinery on this machine: no database.
    if let Cmd::Lab(lc) = command {
        return lab(&cli, lc);
    }
    // The agent runs on a node: no database either.
    if let Cmd::Agent {
        server,
        id,
        token_file,
        ca_file,
        state_dir,
        maillog,
        queue_dir,
        feedback_maildir,
        interval,
    } = command
    {
        let interval = config::parse_duration(interval).map_err(|e| eyre!("--interval: {e}"))?;
        if interval.is_zero() {
            return Err(eyre!("--interval: must be greater than zero"));
        }
        if !server.starts_with("https://") {
            return Err(eyre!(
                "--server: {:?} is not an https:// address",
                sanitize(server)
            ));
        }
        let settings = crate::agent::Settings {
            server: server.clone(),
            agent: id.clone(),
            token_file: token_file.clone(),
            ca_file: ca_file.clone(),
            state_dir: state_dir.clone(),
            maillog: maillog.clone(),
            queue_dir: queue_dir.clone(),
            feedback_maildir: feedback_maildir.clone(),
            interval,
        };
        tracing::info!(server = %settings.server, agent = %settings.agent, "agent starting");
        crate::agent::run(settings, shutdown_signal())
            .await
            .map_err(|e| eyre!("{}", sanitize(&e)))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Cmd::Dns(DnsCmd::Plan {
        domain,
        hostname,
        ip,
        selector,
        dkim_public_key,
        dmarc,
        dmarc_rua,
        spf,
        mta_sts,
        tls_rpt,
        ttl,
        json,
    }) = command
    {
        use crate::domain::records::{plan, zone_snippet, DmarcPolicy, RecordInput};
        let stored = match dkim_public_key {
            Some(_) => StoredDkim::default(),
            // Planning needs no database: one that cannot be read is said, then done without.
            None => match stored_dkim(&cli, domain, selector.as_deref()).await {
                Ok(s) => s,
                Err(e) => {
                    let why: Vec<String> = e
                        .chain()
                        .map(|c| sanitize(&c.to_string()).into_owned())
                        .collect();
                    eprintln!(
                        "mailfleet: no stored DKIM key used (the database cannot be read: {})",
                        why.join(": ")
                    );
                    StoredDkim::default()
                }
            },
        };
        let selector = match (selector, &stored.rsa) {
            (Some(s), _) => s.clone(),
            (None, Some((s, _))) => s.clone(),
            (None, None) => config::load(cli.config.as_deref())?.dkim.selector,
        };
        if let Some((s, _)) = &stored.rsa {
            eprintln!(
                "mailfleet: DKIM key {s} of {} from the database",
                sanitize(domain)
            );
        }
        let input = RecordInput {
            domain: domain.clone(),
            hostname: hostname.clone(),
            ip: ip.clone(),
            selector,
            dkim_rsa: dkim_public_key
                .clone()
                .or_else(|| stored.rsa.as_ref().map(|(_, k)| k.clone())),
            dkim_ed25519: stored.ed25519.clone(),
            dmarc: match dmarc {
                DmarcArg::None => DmarcPolicy::None,
                DmarcArg::Quarantine => DmarcPolicy::Quarantine,
                DmarcArg::Reject => DmarcPolicy::Reject,
            },
            dmarc_rua: dmarc_rua.clone(),
            spf_extra: spf.clone(),
            mta_sts_id: mta_sts.clone(),
            tls_rpt_rua: tls_rpt.clone(),
            ttl: *ttl,
        };
        let records = plan(&input).map_err(|e| eyre!("{}", sanitize(&e.to_string())))?;
        if *json {
            output::print_json(&serde_json::to_value(&records)?)?;
        } else {
            println!("{}", zone_snippet(&records));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Cmd::Blocklist(bc) = command {
        // Needs the config only: no database is opened.
        let cfg = config::load(cli.config.as_deref())?;
        return blocklist(&cfg, bc).await;
    }
    let env = open(&cli).await?;
    match command {
        Cmd::Demo { .. }
        | Cmd::Init { .. }
        | Cmd::Db(_)
        | Cmd::Blocklist(_)
        | Cmd::Dns(_)
        | Cmd::Lab(_)
        | Cmd::Agent { .. } => {}
        Cmd::Work { until_idle } => {
            refuse_read_only(&cli)?;
            work(&env, *until_idle).await?;
        }
        Cmd::Serve => {
            refuse_read_only(&cli)?;
            serve(&env).await?;
        }
        Cmd::Request(rc) => request(&cli, &env, rc).await?,
        Cmd::Node(nc) => node(&cli, &env, nc).await?,
        Cmd::Warmup(wc) => warmup(&cli, &env, wc).await?,
        Cmd::Dkim(dc) => dkim(&cli, &env, dc).await?,
        Cmd::Bootstrap(BootstrapCmd::Render { node }) => {
            let config = node_config(&env, node).await?;
            let layout = node_layout(&env, node).await?;
            let bundle = crate::bootstrap::render(&config, &layout);
            // Line by line: what the store gave (a hostname, a domain) cannot put a control
            // sequence on the terminal, and the files keep their lines.
            for line in crate::bootstrap::describe(&bundle).lines() {
                println!("{}", sanitize(line));
            }
        }
        Cmd::Tls(TlsCmd::Status { json }) => {
            let list = env.store.certificates(None).await?;
            output::cert_list(
                &list,
                *json,
                env.clock.now(),
                i64::from(env.cfg.tls.renew_before_days),
            )?;
        }
        Cmd::Alerts {
            action: Some(AlertsCmd::Test),
            ..
        } => {
            let Some(router) = crate::alerting::Router::from_config(&env.cfg.alerting)
                .map_err(|e| eyre!("{}", sanitize(&e)))?
            else {
                return Err(eyre!(
                    "alerting: no sink is configured (set [alerting] email_relay and email_to)"
                ));
            };
            let said = router
                .send(&crate::alerting::test_alert(env.clock.now()))
                .await
                .map_err(|e| eyre!("the test alert was not sent: {}", sanitize(&e)))?;
            println!("test alert {}", sanitize(&said));
        }
        Cmd::Alerts {
            action: Some(AlertsCmd::Ack { id, reason }),
            ..
        } => {
            refuse_read_only(&cli)?;
            let command = Command::AckAlert {
                id: id.clone(),
                note: reason.clone(),
            };
            let outcome = engine::commands::execute(&env.ctx()?, &env.actor, command).await?;
            println!("{}", sanitize(&outcome.describe()));
        }
        Cmd::Alerts {
            action:
                Some(AlertsCmd::Silence {
                    id,
                    duration,
                    reason,
                }),
            ..
        } => {
            refuse_read_only(&cli)?;
            let duration = crate::config::parse_duration(duration)
                .map_err(|e| eyre!("--for: {}", sanitize(&e)))?;
            let command = Command::SilenceAlert {
                id: id.clone(),
                duration,
                reason: reason.clone(),
            };
            let outcome = engine::commands::execute(&env.ctx()?, &env.actor, command).await?;
            println!("{}", sanitize(&outcome.describe()));
        }
        Cmd::Alerts {
            action: None,
            all,
            limit,
            json,
        } => {
            let list = env.store.alerts(!*all, *limit).await?;
            output::alert_list(&list, *json, env.clock.now())?;
        }
        Cmd::Tenant(TenantCmd::List { json }) => {
            let list = engine::clusters::tenants(&env.store, &env.cfg).await?;
            output::tenant_list(&list, *json)?;
        }
        Cmd::Cluster(ClusterCmd::List { json }) => {
            let list = engine::clusters::clusters(&env.store, &env.cfg).await?;
            output::cluster_list(&list, *json)?;
        }
        Cmd::Cluster(ClusterCmd::Test { name, json }) => {
            let report = engine::clusters::test(&*env.ctx()?, name).await?;
            if *json {
                output::print_json(&serde_json::to_value(&report)?)?;
            } else {
                println!("{}", report.describe());
            }
            if !report.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Events {
            follow,
            json,
            limit,
            name,
            tenant,
            request,
        } => {
            let request_id = match request {
                Some(p) => Some(env.store.resolve_request_id(p).await?),
                None => None,
            };
            let filter = EventFilter {
                name: name.clone(),
                tenant: tenant.clone(),
                request_id,
                limit: *limit,
                ..Default::default()
            };
            output::events(&env.store, filter, *follow, *json).await?;
        }
        Cmd::Reconcile { json } => {
            // --read-only changes nothing, at the DNS provider either: leftovers are listed.
            let report = engine::reconcile::reconcile_with(&*env.ctx()?, !cli.read_only).await?;
            output::reconcile(&report, *json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `mailfleet db migrate-to URL`: this SQLite history into an empty PostgreSQL database.
async fn migrate_to(cli: &Cli, url: &str, json: bool) -> Result<ExitCode> {
    let from = db_path(cli)?;
    if crate::store::pg::is_url(&from.to_string_lossy()) {
        return Err(eyre!(
            "--db: migrate-to copies an SQLite file; --db names a PostgreSQL database"
        ));
    }
    if !crate::store::pg::is_url(url) {
        return Err(eyre!("URL: want postgres://USER@HOST[:PORT]/DATABASE"));
    }
    if !from.exists() {
        return Err(eyre!(
            "--db: {} does not exist",
            sanitize(&from.display().to_string())
        ));
    }
    let cfg = config::load(cli.config.as_deref())?;
    // Brings the file's schema up to date first (the copy is of the current schema).
    let source = Store::open_as(&from, &cfg.store, Access::Write).await?.0;
    source.settled().await;
    let base = source.base_dir();
    drop(source);
    let (url_owned, store_cfg) = (url.to_owned(), cfg.store.clone());
    let report = tokio::task::spawn_blocking(move || {
        crate::store::migrate_to(&from, &url_owned, &store_cfg, &base)
    })
    .await
    .map_err(|e| eyre!("the copy stopped: {e}"))??;
    let total: u64 = report.iter().map(|c| c.rows).sum();
    if json {
        output::print_json(&serde_json::json!({ "to": url, "rows": total, "tables": report }))?;
    } else {
        for c in &report {
            println!("{:<22} {:>9} rows  {}", c.table, c.rows, &c.checksum[..16]);
        }
        println!(
            "copied {total} rows into {}; counts and checksums match. Use --db {} from now on.",
            sanitize(url),
            sanitize(url)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `mailfleet demo`: a fresh demo database, then the console on it.
async fn demo(cli: &Cli, nodes: usize, seed: u64) -> Result<ExitCode> {
    let path = match &cli.db {
        Some(_) => db_path(cli)?,
        None => std::env::temp_dir().join(format!("mailfleet-demo-{}.db", std::process::id())),
    };
    if crate::store::pg::is_url(&path.to_string_lossy()) {
        return Err(eyre!(
            "--db: the demo builds its fleet in an SQLite file of its own; give a file path or leave --db out"
        ));
    }
    crate::demo::prepare_path(&path).await?;
    let (mut env, _) = open_at(cli, path.clone()).await?;
    eprintln!(
        "mailfleet: building a demo fleet of {nodes} nodes in {} …",
        path.display()
    );
    let spec = crate::demo::DemoSpec { nodes, seed };
    // Big demo fleets get quotas and capacity to match, so new orders still fit.
    env.cfg = Arc::new(crate::demo::config_for(&env.cfg, &spec));
    env.store.sync_catalog(&env.cfg, env.clock.now()).await?;
    let summary = crate::demo::generate(&env.store, &env.cfg, &spec, env.clock.now()).await?;
    tracing::info!(
        nodes = summary.nodes,
        requests = summary.requests,
        events = summary.events,
        "demo fleet ready"
    );
    crate::tui::run(env, cli.read_only).await?;
    eprintln!("mailfleet: the demo database is {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn refuse_read_only(cli: &Cli) -> Result<()> {
    if cli.read_only {
        return Err(eyre!("--read-only: this command changes the fleet"));
    }
    Ok(())
}

async fn work(env: &Env, until_idle: bool) -> Result<()> {
    let ctx = env.ctx()?;
    // A DNS provider or CA that cannot be used would fail every request: say so now.
    if let Some(p) = ctx.mail.problem() {
        return Err(eyre!("{}", sanitize(&p)));
    }
    tracing::info!(owner = %ctx.owner, db = %env.store.path().display(), "engine starting");
    if until_idle {
        return until_idle_report(&engine::run_until_idle(ctx).await);
    }
    let alerts = alert_router(env)?;
    let handle = engine::spawn(ctx);
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight steps");
    if let Some(a) = alerts {
        a.abort();
    }
    handle.shutdown().await;
    Ok(())
}

/// Sends alerts to the configured sinks while the engine runs (`work`, `serve`).
fn alert_router(env: &Env) -> Result<Option<tokio::task::JoinHandle<()>>> {
    Ok(crate::alerting::Router::from_config(&env.cfg.alerting)
        .map_err(|e| eyre!("{}", sanitize(&e)))?
        .map(|r| {
            tokio::spawn(crate::alerting::run(
                env.store.clone(),
                r,
                env.clock.clone(),
            ))
        }))
}

/// Says on stderr what a run until idle left: requests waiting for a person as notes (the
/// run succeeded), requests an error kept from moving as the one-line error it fails with.
fn until_idle_report(out: &engine::IdleOutcome) -> Result<()> {
    for w in &out.waiting {
        eprintln!("mailfleet: waiting for a person: {w}");
    }
    if out.succeeded() {
        return Ok(());
    }
    let n = out.stuck.len();
    if n == 0 {
        let why = out
            .error
            .as_deref()
            .unwrap_or("an error stopped the engine");
        return Err(eyre!("work --until-idle: {}", sanitize(why)));
    }
    let list: Vec<String> = out.stuck.iter().map(|l| l.to_string()).collect();
    Err(eyre!(
        "work --until-idle: {n} request{} left: {}",
        if n == 1 { "" } else { "s" },
        list.join("; ")
    ))
}

/// Writes a secret to a new file only its owner can read (never over an existing one).
fn write_secret_file(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| eyre!("{}: {e}", sanitize(&path.display().to_string())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| eyre!("{}: {e}", sanitize(&path.display().to_string())))
}

/// `mailfleet serve`: the engine, the agents' listener and the heartbeat watch, until a
/// signal.
async fn serve(env: &Env) -> Result<()> {
    let ctx = env.ctx()?;
    if let Some(p) = ctx.mail.problem() {
        return Err(eyre!("{}", sanitize(&p)));
    }
    let id = crate::serve::identity(&env.cfg, &env.store).map_err(|e| eyre!("{}", sanitize(&e)))?;
    let addr: std::net::SocketAddr = env
        .cfg
        .serve
        .listen
        .parse()
        .map_err(|_| eyre!("serve.listen: not IP:PORT"))?;
    let server = crate::serve::Server::new(env.store.clone(), &env.cfg, env.clock.clone());
    let listening = crate::serve::listen(addr, &id, server)
        .await
        .map_err(|e| eyre!("{}", sanitize(&e)))?;
    let root = match &id.root_pem {
        Some(_) => crate::serve::own_dir(&env.store)
            .join("root.pem")
            .display()
            .to_string(),
        None => "the configured chain's root".to_string(),
    };
    // Said on stdout, for whoever started it (the port when it was 0).
    println!("serving https://{} (agents trust {root})", listening.addr);
    tracing::info!(owner = %ctx.owner, addr = %listening.addr, "serve starting");
    let watch = tokio::spawn(crate::serve::watch_heartbeats(
        env.store.clone(),
        env.cfg.clone(),
        env.clock.clone(),
    ));
    let alerts = alert_router(env)?;
    let handle = engine::spawn(ctx);
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight steps");
    watch.abort();
    if let Some(a) = alerts {
        a.abort();
    }
    drop(listening);
    handle.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn request(cli: &Cli, env: &Env, rc: &RequestCmd) -> Result<()> {
    let store = &env.store;
    let decide = |d: &Decision, make: fn(String, Option<String>) -> Command| {
        (make(d.id.clone(), d.reason.clone()), d.json)
    };
    let (command, json) = match rc {
        RequestCmd::List {
            state,
            tenant,
            json,
        } => {
            let rows = store
                .list_requests(&RequestFilter {
                    state: *state,
                    tenant: tenant.clone(),
                    limit: None,
                })
                .await?;
            return output::request_list(store, &rows, *json, env.clock.now()).await;
        }
        RequestCmd::Import { file, json } => {
            refuse_read_only(cli)?;
            return import(env, file, *json).await;
        }
        RequestCmd::Show { id, json } => {
            let id = store.resolve_request_id(id).await?;
            let detail = store.request_detail(&id).await?;
            return output::request_show(&detail, *json, env.clock.now());
        }
        RequestCmd::Create {
            tenant,
            region,
            plan,
            label,
            domain,
            depends_on,
            json,
        } => (
            Command::Create(CreateRequest {
                tenant: tenant.clone(),
                region: region.clone(),
                plan: plan.clone(),
                label: label.clone(),
                domain: domain.clone(),
                depends_on: depends_on.clone(),
            }),
            *json,
        ),
        RequestCmd::Approve(d) => decide(d, |id, reason| Command::Approve { id, reason }),
        RequestCmd::Reject(d) => decide(d, |id, reason| Command::Reject {
            id,
            reason: reason.unwrap_or_default(),
        }),
        RequestCmd::Suspend(d) => decide(d, |id, reason| Command::Suspend { id, reason }),
        RequestCmd::Reactivate(d) => decide(d, |id, reason| Command::Reactivate { id, reason }),
        RequestCmd::Rollback(d) => decide(d, |id, reason| Command::Rollback { id, reason }),
        RequestCmd::Deprovision(d) => decide(d, |id, reason| Command::Deprovision { id, reason }),
        RequestCmd::Provide {
            id,
            ip,
            ssh_port,
            json,
        } => {
            let ip: std::net::Ipv4Addr = ip
                .trim()
                .parse()
                .map_err(|_| eyre!("--ip: {:?} is not an IPv4 address", sanitize(ip.trim())))?;
            let ssh_port: u16 =
                ssh_port
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        eyre!(
                            "--ssh-port: {:?} is not a port (1 to 65535)",
                            sanitize(ssh_port.trim())
                        )
                    })?;
            (
                Command::Provide {
                    id: id.clone(),
                    ip,
                    ssh_port,
                },
                *json,
            )
        }
    };
    refuse_read_only(cli)?;
    let outcome = engine::commands::execute(&env.ctx()?, &env.actor, command).await?;
    let id = match &outcome {
        engine::Outcome::Created(r) => r.id.clone(),
        engine::Outcome::Changed { id, .. } | engine::Outcome::TeardownSignalled { id } => {
            id.clone()
        }
        engine::Outcome::ClusterTested(r) => {
            println!("{}", r.describe());
            return Ok(());
        }
        engine::Outcome::Node { text, .. } | engine::Outcome::Alert { text, .. } => {
            println!("{}", sanitize(text));
            return Ok(());
        }
    };
    if json {
        let detail = store.request_detail(&id).await?;
        output::print_json(&output::request_json(
            &detail.request,
            &detail.steps,
            &detail.depends_on,
        ))?;
    } else {
        println!("{}", outcome.describe());
    }
    Ok(())
}

async fn blocklist(cfg: &Config, bc: &BlocklistCmd) -> Result<ExitCode> {
    use crate::reputation::dnsbl::{Checker, Codes, Severity, Zone};
    match bc {
        BlocklistCmd::Zones { json } => {
            output::zone_list(&cfg.blocklist_zones(), *json)?;
        }
        BlocklistCmd::Check { ips, zones, json } => {
            let mut parsed = Vec::with_capacity(ips.len());
            for ip in ips {
                parsed.push(
                    ip.parse::<std::net::Ipv4Addr>()
                        .map_err(|_| eyre!("IP: {:?} is not an IPv4 address", sanitize(ip)))?,
                );
            }
            let known = cfg.blocklist_zones();
            let chosen: Vec<Zone> = if zones.is_empty() {
                known
            } else {
                let mut out = Vec::new();
                for z in zones {
                    let name = z.trim().trim_end_matches('.').to_ascii_lowercase();
                    let valid = !name.is_empty()
                        && name.split('.').all(|l| {
                            !l.is_empty()
                                && l.chars()
                                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                        });
                    if !valid {
                        return Err(eyre!("--zones: {:?} is not a DNS zone name", sanitize(z)));
                    }
                    out.push(
                        known
                            .iter()
                            .find(|k| k.zone == name)
                            .cloned()
                            .unwrap_or(Zone {
                                codes: if name.ends_with("spamhaus.org") {
                                    Codes::Spamhaus
                                } else {
                                    Codes::Generic
                                },
                                zone: name,
                                severity: Severity::Medium,
                            }),
                    );
                }
                out
            };
            let checker = Checker::new(&cfg.checker_config()).map_err(|e| eyre!(e))?;
            let (health, verdicts) = checker.check_zones(&parsed, &chosen).await;
            for h in health.iter().filter(|h| !h.usable) {
                eprintln!(
                    "warning: zone {} is unusable: {}",
                    h.zone,
                    sanitize(h.why.as_deref().unwrap_or("failed its health check"))
                );
            }
            output::verdicts(&verdicts, *json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Batch files larger than this are refused before parsing.
const MAX_BATCH_BYTES: u64 = 8 * 1024 * 1024;

async fn import(env: &Env, file: &std::path::Path, json: bool) -> Result<()> {
    use crate::domain::batch;
    let shown = sanitize(&file.display().to_string()).into_owned();
    let Some(format) = batch::Format::from_path(file) else {
        return Err(eyre!("{shown}: the file name must end in .toml or .json"));
    };
    let size = std::fs::metadata(file)
        .wrap_err_with(|| format!("{shown}: cannot read"))?
        .len();
    if size > MAX_BATCH_BYTES {
        return Err(eyre!(
            "{shown}: {size} bytes is more than a batch may hold ({MAX_BATCH_BYTES})"
        ));
    }
    let text = std::fs::read_to_string(file).wrap_err_with(|| format!("{shown}: cannot read"))?;
    let items = batch::parse(&text, format).map_err(|e| eyre!("{shown}: {e}"))?;
    let rows = engine::commands::import(&env.ctx()?, &env.actor, &items).await?;
    // The rows come back in the order they were written (prerequisites first); name each
    // by its key.
    let key_of = |label: &str, tenant: &str| {
        items
            .iter()
            .find(|i| i.label == label && i.tenant == tenant)
            .map(|i| i.key.clone())
            .unwrap_or_default()
    };
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = output::request_json(r, &[], &[]);
                v["key"] = serde_json::Value::String(key_of(&r.label, &r.tenant));
                v
            })
            .collect();
        output::print_json(&serde_json::Value::Array(list))?;
    } else {
        for r in &rows {
            println!(
                "{}  {}  {}",
                crate::domain::ids::short(&r.id),
                r.state,
                sanitize(&key_of(&r.label, &r.tenant))
            );
        }
        println!("imported {} requests", rows.len());
    }
    Ok(())
}

async fn node(cli: &Cli, env: &Env, nc: &NodeCmd) -> Result<()> {
    let command = match nc {
        NodeCmd::Pause { id, reason } => Command::PauseNode {
            id: id.clone(),
            reason: reason.clone(),
        },
        NodeCmd::Resume { id } => Command::ResumeNode { id: id.clone() },
        NodeCmd::Maintenance { id, reason } => Command::MaintainNode {
            id: id.clone(),
            reason: reason.clone(),
        },
        NodeCmd::Check { id } => Command::CheckNode { id: id.clone() },
        NodeCmd::Resize {
            id,
            plan,
            reason,
            json,
        } => {
            refuse_read_only(cli)?;
            let command = Command::ResizeNode {
                id: id.clone(),
                plan: plan.clone(),
                reason: reason.clone(),
            };
            let outcome = engine::commands::execute(&env.ctx()?, &env.actor, command).await?;
            if let (true, engine::Outcome::Created(r)) = (*json, &outcome) {
                let detail = env.store.request_detail(&r.id).await?;
                return output::print_json(&output::request_json(
                    &detail.request,
                    &detail.steps,
                    &detail.depends_on,
                ));
            }
            println!("{}", sanitize(&outcome.describe()));
            return Ok(());
        }
        NodeCmd::AgentToken { id, out } => {
            refuse_read_only(cli)?;
            let node_id = env.store.resolve_node_id(id).await?;
            let node = env.store.get_node(&node_id).await?;
            let Some(agent) = node.request_id.clone() else {
                return Err(eyre!(
                    "node {}: no provisioning request to name its agent by",
                    sanitize(id)
                ));
            };
            let token = crate::agent::issue_token(
                &env.store,
                &env.cfg.dkim.key_env,
                &agent,
                env.clock.now(),
            )
            .await
            .map_err(|e| eyre!("{}", sanitize(&e)))?;
            write_secret_file(out, token.as_bytes())?;
            println!(
                "agent {agent}: token written to {} (mode 0600); the old one no longer works",
                sanitize(&out.display().to_string())
            );
            return Ok(());
        }
        NodeCmd::List { .. } | NodeCmd::Show { .. } => return node_read(env, nc).await,
    };
    refuse_read_only(cli)?;
    let outcome = engine::commands::execute(&env.ctx()?, &env.actor, command).await?;
    println!("{}", sanitize(&outcome.describe()));
    Ok(())
}

async fn dkim(cli: &Cli, env: &Env, dc: &DkimCmd) -> Result<()> {
    use crate::domain::records::{plan, DmarcPolicy, RecordInput};
    match dc {
        DkimCmd::List { json } => {
            let mut keys = env.store.dkim_keys().await?;
            // Recorded relative to the database's folder: shown as the file it names.
            for k in &mut keys {
                if let Some(f) = &k.key_file {
                    k.key_file = Some(env.store.key_path(f).display().to_string());
                }
            }
            if *json {
                return output::print_json(&serde_json::to_value(&keys)?);
            }
            for k in &keys {
                println!(
                    "{}  {}  {}  {}{}",
                    sanitize(&k.domain),
                    sanitize(&k.selector),
                    k.algorithm,
                    match &k.key_file {
                        Some(f) => format!("private key in {}", sanitize(f)),
                        None => "private key sealed in the database".into(),
                    },
                    k.retired_at
                        .as_deref()
                        .map(|r| format!("  retired {r}"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        DkimCmd::New {
            domain,
            selector,
            ed25519,
            json,
        } => {
            refuse_read_only(cli)?;
            let selector = selector
                .clone()
                .unwrap_or_else(|| env.cfg.dkim.selector.clone());
            crate::domain::validate::validate_domain("domain", domain)
                .map_err(|e| eyre!("{}", sanitize(&e.to_string())))?;
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            // The record is planned (and the selector checked) before any key exists.
            let check = RecordInput {
                domain: domain.clone(),
                hostname: format!("mx.{domain}"),
                ip: "192.0.2.1".into(),
                selector: selector.clone(),
                dkim_rsa: None,
                dkim_ed25519: ed25519.then(|| (format!("{selector}-ed"), "AAAA".to_string())),
                dmarc: DmarcPolicy::None,
                dmarc_rua: None,
                spf_extra: vec![],
                mta_sts_id: None,
                tls_rpt_rua: None,
                ttl: 300,
            };
            plan(&check).map_err(|e| eyre!("{}", sanitize(&e.to_string())))?;
            let used = crate::dkim::used_selectors(&env.store, &domain).await?;
            let ed_selector = format!("{selector}-ed");
            for s in std::iter::once(&selector).chain(ed25519.then_some(&ed_selector)) {
                if used.contains(s) {
                    return Err(eyre!(
                        "selector: {domain} already has a key with selector {s}; pass another --selector"
                    ));
                }
            }
            use crate::dkim::{make_key, Algorithm};
            let now = env.clock.now();
            let mut made = vec![
                make_key(
                    &env.store,
                    &env.cfg,
                    now,
                    &domain,
                    &selector,
                    Algorithm::Rsa2048,
                )
                .await?,
            ];
            if *ed25519 {
                made.push(
                    make_key(
                        &env.store,
                        &env.cfg,
                        now,
                        &domain,
                        &ed_selector,
                        Algorithm::Ed25519,
                    )
                    .await?,
                );
            }
            let records: Vec<_> = plan(&RecordInput {
                dkim_rsa: Some(made[0].public_b64.clone()),
                dkim_ed25519: made
                    .get(1)
                    .map(|m| (m.selector.clone(), m.public_b64.clone())),
                ..check
            })
            .map_err(|e| eyre!("{}", sanitize(&e.to_string())))?
            .into_iter()
            .filter(|r| r.purpose.starts_with("dkim"))
            .collect();
            if *json {
                let keys: Vec<_> = made
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "selector": m.selector, "algorithm": m.algorithm.as_str(),
                            "public_key": m.public_b64, "private_key": m.kept,
                        })
                    })
                    .collect();
                return output::print_json(&serde_json::json!({
                    "domain": domain, "selector": selector, "algorithm": "rsa-2048",
                    "public_key": made[0].public_b64, "record": records[0],
                    "private_key": made[0].kept, "keys": keys, "records": records,
                }));
            }
            println!("{}", crate::domain::records::zone_snippet(&records));
            for m in &made {
                eprintln!("mailfleet: {} private key {}", m.algorithm.as_str(), m.kept);
            }
            Ok(())
        }
        DkimCmd::Rotate {
            domain,
            keep_old,
            json,
        } => {
            refuse_read_only(cli)?;
            let ctx = env.ctx()?;
            let r = crate::engine::mail::rotate_dkim(
                &ctx.mail,
                &env.store,
                &env.cfg,
                env.clock.now(),
                domain,
                *keep_old,
            )
            .await
            .map_err(|e| eyre!("dkim rotate: {}", sanitize(&e)))?;
            if *json {
                return output::print_json(&serde_json::to_value(&r)?);
            }
            println!("{}", r.records);
            eprintln!(
                "mailfleet: {} published in {} and answering; {} retired{}",
                r.new_selectors.join(", "),
                r.zone,
                r.old_selectors.join(", "),
                if r.old_removed {
                    " and removed from the zone"
                } else {
                    " (record kept in the zone)"
                }
            );
            for k in &r.kept {
                eprintln!("mailfleet: private key {k}");
            }
            Ok(())
        }
    }
}

async fn warmup(cli: &Cli, env: &Env, wc: &WarmupCmd) -> Result<()> {
    use crate::domain::warmup::ResumeFrom;
    let command = match wc {
        WarmupCmd::Plans { json } => {
            let plans = env.cfg.warmup_plans();
            if *json {
                let list: Vec<serde_json::Value> = plans
                    .iter()
                    .map(|p| {
                        serde_json::json!({"name": p.name, "description": p.description,
                            "days": p.days(), "first_cap": p.cap(1), "last_cap": p.cap(p.days()),
                            "default": p.name == env.cfg.warmup.default_plan})
                    })
                    .collect();
                return output::print_json(&serde_json::Value::Array(list));
            }
            return output::warmup_plans(&plans, &env.cfg.warmup.default_plan);
        }
        WarmupCmd::Plan { name, json } => {
            let plans = env.cfg.warmup_plans();
            let Some(p) = plans.iter().find(|p| &p.name == name) else {
                let known: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
                return Err(eyre!(
                    "plan: unknown warm-up plan {:?}; known: {}",
                    sanitize(name),
                    known.join(", ")
                ));
            };
            let days: Vec<serde_json::Value> = p
                .caps
                .iter()
                .enumerate()
                .map(|(i, cap)| serde_json::json!({"day": i + 1, "cap": cap}))
                .collect();
            if *json {
                return output::print_json(&serde_json::json!({"name": p.name, "days": days}));
            }
            println!(
                "{} ({} days): {}",
                p.name,
                p.days(),
                sanitize(&p.description)
            );
            for (i, cap) in p.caps.iter().enumerate() {
                println!("  day {:>3}  {cap}", i + 1);
            }
            return Ok(());
        }
        WarmupCmd::Show { id, json } => {
            let id = env.store.resolve_node_id(id).await?;
            let node = env.store.get_node(&id).await?;
            let Some(w) = env.store.node_warmup(&id).await? else {
                return Err(eyre!("node {}: no warm-up", sanitize(&node.label)));
            };
            return output::warmup_log(&node.label, &w, *json);
        }
        WarmupCmd::Resume { id, from } => Command::WarmupResume {
            id: id.clone(),
            from: match from {
                ResumeArg::Day => ResumeFrom::Day,
                ResumeArg::Week => ResumeFrom::Week,
                ResumeArg::Start => ResumeFrom::Start,
            },
        },
        WarmupCmd::Pace { id, factor } => {
            if !(factor.is_finite() && *factor > 0.0) {
                return Err(eyre!("FACTOR: {factor} is not a positive number"));
            }
            Command::WarmupPace {
                id: id.clone(),
                percent: (factor * 100.0).round() as u32,
            }
        }
    };
    refuse_read_only(cli)?;
    let outcome = engine::commands::execute(&env.ctx()?, &env.actor, command).await?;
    println!("{}", sanitize(&outcome.describe()));
    Ok(())
}

async fn node_read(env: &Env, nc: &NodeCmd) -> Result<()> {
    match nc {
        NodeCmd::List {
            status,
            tenant,
            json,
        } => {
            if let Some(s) = status {
                s.parse::<crate::domain::node::NodeStatus>()
                    .map_err(|e| eyre!("--status: {}", sanitize(&e)))?;
            }
            let rows = env
                .store
                .list_nodes(&NodeFilter {
                    status: status.clone(),
                    tenant: tenant.clone(),
                    limit: None,
                })
                .await?;
            output::node_list(&rows, *json, env.clock.now())
        }
        NodeCmd::Show { id, json } => {
            let id = env.store.resolve_node_id(id).await?;
            let node = env.store.get_node(&id).await?;
            let warmup = env.store.node_warmup(&id).await?;
            let transitions = env.store.node_transitions(&id).await?;
            let resizes = match &node.request_id {
                Some(r) => env.store.resizes_of(r).await?,
                None => vec![],
            };
            output::node_show(&node, warmup.as_ref(), &transitions, &resizes, *json)
        }
        NodeCmd::Pause { .. }
        | NodeCmd::AgentToken { .. }
        | NodeCmd::Resume { .. }
        | NodeCmd::Maintenance { .. }
        | NodeCmd::Check { .. }
        | NodeCmd::Resize { .. } => Ok(()),
    }
}
