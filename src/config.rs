//! Settings: this module owns loading, merging and validating mailfleet's
//! TOML configuration.
//!
//! Settings come in layers — the built-in defaults ([`DEFAULT_TOML`]), the
//! user's `config.toml`, then an explicit `--config` file — merged table by
//! table into one [`Config`], which is then checked with [`Config::validate`].
//! Errors are single lines naming the file, line and key at fault.
//!
//! The module does no I/O beyond reading config files. It never holds
//! secrets: anything secret is referred to by the *name* of the environment
//! variable that carries it, and read by whoever needs it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::actor::normalise;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

pub mod mail;
pub use mail::{
    AlertingConfig, ChallengeKind, DnsConfig, DnsProviderKind, ServeConfig, TlsConfig,
    VerifyConfig, LAB_SINK_PORT,
};

/// The built-in defaults, always the first layer.
pub const DEFAULT_TOML: &str = include_str!("../assets/default.toml");

/// Environment variable naming a config file, used when no explicit path is given.
pub const CONFIG_ENV: &str = "MAILFLEET_CONFIG";

/// Provider kinds a cluster may name.
pub const KNOWN_PROVIDERS: &[&str] = &["sim", "hostwinds", "manual", "lab"];

/// Source name used in errors for the built-in defaults layer.
const DEFAULTS_SOURCE: &str = "(built-in defaults)";

/// Something wrong with the configuration. Displays as a single line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file that must exist does not.
    #[error("config {}: file not found", path.display())]
    NotFound { path: PathBuf },

    /// A file exists but could not be read.
    #[error("config {}: cannot read: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },

    /// One layer is not valid TOML, or does not fit the settings' shape.
    #[error("config {source_name}: {}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Parse {
        /// Where the text came from (usually a file path).
        source_name: String,
        /// 1-based line of the offending text, when known.
        line: Option<usize>,
        message: String,
    },

    /// The merged settings break a rule spanning fields.
    #[error("config: {key} {message}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `plans[2].name`.
        key: String,
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    fn parse(source_name: &str, text: &str, err: &toml::de::Error) -> Self {
        let line = err.span().map(|span| line_of(text, span.start));
        let mut message = one_line(err.message());
        if message.is_empty() {
            // The parser says nothing when the text ends where a value should start.
            message = missing_value(text, line);
        }
        ConfigError::Parse {
            source_name: source_name.to_string(),
            line,
            message,
        }
    }
}

/// 1-based line number of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let end = at.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// What to say when the parser stops with no message: the file ended before a value. Names
/// the key of that line when it is `KEY =`.
fn missing_value(text: &str, line: Option<usize>) -> String {
    let at = line
        .and_then(|n| text.lines().nth(n.saturating_sub(1)))
        .unwrap_or("");
    match at.trim().strip_suffix('=') {
        Some(key) if !key.trim().is_empty() => format!(
            "`{}` has no value (the file ends after `=`)",
            crate::domain::validate::sanitize(key.trim())
        ),
        _ => "the file ends where a value should be".to_string(),
    }
}

/// Collapses a possibly multi-line message into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Loads the settings: built-in defaults, then the user's `config.toml` (if it
/// exists), then `explicit` — or, when that is `None`, the file named by
/// `MAILFLEET_CONFIG` — which must exist.
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    let explicit = explicit_path(explicit, std::env::var_os(CONFIG_ENV));
    load_from(user_config_path().as_deref(), explicit.as_deref())
}

/// The user's config file (`config.toml` in the platform config directory),
/// whether or not it exists.
pub fn user_config_path() -> Option<PathBuf> {
    project_dirs().map(|dirs| dirs.config_dir().join("config.toml"))
}

/// The explicit path wins; otherwise a non-empty `MAILFLEET_CONFIG` value.
fn explicit_path(explicit: Option<&Path>, env: Option<OsString>) -> Option<PathBuf> {
    match explicit {
        Some(path) => Some(path.to_path_buf()),
        None => env.filter(|v| !v.is_empty()).map(PathBuf::from),
    }
}

/// Loads defaults + `user` (skipped if absent) + `explicit` (required).
fn load_from(user: Option<&Path>, explicit: Option<&Path>) -> Result<Config, ConfigError> {
    let mut layers = vec![(DEFAULTS_SOURCE.to_string(), DEFAULT_TOML.to_string())];
    if let Some(path) = user {
        if let Some(text) = read_file(path, false)? {
            layers.push((path.display().to_string(), text));
        }
    }
    if let Some(path) = explicit {
        if let Some(text) = read_file(path, true)? {
            layers.push((path.display().to_string(), text));
        }
    }
    from_layers(&layers)
}

/// Reads a config file. A missing file is `Ok(None)` unless `required`.
fn read_file(path: &Path, required: bool) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if required {
                Err(ConfigError::NotFound {
                    path: path.to_path_buf(),
                })
            } else {
                Ok(None)
            }
        }
        Err(error) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// Builds settings from `(source name, TOML text)` layers, later layers
/// overriding earlier ones, then validates the result.
///
/// Each layer is first checked on its own so that errors can name its source
/// and line. Tables merge key by key; any other value (arrays included, so
/// `[[plans]]` and friends) replaces the earlier one wholesale.
pub fn from_layers(layers: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut merged = Table::new();
    for (source_name, text) in layers {
        toml::from_str::<Config>(text).map_err(|e| ConfigError::parse(source_name, text, &e))?;
        let table: Table = text
            .parse()
            .map_err(|e| ConfigError::parse(source_name, text, &e))?;
        merge_tables(&mut merged, table);
    }
    let mut config = Config::deserialize(Value::Table(merged)).map_err(|e| ConfigError::Parse {
        source_name: "(merged layers)".to_string(),
        line: None,
        message: one_line(e.message()),
    })?;
    config.validate()?;
    config.normalise_names();
    Ok(config)
}

/// Deep-merges `over` into `base`: tables recursively, everything else replaced.
fn merge_tables(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base_table)), Value::Table(over_table)) => {
                merge_tables(base_table, over_table)
            }
            (Some(slot), value) => *slot = value,
            (None, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "mailfleet")
}

/// Where mailfleet keeps its data (the database, by default).
pub fn data_dir() -> Option<PathBuf> {
    project_dirs().map(|dirs| dirs.data_dir().to_path_buf())
}

/// Where mailfleet keeps state such as logs; the data directory on platforms
/// without a separate state directory.
pub fn state_dir() -> Option<PathBuf> {
    project_dirs().map(|dirs| {
        dirs.state_dir()
            .unwrap_or_else(|| dirs.data_dir())
            .to_path_buf()
    })
}

/// The database file used when none is given: `<data dir>/mailfleet.db`.
pub fn default_db_path() -> Option<PathBuf> {
    data_dir().map(|dir| dir.join("mailfleet.db"))
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

/// Units in the order they must appear, largest first: (suffix, milliseconds).
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a duration such as "250ms", "5s", "10m", "2h", "1d" or "1m30s".
///
/// Units go largest to smallest, each at most once.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a number followed by ms, s, m, h or d (e.g. \"30s\")"
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_ms: u64 = 0;
    let mut next_unit = 0; // index into UNITS of the smallest unit not yet allowed to be skipped
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let (number, tail) = rest.split_at(digits);
        // "ms" must be tried before "m".
        let (index, suffix) = if tail.starts_with("ms") {
            (4, "ms")
        } else {
            match tail.chars().next() {
                Some('s') => (3, "s"),
                Some('m') => (2, "m"),
                Some('h') => (1, "h"),
                Some('d') => (0, "d"),
                _ => return Err(bad()),
            }
        };
        if index < next_unit {
            return Err(format!(
                "invalid duration {text:?}: units must go from largest to smallest, each at most once (e.g. \"1m30s\")"
            ));
        }
        next_unit = index + 1;
        let too_large = || format!("invalid duration {text:?}: value is too large");
        let count: u64 = number.parse().map_err(|_| too_large())?;
        let ms = count.checked_mul(UNITS[index].1).ok_or_else(too_large)?;
        total_ms = total_ms.checked_add(ms).ok_or_else(too_large)?;
        rest = &tail[suffix.len()..];
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration in its shortest human form: "250ms", "5m", "1h30m",
/// "1d2h". Zero is "0s"; anything below a millisecond is dropped.
pub fn format_duration(duration: Duration) -> String {
    let mut rest = duration.as_millis();
    if rest == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (suffix, unit_ms) in UNITS {
        let unit_ms = u128::from(unit_ms);
        let count = rest / unit_ms;
        rest %= unit_ms;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(suffix);
        }
    }
    out
}

/// A duration read from a string, for serde.
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl serde::de::Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration(v).map_err(E::custom)
            }
        }

        deserializer
            .deserialize_str(DurationVisitor)
            .map(HumanDuration)
    }
}

/// `#[serde(with = ...)]` for a `Duration` written as "30s".
pub(crate) mod duration_serde {
    use super::{format_duration, HumanDuration};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        HumanDuration::deserialize(d).map(|h| h.0)
    }
}

/// `#[serde(with = ...)]` for a list of durations written as ["5s", "10s"].
mod duration_list_serde {
    use super::{format_duration, HumanDuration};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(durations: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(durations.iter().map(|d| format_duration(*d)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<HumanDuration>::deserialize(d).map(|v| v.into_iter().map(|h| h.0).collect())
    }
}

// ---------------------------------------------------------------------------
// The settings
// ---------------------------------------------------------------------------

/// All of mailfleet's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub engine: EngineConfig,
    pub store: StoreConfig,
    pub providers: ProvidersConfig,
    pub plans: Vec<PlanConfig>,
    pub clusters: Vec<ClusterConfig>,
    pub tenants: Vec<TenantConfig>,
    pub approval_rules: Vec<ApprovalRuleConfig>,
    pub approvals: ApprovalsConfig,
    pub identity: IdentityConfig,
    pub warmup: WarmupConfig,
    pub blocklists: BlocklistsConfig,
    pub dkim: DkimConfig,
    pub dns: DnsConfig,
    pub tls: TlsConfig,
    pub verify: VerifyConfig,
    pub serve: ServeConfig,
    pub alerting: AlertingConfig,
    pub scaling: ScalingConfig,
    /// Console key bindings laid over the defaults: `"ctrl-r" = "rollback"`, `"x" = "none"`.
    pub keys: std::collections::BTreeMap<String, String>,
}

/// How the provisioning engine schedules, retries and times out work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Pipelines that may run at once for one tenant.
    pub max_in_flight_per_tenant: u32,
    /// Delays before successive retries of a failed step.
    #[serde(with = "duration_list_serde")]
    pub retry_backoff: Vec<Duration>,
    /// Upper bound on any one retry delay.
    #[serde(with = "duration_serde")]
    pub retry_cap: Duration,
    /// Retries of one step before the pipeline fails.
    pub max_retries: u32,
    /// Random spread applied to retry delays, as a fraction in `0.0..=1.0`.
    pub retry_jitter: f64,
    /// A pipeline making no progress for this long is reported as stuck.
    #[serde(with = "duration_serde")]
    pub stuck_after: Duration,
    /// How long running steps get to finish on shutdown.
    #[serde(with = "duration_serde")]
    pub shutdown_grace: Duration,
    /// How long a worker's claim on a pipeline lasts without renewal.
    #[serde(with = "duration_serde")]
    pub lease_ttl: Duration,
    /// Time limit for one provider call.
    #[serde(with = "duration_serde")]
    pub call_timeout: Duration,
    /// How often to poll an instance being built.
    #[serde(with = "duration_serde")]
    pub poll_interval: Duration,
    /// Pipelines in flight per engine process.
    pub max_concurrent: u32,
    /// How often the engine asks the database whether another process committed (one read
    /// of `PRAGMA data_version`). Its own work wakes it without waiting: commands, its own
    /// commits, retries and leases falling due.
    #[serde(with = "duration_serde")]
    pub tick: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_in_flight_per_tenant: 5,
            retry_backoff: vec![
                Duration::from_secs(5),
                Duration::from_secs(10),
                Duration::from_secs(20),
                Duration::from_secs(40),
            ],
            retry_cap: Duration::from_secs(5 * 60),
            max_retries: 3,
            retry_jitter: 0.2,
            stuck_after: Duration::from_secs(30 * 60),
            shutdown_grace: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(30),
            call_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            max_concurrent: 64,
            tick: Duration::from_millis(500),
        }
    }
}

/// Warm-up: which plan new nodes follow, and plans of one's own beside the built-in ones
/// (`assets/warmup_plans.toml`). A custom plan with a built-in plan's name replaces it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WarmupConfig {
    pub default_plan: String,
    pub plans: Vec<crate::domain::warmup::PlanSpec>,
    /// Warm-up days start at midnight at this offset from UTC ("+00:00", "-05:00").
    pub utc_offset: String,
    /// When a day's numbers hold a node at its cap or pause it.
    pub thresholds: crate::domain::warmup::Thresholds,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        WarmupConfig {
            default_plan: crate::domain::warmup::DEFAULT_PLAN.to_string(),
            plans: Vec::new(),
            utc_offset: "+00:00".to_string(),
            thresholds: crate::domain::warmup::Thresholds::default(),
        }
    }
}

/// Reads a UTC offset written "+HH:MM" or "-HH:MM" (within ±14:00).
pub fn parse_utc_offset(s: &str) -> Result<chrono::FixedOffset, String> {
    let bad = || format!("{s:?} is not a UTC offset like \"+00:00\" or \"-05:30\"");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if h > 14 || m > 59 || (h == 14 && m > 0) {
        return Err(bad());
    }
    chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

/// DKIM keys: where the key that seals private keys comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DkimConfig {
    /// The environment variable holding the sealing key (32 random bytes, base64). Unset:
    /// private keys go to 0600 files beside the database instead.
    pub key_env: String,
    /// The selector of a domain's first key.
    pub selector: String,
}

impl Default for DkimConfig {
    fn default() -> Self {
        DkimConfig {
            key_env: "MAILFLEET_DKIM_KEY".into(),
            selector: "mf1".into(),
        }
    }
}

/// DNS blocklist monitoring: where to resolve, how often, and which zones. With no zones
/// listed, the built-in ones (`assets/blocklists.toml`) apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BlocklistsConfig {
    /// Run the scheduled checks (in `mailfleet work` and the console).
    pub monitor: bool,
    /// A recursive resolver of one's own, "IP" or "IP:PORT"; absent = the system resolver.
    pub resolver: Option<String>,
    /// How often each node's IP is checked (checks are spread across the interval).
    #[serde(with = "duration_serde")]
    pub interval: Duration,
    /// Time limit for one query.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// Queries in flight at once.
    pub concurrency: usize,
    pub zones: Vec<crate::reputation::dnsbl::Zone>,
    /// A node's bounce rate above this (0.0 to 1.0) raises a medium alert.
    pub bounce_alert: f64,
    /// Resume a node paused for a listing once it is delisted everywhere.
    pub auto_resume: bool,
}

impl Default for BlocklistsConfig {
    fn default() -> Self {
        BlocklistsConfig {
            monitor: true,
            resolver: None,
            interval: Duration::from_secs(30 * 60),
            timeout: Duration::from_secs(2),
            concurrency: 64,
            zones: Vec::new(),
            bounce_alert: 0.05,
            auto_resume: false,
        }
    }
}

/// The built-in blocklist zones (`assets/blocklists.toml`).
pub fn builtin_zones() -> &'static [crate::reputation::dnsbl::Zone] {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ZoneFile {
        zones: Vec<crate::reputation::dnsbl::Zone>,
    }
    static ZONES: std::sync::OnceLock<Vec<crate::reputation::dnsbl::Zone>> =
        std::sync::OnceLock::new();
    // Compiled in and checked by a test, so it always parses.
    ZONES.get_or_init(|| {
        toml::from_str::<ZoneFile>(include_str!("../assets/blocklists.toml"))
            .map(|f| f.zones)
            .unwrap_or_default()
    })
}

/// Reads "IP" or "IP:PORT" (port 53 by default).
pub fn parse_resolver(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

/// The store: SQLite's settings, and PostgreSQL's login.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub synchronous: Synchronous,
    #[serde(with = "duration_serde")]
    pub busy_timeout: Duration,
    /// Largest the database file may grow to, in KiB; 0 means no limit. A write that would
    /// grow it further fails as on a full disk (a database already larger stays as it is).
    pub max_size_kib: u64,
    /// With `--db postgres://...`: the environment variable that holds the database
    /// password (a URL may not: it is shown, logged and seen in `ps`).
    pub password_env: String,
    /// With `--db postgres://...`: the folder for private-key files (DKIM, TLS, SSH, agent
    /// tokens) when no sealing key keeps them in the database. Default: a folder named
    /// after the database, in the data directory. Files are this host's own: a team with
    /// workers on several hosts sets the sealing keys instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_dir: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_size_kib: 0,
            password_env: "PGPASSWORD".to_owned(),
            key_dir: None,
        }
    }
}

/// SQLite's `synchronous` pragma.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

/// Settings for each provider kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    /// The circuit breaker and bulkhead every provider's calls go through.
    pub limits: ProviderLimits,
    pub sim: SimConfig,
    /// The Hostwinds cloud API, for clusters with `provider = "hostwinds"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostwinds: Option<HostwindsConfig>,
    /// The lab of real hosts on this machine (`mailfleet lab up|down|status`).
    pub lab: LabConfig,
}

/// Where the lab keeps its hosts when the config says nothing.
pub const DEFAULT_LAB_DIR: &str = "/var/lib/mailfleet-lab";

/// The lab (`[providers.lab]`): network namespaces on a bridge, as real hosts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LabConfig {
    /// The bridge's name, 1 to 10 letters or digits; the lab's namespaces and links are
    /// named from it.
    pub bridge: String,
    /// IPv4 subnet (/16 to /29) the hosts' addresses come from; its first address is the
    /// bridge's.
    pub subnet: String,
    /// The lab's folder; empty: /var/lib/mailfleet-lab.
    pub dir: String,
    /// Failures to rehearse, each `"LABEL:TASK"`: the bootstrap sub-task TASK (packages,
    /// tls_install, opendkim, postfix, nftables, fail2ban, reload) of the node labelled
    /// LABEL fails as a real one would (Postfix refuses its master.cf; any other runs a
    /// command that fails); `test_message`: the node routes the sink's domain to a port
    /// where nothing listens, so its test message never arrives.
    pub faults: Vec<String>,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            bridge: "mflab".into(),
            subnet: "10.77.0.0/24".into(),
            dir: String::new(),
            faults: Vec::new(),
        }
    }
}

impl LabConfig {
    /// The lab as configured, or what is wrong with the config (the field named).
    pub fn spec(&self) -> Result<crate::lab::LabSpec, ConfigError> {
        if self.bridge.is_empty()
            || self.bridge.len() > 10
            || !self.bridge.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(ConfigError::invalid(
                "providers.lab.bridge",
                format!("must be 1 to 10 letters or digits (got {:?})", self.bridge),
            ));
        }
        let subnet = crate::lab::parse_subnet(&self.subnet).ok_or_else(|| {
            ConfigError::invalid(
                "providers.lab.subnet",
                format!(
                    "must be an IPv4 subnet of /16 to /29 (got {:?})",
                    self.subnet
                ),
            )
        })?;
        for (i, f) in self.faults.iter().enumerate() {
            crate::access::remote::Fault::parse(f)
                .map_err(|e| ConfigError::invalid(format!("providers.lab.faults[{i}]"), e))?;
        }
        // Not under a home folder: the hosts' daemons run as their own accounts and must
        // reach it.
        let dir = if self.dir.trim().is_empty() {
            PathBuf::from(DEFAULT_LAB_DIR)
        } else {
            PathBuf::from(&self.dir)
        };
        Ok(crate::lab::LabSpec {
            bridge: self.bridge.clone(),
            subnet,
            dir,
        })
    }
}

/// Hostwinds' cloud API (`[providers.hostwinds]`): where it is, which environment variable
/// holds the key, and how mailfleet's plans and regions map to Hostwinds' ids.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostwindsConfig {
    /// The environment variable that holds the API key (the key itself is never in a file).
    pub api_key_env: String,
    /// The API's one endpoint; overridable for tests.
    #[serde(default = "default_hostwinds_endpoint")]
    pub endpoint: String,
    /// The OS template new instances are made from (`template` of `add_instance`).
    pub template: String,
    /// The firewall profile that opens SMTP, submission and SSH (`set_instance_firewall`).
    #[serde(default = "default_hostwinds_firewall")]
    pub smtp_firewall: String,
    /// Region name (as clusters use it) → Hostwinds `location_id`.
    pub locations: std::collections::BTreeMap<String, u32>,
    /// Plan name (as `[[plans]]` names it) → Hostwinds product id (`rid`).
    pub plans: std::collections::BTreeMap<String, u32>,
}

pub const HOSTWINDS_ENDPOINT: &str = "https://clients.hostwinds.com/cloud/api.php";

fn default_hostwinds_endpoint() -> String {
    HOSTWINDS_ENDPOINT.to_string()
}

fn default_hostwinds_firewall() -> String {
    "smtp".to_string()
}

/// How the engine reaches a cluster's machines to install and check the mail stack.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AccessKind {
    /// The simulated cloud's own machines (only for `provider = "sim"`).
    Sim,
    /// By what the provider reports of the instance; the machine is not contacted.
    ProviderView,
    /// Over SSH and SMTP to the machine itself.
    Ssh,
}

/// How much trouble a provider may be to the engine (`[providers.limits]`): after
/// `breaker_failures` calls in a row fail (timeouts, 5xx, rate limits), its circuit opens
/// and requests on it wait instead of spending their retries; after `breaker_cooldown`
/// one probe call is let through, and its success closes the circuit. At most
/// `max_in_flight` calls go to one provider at once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderLimits {
    pub breaker_failures: u32,
    #[serde(with = "duration_serde")]
    pub breaker_cooldown: Duration,
    pub max_in_flight: u32,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        ProviderLimits {
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            max_in_flight: 16,
        }
    }
}

/// The simulated cloud.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seed for the simulator's random choices.
    pub seed: u64,
    /// Probability that any one provider call fails, in `0.0..=1.0`.
    pub failure_rate: f64,
    /// `[min, max]` milliseconds each call takes.
    pub delay_ms: [u64; 2],
    /// `[min, max]` milliseconds for a new instance to get its IP and become active.
    pub boot_ms: [u64; 2],
    /// IPv4 CIDR pools that instance addresses are drawn from.
    pub ip_pools: Vec<String>,
    /// The engine plays each simulated node's monitoring agent: heartbeats and sending
    /// counts recorded as a real agent's are (see `engine::sim_agents`).
    pub agents: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            failure_rate: 0.0,
            delay_ms: [50, 400],
            boot_ms: [2000, 8000],
            ip_pools: vec!["198.51.100.0/24".to_string(), "203.0.113.0/24".to_string()],
            agents: true,
        }
    }
}

fn default_plan_kind() -> String {
    "vps".to_string()
}

/// A server size tenants can order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub name: String,
    pub cpu: u32,
    pub memory_gb: u32,
    pub storage_gb: u32,
    #[serde(default = "default_plan_kind")]
    pub kind: String,
}

/// A pool of capacity at one provider, in one region.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    /// Provider kind, one of [`KNOWN_PROVIDERS`].
    pub provider: String,
    pub region: String,
    /// The region's preferred cluster (at most one per region).
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub health: ClusterHealth,
    pub capacity: Capacity,
    /// How its machines are reached; by default the simulated cloud's own for `sim`, and
    /// SSH for a real cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessKind>,
}

impl ClusterConfig {
    /// How this cluster's machines are reached.
    pub fn access(&self) -> AccessKind {
        self.access.unwrap_or(if self.provider == "sim" {
            AccessKind::Sim
        } else {
            AccessKind::Ssh
        })
    }
}

/// Operator-declared health of a cluster.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ClusterHealth {
    #[default]
    Online,
    Degraded,
    Offline,
}

/// What a cluster can hold.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    pub cpu: u64,
    pub memory_gb: u64,
    pub storage_gb: u64,
    pub vm_slots: u64,
}

/// A customer whose servers we run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    pub quota: Quota,
    /// Who may approve this tenant's requests, besides `[approvals] approvers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
}

/// Who may decide pending requests, and how long a request may wait before its age turns
/// amber (`warn_after`) and then red (`breach_after`) in the console.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Approvers for every tenant. Empty (and no tenant list either): any operator may
    /// approve, though never a request they made themselves.
    pub approvers: Vec<String>,
    #[serde(with = "duration_serde")]
    pub warn_after: Duration,
    #[serde(with = "duration_serde")]
    pub breach_after: Duration,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            approvers: Vec::new(),
            warn_after: Duration::from_secs(3600),
            breach_after: Duration::from_secs(4 * 3600),
        }
    }
}

/// Scaling (seed 001): the engine files a provisioning request when the fleet's used
/// capacity stays at or above `capacity_threshold` over `window`, and a resize of a node
/// whose queue stays at or above `queue_threshold` messages for `queue_minutes`. Each goes
/// through the approval rules as an operator's request would. Off by default: a scale-out
/// spends money, on a tenant, region and plan only an operator can choose.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScalingConfig {
    pub enabled: bool,
    /// The share of the fleet's capacity (0.0 to 1.0, above 0) that, used over `window`,
    /// files a scale-out.
    pub capacity_threshold: f64,
    /// How long the fleet's use is measured over.
    #[serde(with = "duration_serde")]
    pub window: Duration,
    /// What a scale-out orders: the tenant, region and plan of `request create`, a label
    /// made of `label_prefix` and the time it is filed, and a domain (empty: none).
    pub tenant: String,
    pub region: String,
    pub plan: String,
    pub label_prefix: String,
    pub domain: String,
    /// Messages in a node's queue that, held for `queue_minutes`, file a resize of it.
    pub queue_threshold: u64,
    pub queue_minutes: u32,
    /// The plan a node is resized to; empty: the next larger plan of its own kind.
    pub resize_plan: String,
    /// The engine looks again after the store changes, at most this often.
    #[serde(with = "duration_serde")]
    pub interval: Duration,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            enabled: false,
            capacity_threshold: 0.8,
            window: Duration::from_secs(30 * 60),
            tenant: String::new(),
            region: String::new(),
            plan: String::new(),
            label_prefix: "scale".into(),
            domain: String::new(),
            queue_threshold: 1000,
            queue_minutes: 15,
            resize_plan: String::new(),
            interval: Duration::from_secs(60),
        }
    }
}

/// The longest label prefix: the label adds "-YYYYMMDDHHMMSS" and stays a 63-character
/// DNS label.
pub const SCALING_PREFIX_MAX: usize = 63 - 15;

/// Who may act for someone else.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Operating-system accounts allowed to name another actor with `--as NAME` (meant for
    /// automation accounts); the history then records `NAME (via ACCOUNT)`. Empty: nobody.
    pub impersonators: Vec<String>,
}

/// The most a tenant may use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub nodes: u64,
    pub cpu: u64,
    pub memory_gb: u64,
    pub storage_gb: u64,
}

/// Orders matching a rule wait for an operator's approval. Conditions left
/// unset (or empty) match anything.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRuleConfig {
    pub name: String,
    #[serde(default)]
    pub priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_memory_gb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_storage_gb: Option<u32>,
    /// Plan kinds the rule applies to.
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub regions: Vec<String>,
}

impl Config {
    /// The plan called `name`.
    /// The approval rules as the domain reads them.
    pub fn approval_rules(&self) -> Vec<crate::domain::approval::ApprovalRule> {
        self.approval_rules
            .iter()
            .map(|r| crate::domain::approval::ApprovalRule {
                name: r.name.clone(),
                priority: r.priority,
                tenant: r.tenant.clone(),
                min_cpu: r.min_cpu,
                min_memory_gb: r.min_memory_gb,
                min_storage_gb: r.min_storage_gb,
                types: r.types.clone(),
                regions: r.regions.clone(),
            })
            .collect()
    }

    pub fn plan(&self, name: &str) -> Option<&PlanConfig> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The tenant called `name`.
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// Whether `who` holds the approver role for `tenant`'s requests. With no approver
    /// named anywhere, the role is open to every operator.
    pub fn may_approve(&self, who: &str, tenant: &str) -> bool {
        let tenant_list = self
            .tenant(tenant)
            .map(|t| t.approvers.as_slice())
            .unwrap_or(&[]);
        let nobody_named = self.approvals.approvers.is_empty()
            && self.tenants.iter().all(|t| t.approvers.is_empty());
        let named = |a: &String| normalise(a).is_ok_and(|a| a == who);
        nobody_named || self.approvals.approvers.iter().any(named) || tenant_list.iter().any(named)
    }

    /// Whether the operating-system account `account` may act for someone else (`--as`).
    pub fn may_impersonate(&self, account: &str) -> bool {
        self.identity
            .impersonators
            .iter()
            .any(|a| normalise(a).is_ok_and(|a| a == account))
    }

    /// Every region with at least one cluster, sorted, without repeats.
    pub fn regions(&self) -> Vec<&str> {
        let mut regions: Vec<&str> = self.clusters.iter().map(|c| c.region.as_str()).collect();
        regions.sort_unstable();
        regions.dedup();
        regions
    }

    /// The clusters in `region`, in file order.
    pub fn clusters_in<'a>(
        &'a self,
        region: &'a str,
    ) -> impl Iterator<Item = &'a ClusterConfig> + 'a {
        self.clusters.iter().filter(move |c| c.region == region)
    }

    /// Checks rules that span fields; the error names the first offending key.
    /// Every warm-up plan: the built-in ones, then the config's (replacing a built-in one of
    /// the same name). Validation has already built each, so none is dropped here.
    pub fn warmup_plans(&self) -> Vec<crate::domain::warmup::WarmupPlan> {
        let mut plans: Vec<crate::domain::warmup::WarmupPlan> = Vec::new();
        for spec in crate::domain::warmup::builtin_specs()
            .iter()
            .chain(&self.warmup.plans)
        {
            if let Ok(plan) = spec.build() {
                plans.retain(|p| p.name != plan.name);
                plans.push(plan);
            }
        }
        plans
    }

    /// The plan new nodes follow.
    pub fn default_warmup_plan(&self) -> Option<crate::domain::warmup::WarmupPlan> {
        self.warmup_plans()
            .into_iter()
            .find(|p| p.name == self.warmup.default_plan)
    }

    fn validate_approvals(&self) -> Result<(), ConfigError> {
        let a = &self.approvals;
        if a.warn_after.is_zero() || a.breach_after <= a.warn_after {
            return Err(ConfigError::invalid(
                "approvals.breach_after",
                "must be longer than approvals.warn_after, and both above zero",
            ));
        }
        let lists = std::iter::once(("approvals.approvers".to_string(), &a.approvers)).chain(
            self.tenants
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("tenants[{i}].approvers"), &t.approvers)),
        );
        let impersonators = std::iter::once((
            "identity.impersonators".to_string(),
            &self.identity.impersonators,
        ));
        for (key, list) in lists.chain(impersonators) {
            for (i, name) in list.iter().enumerate() {
                normalise(name)
                    .map_err(|e| ConfigError::invalid(format!("{key}[{i}]"), e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Lowercases every actor name (approvers, impersonators), once they are valid.
    fn normalise_names(&mut self) {
        let lists = std::iter::once(&mut self.approvals.approvers)
            .chain(std::iter::once(&mut self.identity.impersonators))
            .chain(self.tenants.iter_mut().map(|t| &mut t.approvers));
        for list in lists {
            for name in list.iter_mut() {
                if let Ok(n) = normalise(name) {
                    *name = n;
                }
            }
        }
    }

    /// The offset at which warm-up days start (validated at load).
    pub fn warmup_offset(&self) -> chrono::FixedOffset {
        parse_utc_offset(&self.warmup.utc_offset)
            .unwrap_or_else(|_| chrono::Offset::fix(&chrono::Utc))
    }

    fn validate_warmup(&self) -> Result<(), ConfigError> {
        parse_utc_offset(&self.warmup.utc_offset)
            .map_err(|why| ConfigError::invalid("warmup.utc_offset", why))?;
        let t = &self.warmup.thresholds;
        for (key, v) in [
            ("hold_bounce_rate", t.hold_bounce_rate),
            ("hold_deferral_rate", t.hold_deferral_rate),
            ("pause_bounce_rate", t.pause_bounce_rate),
            ("pause_complaint_rate", t.pause_complaint_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::invalid(
                    format!("warmup.thresholds.{key}"),
                    "must be a fraction between 0.0 and 1.0",
                ));
            }
        }
        if t.hold_bounce_rate > t.pause_bounce_rate {
            return Err(ConfigError::invalid(
                "warmup.thresholds.hold_bounce_rate",
                "must not be above pause_bounce_rate (a hold is the milder step)",
            ));
        }
        check_names(
            "warmup.plans",
            self.warmup.plans.iter().map(|p| p.name.as_str()),
        )?;
        for (i, spec) in self.warmup.plans.iter().enumerate() {
            spec.build()
                .map_err(|why| ConfigError::invalid(format!("warmup.plans[{i}]"), why))?;
        }
        if !self
            .warmup_plans()
            .iter()
            .any(|p| p.name == self.warmup.default_plan)
        {
            return Err(ConfigError::invalid(
                "warmup.default_plan",
                format!(
                    "{:?} is not a warm-up plan (plans: {})",
                    self.warmup.default_plan,
                    self.warmup_plans()
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The zones to check: the configured ones, or the built-in ones.
    pub fn blocklist_zones(&self) -> Vec<crate::reputation::dnsbl::Zone> {
        if self.blocklists.zones.is_empty() {
            builtin_zones().to_vec()
        } else {
            self.blocklists.zones.clone()
        }
    }

    pub fn checker_config(&self) -> crate::reputation::dnsbl::CheckerConfig {
        let b = &self.blocklists;
        crate::reputation::dnsbl::CheckerConfig {
            resolver: b.resolver.as_deref().and_then(|r| parse_resolver(r).ok()),
            timeout: b.timeout,
            concurrency: b.concurrency,
        }
    }

    fn validate_blocklists(&self) -> Result<(), ConfigError> {
        let b = &self.blocklists;
        if let Some(r) = &b.resolver {
            parse_resolver(r).map_err(|why| ConfigError::invalid("blocklists.resolver", why))?;
        }
        if b.interval < Duration::from_secs(10) {
            return Err(ConfigError::invalid(
                "blocklists.interval",
                "must be at least 10s",
            ));
        }
        if b.timeout < Duration::from_millis(50) || b.timeout > Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "blocklists.timeout",
                "must be between 50ms and 60s",
            ));
        }
        if !(1..=1024).contains(&b.concurrency) {
            return Err(ConfigError::invalid(
                "blocklists.concurrency",
                "must be between 1 and 1024",
            ));
        }
        if !(0.0..=1.0).contains(&b.bounce_alert) {
            return Err(ConfigError::invalid(
                "blocklists.bounce_alert",
                "must be a fraction between 0.0 and 1.0",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, z) in b.zones.iter().enumerate() {
            let name = z.zone.trim_end_matches('.');
            let valid = !name.is_empty()
                && name.len() <= 200
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                });
            if !valid {
                return Err(ConfigError::invalid(
                    format!("blocklists.zones[{i}].zone"),
                    format!("{:?} is not a DNS zone name", z.zone),
                ));
            }
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(ConfigError::invalid(
                    format!("blocklists.zones[{i}].zone"),
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        mail::env_name("store.password_env", &self.store.password_env)?;
        let k = &self.dkim.key_env;
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::invalid(
                "dkim.key_env",
                format!("{k:?} is not an environment variable name"),
            ));
        }
        let sel = &self.dkim.selector;
        if sel.is_empty()
            || sel.len() > 63
            || !sel.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ConfigError::invalid(
                "dkim.selector",
                format!("{sel:?} is not a DNS label"),
            ));
        }
        self.validate_engine()?;
        self.dns.validate()?;
        self.tls.validate(&self.dns)?;
        self.verify.validate()?;
        self.serve.validate()?;
        self.alerting.validate()?;
        self.validate_blocklists()?;
        self.validate_warmup()?;
        self.validate_approvals()?;
        if self.store.busy_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "store.busy_timeout",
                "must be greater than zero",
            ));
        }
        self.validate_sim()?;

        check_names("plans", self.plans.iter().map(|p| p.name.as_str()))?;
        for (i, plan) in self.plans.iter().enumerate() {
            for (field, value) in [
                ("cpu", plan.cpu),
                ("memory_gb", plan.memory_gb),
                ("storage_gb", plan.storage_gb),
            ] {
                if value == 0 {
                    return Err(ConfigError::invalid(
                        format!("plans[{i}].{field}"),
                        "must be at least 1",
                    ));
                }
            }
        }

        check_names("clusters", self.clusters.iter().map(|c| c.name.as_str()))?;
        let mut region_default: HashMap<&str, &str> = HashMap::new();
        for (i, cluster) in self.clusters.iter().enumerate() {
            if !KNOWN_PROVIDERS.contains(&cluster.provider.as_str()) {
                return Err(ConfigError::invalid(
                    format!("clusters[{i}].provider"),
                    format!(
                        "{:?} is not a known provider (known: {})",
                        cluster.provider,
                        KNOWN_PROVIDERS.join(", ")
                    ),
                ));
            }
            check_name(&format!("clusters[{i}].region"), &cluster.region)?;
            self.validate_access(i, cluster)?;
            if cluster.provider == "hostwinds" {
                self.validate_hostwinds_cluster(i, cluster)?;
            }
            if cluster.default {
                if let Some(first) = region_default.insert(&cluster.region, &cluster.name) {
                    return Err(ConfigError::invalid(
                        format!("clusters[{i}].default"),
                        format!(
                            "is true but region {:?} already has default cluster {first:?}",
                            cluster.region
                        ),
                    ));
                }
            }
        }

        check_names("tenants", self.tenants.iter().map(|t| t.name.as_str()))?;

        let mut rule_names: HashMap<&str, usize> = HashMap::new();
        for (i, rule) in self.approval_rules.iter().enumerate() {
            let key = format!("approval_rules[{i}].name");
            if rule.name.trim().is_empty() {
                return Err(ConfigError::invalid(key, "must not be empty"));
            }
            if rule_names.insert(&rule.name, i).is_some() {
                return Err(ConfigError::invalid(
                    key,
                    format!("{:?} is defined twice", rule.name),
                ));
            }
            if let Some(tenant) = &rule.tenant {
                if self.tenant(tenant).is_none() {
                    return Err(ConfigError::invalid(
                        format!("approval_rules[{i}].tenant"),
                        format!("{tenant:?} is not a defined tenant"),
                    ));
                }
            }
        }
        self.validate_scaling()
    }

    /// `[scaling]`: every key checked whether or not it is on (a mistake shows before it is
    /// switched on); the scale-out's tenant, region and plan are required only when it is.
    fn validate_scaling(&self) -> Result<(), ConfigError> {
        let s = &self.scaling;
        if !(s.capacity_threshold > 0.0 && s.capacity_threshold <= 1.0) {
            return Err(ConfigError::invalid(
                "scaling.capacity_threshold",
                format!(
                    "must be above 0.0 and at most 1.0 (got {})",
                    s.capacity_threshold
                ),
            ));
        }
        // Caps are per day: a window longer than a day would span caps of several days.
        if s.window < Duration::from_secs(60) || s.window > Duration::from_secs(86_400) {
            return Err(ConfigError::invalid(
                "scaling.window",
                "must be between 1m and 1d",
            ));
        }
        if s.queue_threshold == 0 {
            return Err(ConfigError::invalid(
                "scaling.queue_threshold",
                "must be at least 1 message",
            ));
        }
        if !(1..=1440).contains(&s.queue_minutes) {
            return Err(ConfigError::invalid(
                "scaling.queue_minutes",
                "must be between 1 and 1440",
            ));
        }
        if s.interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "scaling.interval",
                "must be at least 1s",
            ));
        }
        let prefix = &s.label_prefix;
        crate::domain::validate::validate_label("the prefix", prefix)
            .map_err(|e| ConfigError::invalid("scaling.label_prefix", e.to_string()))?;
        if prefix.len() > SCALING_PREFIX_MAX {
            return Err(ConfigError::invalid(
                "scaling.label_prefix",
                format!("must be at most {SCALING_PREFIX_MAX} characters (the label adds the time it is filed)"),
            ));
        }
        if !s.domain.is_empty() {
            crate::domain::validate::validate_domain("the domain", &s.domain)
                .map_err(|e| ConfigError::invalid("scaling.domain", e.to_string()))?;
        }
        let known = |v: Vec<&str>| v.join(", ");
        if !s.tenant.is_empty() && self.tenant(&s.tenant).is_none() {
            return Err(ConfigError::invalid(
                "scaling.tenant",
                format!(
                    "{:?} is not a defined tenant (known: {})",
                    s.tenant,
                    known(self.tenants.iter().map(|t| t.name.as_str()).collect())
                ),
            ));
        }
        if !s.region.is_empty() && !self.regions().contains(&s.region.as_str()) {
            return Err(ConfigError::invalid(
                "scaling.region",
                format!(
                    "{:?} is not a region with a cluster (known: {})",
                    s.region,
                    known(self.regions())
                ),
            ));
        }
        for (key, plan) in [
            ("scaling.plan", &s.plan),
            ("scaling.resize_plan", &s.resize_plan),
        ] {
            if !plan.is_empty() && self.plan(plan).is_none() {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "{plan:?} is not a defined plan (known: {})",
                        known(self.plans.iter().map(|p| p.name.as_str()).collect())
                    ),
                ));
            }
        }
        if s.enabled {
            for (key, value) in [
                ("scaling.tenant", &s.tenant),
                ("scaling.region", &s.region),
                ("scaling.plan", &s.plan),
            ] {
                if value.is_empty() {
                    return Err(ConfigError::invalid(
                        key,
                        "must be set when scaling is enabled (what a scale-out orders)",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_engine(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        if e.max_in_flight_per_tenant < 1 {
            return Err(ConfigError::invalid(
                "engine.max_in_flight_per_tenant",
                "must be at least 1",
            ));
        }
        if e.max_concurrent < 1 {
            return Err(ConfigError::invalid(
                "engine.max_concurrent",
                "must be at least 1",
            ));
        }
        if e.retry_backoff.is_empty() {
            return Err(ConfigError::invalid(
                "engine.retry_backoff",
                "must list at least one delay",
            ));
        }
        if let Some(i) = e.retry_backoff.iter().position(Duration::is_zero) {
            return Err(ConfigError::invalid(
                format!("engine.retry_backoff[{i}]"),
                "must be greater than zero",
            ));
        }
        for (key, value) in [
            ("engine.retry_cap", e.retry_cap),
            ("engine.stuck_after", e.stuck_after),
            ("engine.shutdown_grace", e.shutdown_grace),
            ("engine.lease_ttl", e.lease_ttl),
            ("engine.call_timeout", e.call_timeout),
            ("engine.poll_interval", e.poll_interval),
            ("engine.tick", e.tick),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        check_fraction("engine.retry_jitter", e.retry_jitter)
    }

    /// A cluster's `access` fits its provider.
    fn validate_access(&self, i: usize, c: &ClusterConfig) -> Result<(), ConfigError> {
        let key = format!("clusters[{i}].access");
        match (c.provider.as_str(), c.access()) {
            ("sim", AccessKind::Sim) => Ok(()),
            ("sim", _) => Err(ConfigError::invalid(
                key,
                "a sim cluster's machines are the simulated cloud's own: leave access unset (or \"sim\")",
            )),
            (_, AccessKind::Sim) => Err(ConfigError::invalid(
                key,
                format!(
                    "\"sim\" is for the simulated cloud's machines, not {:?}'s",
                    c.provider
                ),
            )),
            ("lab", AccessKind::Ssh) => Ok(()),
            ("manual", AccessKind::Ssh) => Err(ConfigError::invalid(
                key,
                format!(
                    "cluster {:?}: a manual provider's servers are the vendor's and do not take \
                     mailfleet's SSH key at creation: set access = \"provider-view\"",
                    c.name
                ),
            )),
            (_, AccessKind::Ssh) if self.verify.sink_listen.is_empty() => Err(ConfigError::invalid(
                "verify.sink_listen",
                format!(
                    "cluster {:?} reaches its nodes over SSH, and they send their test message to \
                     mailfleet's sink: set an \"IP:PORT\" they can reach (or access = \"provider-view\")",
                    c.name
                ),
            )),
            (_, AccessKind::Ssh) => Ok(()),
            (_, AccessKind::ProviderView) => Ok(()),
        }
    }

    /// A Hostwinds cluster has the provider's section, and a Hostwinds id for its region
    /// and for every plan it can be ordered.
    fn validate_hostwinds_cluster(&self, i: usize, c: &ClusterConfig) -> Result<(), ConfigError> {
        let Some(h) = &self.providers.hostwinds else {
            return Err(ConfigError::invalid(
                format!("clusters[{i}].provider"),
                format!(
                    "cluster {:?} uses \"hostwinds\", which needs a [providers.hostwinds] section",
                    c.name
                ),
            ));
        };
        if !h.locations.contains_key(&c.region) {
            return Err(ConfigError::invalid(
                format!("clusters[{i}].region"),
                format!(
                    "cluster {:?}: region {:?} has no Hostwinds location_id in providers.hostwinds.locations",
                    c.name, c.region
                ),
            ));
        }
        if let Some(p) = self.plans.iter().find(|p| !h.plans.contains_key(&p.name)) {
            return Err(ConfigError::invalid(
                "providers.hostwinds.plans",
                format!(
                    "plan {:?} has no Hostwinds rid, and cluster {:?} can be ordered it",
                    p.name, c.name
                ),
            ));
        }
        Ok(())
    }

    fn validate_sim(&self) -> Result<(), ConfigError> {
        self.providers.lab.spec()?;
        if let Some(h) = &self.providers.hostwinds {
            mail::env_name("providers.hostwinds.api_key_env", &h.api_key_env)?;
            mail::http_url("providers.hostwinds.endpoint", &h.endpoint)?;
            for (key, v) in [
                ("providers.hostwinds.template", &h.template),
                ("providers.hostwinds.smtp_firewall", &h.smtp_firewall),
            ] {
                if v.trim().is_empty() || v.chars().any(char::is_control) {
                    return Err(ConfigError::invalid(key, "must be a non-empty name"));
                }
            }
        }
        let limits = &self.providers.limits;
        for (key, v, max) in [
            (
                "providers.limits.breaker_failures",
                limits.breaker_failures,
                1000,
            ),
            ("providers.limits.max_in_flight", limits.max_in_flight, 1024),
        ] {
            if v == 0 || v > max {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be between 1 and {max} (got {v})"),
                ));
            }
        }
        if limits.breaker_cooldown.is_zero() {
            return Err(ConfigError::invalid(
                "providers.limits.breaker_cooldown",
                "must be greater than zero",
            ));
        }
        let sim = &self.providers.sim;
        check_fraction("providers.sim.failure_rate", sim.failure_rate)?;
        for (key, [min, max]) in [
            ("providers.sim.delay_ms", sim.delay_ms),
            ("providers.sim.boot_ms", sim.boot_ms),
        ] {
            if min > max {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be [min, max] with min <= max (got [{min}, {max}])"),
                ));
            }
        }
        if sim.ip_pools.is_empty() {
            return Err(ConfigError::invalid(
                "providers.sim.ip_pools",
                "must list at least one pool",
            ));
        }
        for (i, pool) in sim.ip_pools.iter().enumerate() {
            check_cidr(pool)
                .map_err(|m| ConfigError::invalid(format!("providers.sim.ip_pools[{i}]"), m))?;
        }
        Ok(())
    }
}

/// A fraction must lie in `0.0..=1.0` (NaN does not).
fn check_fraction(key: &str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be between 0.0 and 1.0 (got {value})"),
        ))
    }
}

/// Names must be valid (see [`check_name`]) and unique within `section`.
fn check_names<'a>(section: &str, names: impl Iterator<Item = &'a str>) -> Result<(), ConfigError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        let key = format!("{section}[{i}].name");
        check_name(&key, name)?;
        if seen.insert(name, i).is_some() {
            return Err(ConfigError::invalid(
                key,
                format!("{name:?} is defined twice"),
            ));
        }
    }
    Ok(())
}

/// A name is 1–63 characters of `[a-z0-9-]`, not starting with `-`.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::invalid(key, "must not be empty"));
    }
    let valid = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "{name:?} is not a valid name: use lowercase letters, digits and '-', \
                 not starting with '-', at most 63 characters"
            ),
        ))
    }
}

/// An IPv4 network in CIDR form with a prefix of /8 to /30 and no host bits set.
fn check_cidr(pool: &str) -> Result<(), String> {
    let bad = || format!("{pool:?} is not an IPv4 CIDR such as \"198.51.100.0/24\"");
    let (addr, prefix) = pool.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let prefix: u32 = prefix.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&prefix) {
        return Err(format!(
            "{pool:?} has prefix /{prefix}; pools must be between /8 and /30"
        ));
    }
    let mask = u32::MAX << (32 - prefix);
    let bits = u32::from(addr);
    if bits & !mask != 0 {
        let network = Ipv4Addr::from(bits & mask);
        return Err(format!(
            "{pool:?} has host bits set (did you mean \"{network}/{prefix}\"?)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, text: &str) -> (String, String) {
        (name.to_string(), text.to_string())
    }

    /// Built-in defaults plus one user layer.
    fn with_user(text: &str) -> Result<Config, ConfigError> {
        from_layers(&[
            layer(DEFAULTS_SOURCE, DEFAULT_TOML),
            layer("/home/x/.config/mailfleet/config.toml", text),
        ])
    }

    /// Built-in defaults plus one user layer, expecting an error message.
    fn user_error(text: &str) -> String {
        match with_user(text) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => {
                let message = e.to_string();
                assert!(!message.contains('\n'), "not one line: {message}");
                message
            }
        }
    }

    #[test]
    fn the_store_s_password_variable_must_be_a_variable_name() {
        let message = user_error("[store]\npassword_env = \"PG PASS\"\n");
        assert!(message.contains("store.password_env"), "{message}");
        assert!(with_user("[store]\npassword_env = \"TEAM_PGPASS\"\n").is_ok());
    }

    #[test]
    fn actor_names_in_the_config_are_lowercased_and_checked() {
        let config = with_user(
            "[approvals]\napprovers = [\"Ops-Lead\"]\n[identity]\nimpersonators = [\"CI-Bot\"]\n",
        )
        .expect("valid");
        assert_eq!(config.approvals.approvers, ["ops-lead"]);
        assert!(config.may_approve("ops-lead", "acme"));
        assert!(
            !config.may_approve("Ops-Lead", "acme"),
            "callers pass normalised names"
        );
        assert!(config.may_impersonate("ci-bot"));
        assert!(!config.may_impersonate("root"));
        let message = user_error("[approvals]\napprovers = [\"b\\u200bob\"]\n");
        assert!(message.contains("approvals.approvers[0]"), "{message}");
        assert!(message.contains("\\u{200b}"), "{message}");
        let message = user_error(&format!(
            "[identity]\nimpersonators = [\"{}\"]\n",
            "a".repeat(65)
        ));
        assert!(message.contains("identity.impersonators[0]"), "{message}");
        assert!(!with_user("").expect("defaults").may_impersonate("root"));
    }

    #[test]
    fn embedded_defaults_load_and_validate() {
        let config = from_layers(&[layer(DEFAULTS_SOURCE, DEFAULT_TOML)]).unwrap();
        // Sections spelled out in the file match the Default impls exactly.
        assert_eq!(config.engine, EngineConfig::default());
        assert_eq!(config.store, StoreConfig::default());
        assert_eq!(config.providers, ProvidersConfig::default());
        assert_eq!(config.blocklists, BlocklistsConfig::default());

        let names: Vec<&str> = config.plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ssd-1", "ssd-2", "ssd-4", "ssd-8", "ssd-16"]);
        let ssd4 = config.plan("ssd-4").unwrap();
        assert_eq!((ssd4.cpu, ssd4.memory_gb, ssd4.storage_gb), (4, 8, 100));
        assert_eq!(ssd4.kind, "vps");

        assert_eq!(
            config.regions(),
            ["amsterdam", "dallas", "eu-west-1", "seattle"]
        );
        let dallas: Vec<&str> = config
            .clusters_in("dallas")
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(dallas, ["sim-dallas", "sim-dallas-b"]);
        assert!(config.cluster("sim-dallas").unwrap().default);
        assert!(config.clusters.iter().all(|c| c.provider == "sim"));

        let acme = config.tenant("acme").unwrap();
        assert_eq!(
            acme.quota,
            Quota {
                nodes: 200,
                cpu: 400,
                memory_gb: 800,
                storage_gb: 20000
            }
        );
        assert!(config.tenant("globex").is_some());
        assert!(config.tenant("initech").is_some());

        assert_eq!(config.approval_rules.len(), 1);
        let rule = &config.approval_rules[0];
        assert_eq!(rule.name, "High-Resource VPS Approval");
        assert_eq!(rule.priority, 10);
        assert_eq!(
            (rule.min_cpu, rule.min_memory_gb, rule.min_storage_gb),
            (Some(16), Some(32), Some(500))
        );
        assert_eq!(rule.types, ["vps"]);
        assert_eq!(rule.regions, ["eu-west-1"]);
        assert_eq!(rule.tenant, None);
    }

    #[test]
    fn user_layer_overrides_one_key_and_keeps_the_rest() {
        let config =
            with_user("[engine]\nretry_cap = \"10m\"\n\n[providers.sim]\nseed = 7\n").unwrap();
        assert_eq!(config.engine.retry_cap, Duration::from_secs(600));
        assert_eq!(config.providers.sim.seed, 7);
        // Neighbouring keys in the same tables keep their defaults.
        assert_eq!(config.engine.max_retries, 3);
        assert_eq!(config.engine.tick, Duration::from_millis(500));
        assert_eq!(config.providers.sim.delay_ms, [50, 400]);
        // Untouched sections and arrays are kept.
        assert_eq!(config.plans.len(), 5);
        assert_eq!(config.clusters.len(), 5);
        assert_eq!(config.store, StoreConfig::default());
    }

    #[test]
    fn arrays_of_tables_replace_not_append() {
        let config = with_user(
            "[[plans]]\nname = \"tiny\"\ncpu = 1\nmemory_gb = 1\nstorage_gb = 10\nkind = \"container\"\n\n\
             [providers.sim]\nip_pools = [\"10.0.0.0/16\"]\n",
        )
        .unwrap();
        assert_eq!(config.plans.len(), 1);
        assert_eq!(config.plans[0].name, "tiny");
        assert_eq!(config.plans[0].kind, "container");
        assert!(config.plan("ssd-1").is_none());
        // Plain arrays are replaced too.
        assert_eq!(config.providers.sim.ip_pools, ["10.0.0.0/16"]);
        // Other arrays of tables are untouched.
        assert_eq!(config.tenants.len(), 3);
    }

    #[test]
    fn later_layers_win_over_earlier_ones() {
        let config = from_layers(&[
            layer(DEFAULTS_SOURCE, DEFAULT_TOML),
            layer(
                "user.toml",
                "[engine]\nmax_retries = 4\nmax_concurrent = 8\n",
            ),
            layer("explicit.toml", "[engine]\nmax_retries = 9\n"),
        ])
        .unwrap();
        assert_eq!(config.engine.max_retries, 9);
        assert_eq!(config.engine.max_concurrent, 8);
    }

    #[test]
    fn a_key_with_no_value_at_the_end_of_the_file_is_named() {
        let message = user_error("[engine]\nmax_retries =");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("`max_retries` has no value"), "{message}");
        let message = user_error("[engine]\nmax_retries = [");
        assert!(!message.trim_end().ends_with(':'), "{message}");
    }

    #[test]
    fn mistyped_key_names_key_file_and_line() {
        let message = user_error("[engine]\nmax_in_flight_per_tenant = 4\nmax_in_fligt = 2\n");
        assert!(
            message.starts_with("config /home/x/.config/mailfleet/config.toml: line 3: "),
            "{message}"
        );
        assert!(
            message.contains("unknown field `max_in_fligt`"),
            "{message}"
        );
        assert!(message.contains("max_in_flight_per_tenant"), "{message}");
    }

    #[test]
    fn unknown_section_is_rejected() {
        let message = user_error("\n[enigne]\ntick = \"1s\"\n");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("unknown field `enigne`"), "{message}");
    }

    #[test]
    fn bad_duration_names_the_value_and_line() {
        let message = user_error("# slower\n[engine]\nretry_cap = \"5 sec\"\n");
        assert!(message.contains("config.toml: line 3: "), "{message}");
        assert!(
            message.contains(
                "invalid duration \"5 sec\": expected a number followed by ms, s, m, h or d (e.g. \"30s\")"
            ),
            "{message}"
        );

        let message = user_error("[engine]\nretry_backoff = [\"5s\", \"10x\"]\n");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("invalid duration \"10x\""), "{message}");

        let message = user_error("[store]\nbusy_timeout = 5\n");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("duration string"), "{message}");
    }

    #[test]
    fn syntax_error_is_one_line_with_line_number() {
        let message = user_error("[engine]\ntick = \"1s\"\n[providers.sim\nseed = 1\n");
        assert!(message.contains("config.toml: line 3: "), "{message}");
        assert!(message.contains("invalid table header"), "{message}");
    }

    #[test]
    fn ssh_access_fits_its_provider_and_has_a_sink_to_send_to() {
        let cluster = |provider: &str, extra: &str| {
            format!(
                "[[clusters]]\nname = \"c1\"\nprovider = \"{provider}\"\nregion = \"dallas\"\n\
                 default = true\ncapacity = {{ cpu = 8, memory_gb = 8, storage_gb = 100, vm_slots = 2 }}\n{extra}"
            )
        };
        // A lab's nodes are SSH's by default, its sink on the lab's gateway.
        let lab = with_user(&cluster("lab", "")).expect("lab over ssh");
        assert_eq!(lab.clusters[0].access(), AccessKind::Ssh);
        let manual = user_error(&cluster("manual", "access = \"ssh\"\n"));
        assert!(
            manual.contains("clusters[0].access") && manual.contains("provider-view"),
            "{manual}"
        );
        let bad_sink = user_error(&format!(
            "{}[verify]\nsink_listen = \"0.0.0.0:2525\"\n",
            cluster("lab", "")
        ));
        assert!(bad_sink.contains("verify.sink_listen"), "{bad_sink}");
        let bad_fault = user_error(&format!(
            "[providers.lab]\nfaults = [\"mx1:dns\"]\n{}",
            cluster("lab", "")
        ));
        assert!(bad_fault.contains("providers.lab.faults[0]"), "{bad_fault}");
    }

    #[test]
    fn errors_name_the_layer_they_come_from() {
        let err = from_layers(&[
            layer("first.toml", "[engine]\nmax_retries = 2\n"),
            layer("second.toml", "\n\n[engine]\nmax_retries = -1\n"),
        ])
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("config second.toml: line 4: "),
            "{message}"
        );
        assert!(matches!(err, ConfigError::Parse { line: Some(4), .. }));
    }

    #[test]
    fn missing_required_field_is_named() {
        let message = user_error(
            "[[plans]]\nname = \"ssd-1\"\ncpu = 1\nmemory_gb = 1\nstorage_gb = 30\n\n\
             [[plans]]\nname = \"ssd-2\"\nmemory_gb = 2\nstorage_gb = 50\n",
        );
        assert!(message.contains("missing field `cpu`"), "{message}");
        // The span covers the second [[plans]] entry, which starts on line 7.
        assert!(message.contains("line 7"), "{message}");

        let message = user_error(
            "[[clusters]]\nname = \"c\"\nprovider = \"sim\"\nregion = \"r\"\n\
             capacity = { cpu = 1, memory_gb = 1, storage_gb = 1 }\n",
        );
        assert!(message.contains("missing field `vm_slots`"), "{message}");
        assert!(message.contains("line 5"), "{message}");
    }

    #[test]
    fn duplicate_plan_is_rejected() {
        let plan = |name: &str| {
            format!("[[plans]]\nname = \"{name}\"\ncpu = 1\nmemory_gb = 1\nstorage_gb = 30\n\n")
        };
        let text = [plan("ssd-1"), plan("ssd-2"), plan("ssd-1")].concat();
        let message = user_error(&text);
        assert_eq!(message, "config: plans[2].name \"ssd-1\" is defined twice");
    }

    #[test]
    fn provider_limits_out_of_range_are_rejected_naming_the_field() {
        let message = user_error("[providers.limits]\nbreaker_failures = 0\n");
        assert!(
            message.starts_with(
                "config: providers.limits.breaker_failures must be between 1 and 1000"
            ),
            "{message}"
        );
        let message = user_error("[providers.limits]\nmax_in_flight = 5000\n");
        assert!(
            message.contains("providers.limits.max_in_flight"),
            "{message}"
        );
        let message = user_error("[providers.limits]\nbreaker_cooldown = \"0s\"\n");
        assert!(
            message.contains("providers.limits.breaker_cooldown"),
            "{message}"
        );
        assert!(with_user("[providers.limits]\nbreaker_failures = 3\nmax_in_flight = 2\n").is_ok());
    }

    #[test]
    fn failure_rate_out_of_range_is_rejected() {
        let message = user_error("[providers.sim]\nfailure_rate = 1.5\n");
        assert!(
            message.starts_with("config: providers.sim.failure_rate must be between 0.0 and 1.0"),
            "{message}"
        );
        assert!(with_user("[providers.sim]\nfailure_rate = 1.0\n").is_ok());
        assert!(with_user("[providers.sim]\nfailure_rate = -0.1\n").is_err());
    }

    #[test]
    fn cross_field_rules_name_the_key() {
        let cluster = |name: &str, region: &str, extra: &str| {
            format!(
                "[[clusters]]\nname = \"{name}\"\nprovider = \"sim\"\nregion = \"{region}\"\n{extra}\
                 capacity = {{ cpu = 1, memory_gb = 1, storage_gb = 1, vm_slots = 1 }}\n\n"
            )
        };
        let cases: Vec<(String, &str)> = vec![
            (
                "[engine]\nmax_in_flight_per_tenant = 0\n".into(),
                "config: engine.max_in_flight_per_tenant must be at least 1",
            ),
            (
                "[engine]\nmax_concurrent = 0\n".into(),
                "config: engine.max_concurrent must be at least 1",
            ),
            (
                "[engine]\nretry_backoff = []\n".into(),
                "config: engine.retry_backoff must list at least one delay",
            ),
            (
                "[engine]\nretry_backoff = [\"1s\", \"0s\"]\n".into(),
                "config: engine.retry_backoff[1] must be greater than zero",
            ),
            (
                "[engine]\nlease_ttl = \"0ms\"\n".into(),
                "config: engine.lease_ttl must be greater than zero",
            ),
            (
                "[engine]\nretry_jitter = 2.0\n".into(),
                "config: engine.retry_jitter must be between 0.0 and 1.0",
            ),
            (
                "[store]\nbusy_timeout = \"0s\"\n".into(),
                "config: store.busy_timeout must be greater than zero",
            ),
            (
                "[providers.sim]\ndelay_ms = [400, 50]\n".into(),
                "config: providers.sim.delay_ms must be [min, max] with min <= max (got [400, 50])",
            ),
            (
                "[providers.sim]\nboot_ms = [9, 1]\n".into(),
                "config: providers.sim.boot_ms must be [min, max]",
            ),
            (
                "[providers.sim]\nip_pools = [\"10.0.0.0/8\", \"10.1.0.0/31\"]\n".into(),
                "config: providers.sim.ip_pools[1] \"10.1.0.0/31\" has prefix /31",
            ),
            (
                "[providers.sim]\nip_pools = [\"10.0.0.0/7\"]\n".into(),
                "config: providers.sim.ip_pools[0] \"10.0.0.0/7\" has prefix /7",
            ),
            (
                "[providers.sim]\nip_pools = [\"10.0.0.300/24\"]\n".into(),
                "config: providers.sim.ip_pools[0] \"10.0.0.300/24\" is not an IPv4 CIDR",
            ),
            (
                "[providers.sim]\nip_pools = [\"10.0.0.0\"]\n".into(),
                "config: providers.sim.ip_pools[0] \"10.0.0.0\" is not an IPv4 CIDR",
            ),
            (
                "[providers.sim]\nip_pools = [\"10.0.0.7/24\"]\n".into(),
                "config: providers.sim.ip_pools[0] \"10.0.0.7/24\" has host bits set (did you mean \"10.0.0.0/24\"?)",
            ),
            (
                "[providers.sim]\nip_pools = []\n".into(),
                "config: providers.sim.ip_pools must list at least one pool",
            ),
            (
                "[[plans]]\nname = \"SSD 1\"\ncpu = 1\nmemory_gb = 1\nstorage_gb = 1\n".into(),
                "config: plans[0].name \"SSD 1\" is not a valid name",
            ),
            (
                "[[plans]]\nname = \"-x\"\ncpu = 1\nmemory_gb = 1\nstorage_gb = 1\n".into(),
                "config: plans[0].name \"-x\" is not a valid name",
            ),
            (
                format!(
                    "[[plans]]\nname = \"{}\"\ncpu = 1\nmemory_gb = 1\nstorage_gb = 1\n",
                    "a".repeat(64)
                ),
                "config: plans[0].name \"aaaa",
            ),
            (
                "[[plans]]\nname = \"\"\ncpu = 1\nmemory_gb = 1\nstorage_gb = 1\n".into(),
                "config: plans[0].name must not be empty",
            ),
            (
                "[[plans]]\nname = \"p\"\ncpu = 0\nmemory_gb = 1\nstorage_gb = 1\n".into(),
                "config: plans[0].cpu must be at least 1",
            ),
            (
                cluster("a", "dallas", "provider = \"aws\"\n").replace("provider = \"sim\"\n", ""),
                "config: clusters[0].provider \"aws\" is not a known provider (known: sim, hostwinds, manual, lab)",
            ),
            (
                [
                    cluster("a", "dallas", "default = true\n"),
                    cluster("b", "dallas", ""),
                    cluster("c", "dallas", "default = true\n"),
                ]
                .concat(),
                "config: clusters[2].default is true but region \"dallas\" already has default cluster \"a\"",
            ),
            (
                [cluster("a", "dallas", ""), cluster("a", "seattle", "")].concat(),
                "config: clusters[1].name \"a\" is defined twice",
            ),
            (
                cluster("a", "", ""),
                "config: clusters[0].region must not be empty",
            ),
            (
                "[[tenants]]\nname = \"acme\"\nquota = { nodes = 1, cpu = 1, memory_gb = 1, storage_gb = 1 }\n\
                 [[tenants]]\nname = \"acme\"\nquota = { nodes = 1, cpu = 1, memory_gb = 1, storage_gb = 1 }\n"
                    .into(),
                "config: tenants[1].name \"acme\" is defined twice",
            ),
            (
                "[[approval_rules]]\nname = \"big\"\n\n[[approval_rules]]\nname = \"big\"\n".into(),
                "config: approval_rules[1].name \"big\" is defined twice",
            ),
            (
                "[[approval_rules]]\nname = \" \"\n".into(),
                "config: approval_rules[0].name must not be empty",
            ),
            (
                "[[approval_rules]]\nname = \"r\"\ntenant = \"acmee\"\n".into(),
                "config: approval_rules[0].tenant \"acmee\" is not a defined tenant",
            ),
        ];
        for (text, expected) in cases {
            let message = user_error(&text);
            assert!(
                message.starts_with(expected),
                "for\n{text}\nexpected {expected:?}\n     got {message:?}"
            );
        }

        // Two regions may each have their own default, and a rule may name a real tenant.
        let ok = [
            cluster("a", "dallas", "default = true\n"),
            cluster("b", "seattle", "default = true\n"),
            "[[approval_rules]]\nname = \"acme big\"\ntenant = \"acme\"\n".to_string(),
        ]
        .concat();
        assert!(with_user(&ok).is_ok());
    }

    #[test]
    fn duration_round_trip() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("1s", Duration::from_secs(1)),
            ("5m", Duration::from_secs(300)),
            ("1m30s", Duration::from_secs(90)),
            ("1h30m", Duration::from_secs(5400)),
            ("2h", Duration::from_secs(7200)),
            ("1d", Duration::from_secs(86_400)),
            ("1d2h3m4s5ms", Duration::from_millis(93_784_005)),
        ];
        for (text, duration) in cases {
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
            assert_eq!(format_duration(duration), text);
        }
        // Non-canonical spellings parse, and format to the shortest form.
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(60 * 60)), "1h");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1ms");
        assert_eq!(parse_duration(" 30s "), Ok(Duration::from_secs(30)));
    }

    #[test]
    fn bad_durations_are_rejected() {
        for text in [
            "", "5", "s", "5 sec", "5sec", "1.5s", "-1s", "5x", "1m 30s", "5S",
        ] {
            let err = parse_duration(text).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "invalid duration {text:?}: expected a number followed by ms, s, m, h or d (e.g. \"30s\")"
                )
            );
        }
        for text in ["30s1m", "1s1s", "5ms1s"] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("largest to smallest"), "{text}: {err}");
        }
        let err = parse_duration("99999999999999999999d").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = parse_duration("999999999999999d").unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn config_reserializes_and_loads_back_identically() {
        let config = from_layers(&[layer(DEFAULTS_SOURCE, DEFAULT_TOML)]).unwrap();
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("retry_cap = \"5m\""), "{text}");
        assert!(text.contains("tick = \"500ms\""), "{text}");
        let again = from_layers(&[layer("reserialized", &text)]).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn the_issue_example_shape_parses() {
        let text = r#"
[engine]
max_in_flight_per_tenant = 5
retry_backoff = ["5s", "10s", "20s", "40s"]
retry_cap = "5m"
max_retries = 3
stuck_after = "30m"
shutdown_grace = "30s"

[providers.sim]
seed = 42
failure_rate = 0.0        # probability that any one provider call fails
delay_ms = [50, 400]      # each call takes a random time in this range

[[plans]]
name = "ssd-1"
cpu = 1
memory_gb = 1
storage_gb = 30

[[clusters]]
name = "sim-dallas"
provider = "sim"
region = "dallas"
default = true
capacity = { cpu = 512, memory_gb = 1024, storage_gb = 20000, vm_slots = 500 }

[[tenants]]
name = "acme"
quota = { nodes = 20, cpu = 64, memory_gb = 128, storage_gb = 2000 }
"#;
        let config = from_layers(&[layer("issue.toml", text)]).unwrap();
        assert_eq!(config.engine, EngineConfig::default());
        assert_eq!(config.plans.len(), 1);
        assert_eq!(config.plans[0].kind, "vps");
        let cluster = &config.clusters[0];
        assert!(cluster.default);
        assert_eq!(cluster.health, ClusterHealth::Online);
        assert_eq!(cluster.capacity.vm_slots, 500);
        assert_eq!(config.tenant("acme").unwrap().quota.nodes, 20);
        assert!(config.approval_rules.is_empty());
        assert_eq!(config.regions(), ["dallas"]);
    }

    #[test]
    fn enums_parse_lowercase() {
        let config = with_user(
            "[store]\nsynchronous = \"normal\"\n\n[[clusters]]\nname = \"c\"\nprovider = \"sim\"\n\
             region = \"r\"\nhealth = \"degraded\"\n\
             capacity = { cpu = 1, memory_gb = 1, storage_gb = 1, vm_slots = 1 }\n",
        )
        .unwrap();
        assert_eq!(config.store.synchronous, Synchronous::Normal);
        assert_eq!(config.clusters[0].health, ClusterHealth::Degraded);
        let message = user_error("[store]\nsynchronous = \"off\"\n");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("unknown variant `off`"), "{message}");
    }

    #[test]
    fn load_layers_user_then_explicit_file() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("config.toml");
        let explicit = dir.path().join("ops.toml");
        std::fs::write(&user, "[engine]\nmax_retries = 4\nmax_concurrent = 8\n").unwrap();
        std::fs::write(&explicit, "[engine]\nmax_retries = 9\n").unwrap();

        let config = load_from(Some(&user), Some(&explicit)).unwrap();
        assert_eq!(config.engine.max_retries, 9);
        assert_eq!(config.engine.max_concurrent, 8);
        assert_eq!(config.plans.len(), 5);

        // A missing user file is fine: defaults apply.
        let config = load_from(Some(&dir.path().join("absent.toml")), None).unwrap();
        assert_eq!(config.engine, EngineConfig::default());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = load_from(None, Some(&missing)).unwrap_err();
        assert!(matches!(err, ConfigError::NotFound { .. }));
        assert_eq!(
            err.to_string(),
            format!("config {}: file not found", missing.display())
        );

        let user = dir.path().join("config.toml");
        std::fs::write(&user, "[engine]\n\ntick = \"soon\"\n").unwrap();
        let message = load_from(Some(&user), None).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("config {}: line 3: ", user.display())),
            "{message}"
        );
    }

    #[test]
    fn explicit_path_falls_back_to_env_var() {
        let given = Path::new("/given.toml");
        assert_eq!(
            explicit_path(Some(given), Some("/env.toml".into())),
            Some(PathBuf::from("/given.toml"))
        );
        assert_eq!(
            explicit_path(None, Some("/env.toml".into())),
            Some(PathBuf::from("/env.toml"))
        );
        assert_eq!(explicit_path(None, Some(OsString::new())), None);
        assert_eq!(explicit_path(None, None), None);
    }

    #[test]
    fn default_paths_end_in_expected_names() {
        if let Some(path) = default_db_path() {
            assert!(path.ends_with("mailfleet.db"));
            assert_eq!(path.parent().map(Path::to_path_buf), data_dir());
        }
        if let Some(path) = user_config_path() {
            assert!(path.ends_with("config.toml"));
        }
    }

    #[test]
    fn blocklist_zones_default_to_the_builtin_ones_without_sorbs() {
        let config = from_layers(&[layer(DEFAULTS_SOURCE, DEFAULT_TOML)]).unwrap();
        let zones = config.blocklist_zones();
        assert_eq!(zones.len(), 6);
        assert_eq!(zones[0].zone, "zen.spamhaus.org");
        assert_eq!(zones[0].severity, crate::reputation::dnsbl::Severity::High);
        assert!(zones.iter().all(|z| !z.zone.contains("sorbs")));
        assert_eq!(config.checker_config().resolver, None);

        let own = with_user(
            "[blocklists]\nresolver = \"127.0.0.1:5353\"\n[[blocklists.zones]]\nzone = \"bl.test\"\nseverity = \"low\"\ncodes = \"generic\"\n",
        )
        .unwrap();
        assert_eq!(own.blocklist_zones().len(), 1);
        assert_eq!(
            own.checker_config().resolver,
            Some("127.0.0.1:5353".parse().unwrap())
        );
        let bare = with_user("[blocklists]\nresolver = \"10.0.0.53\"\n").unwrap();
        assert_eq!(
            bare.checker_config().resolver,
            Some("10.0.0.53:53".parse().unwrap())
        );
    }

    #[test]
    fn bad_blocklist_settings_name_the_field() {
        let cases = [
            ("[blocklists]\nresolver = \"dns.example\"\n", "blocklists.resolver"),
            ("[blocklists]\ninterval = \"1s\"\n", "blocklists.interval"),
            ("[blocklists]\ntimeout = \"5m\"\n", "blocklists.timeout"),
            ("[blocklists]\nconcurrency = 0\n", "blocklists.concurrency"),
            ("[blocklists]\nbounce_alert = 1.5\n", "blocklists.bounce_alert"),
            (
                "[[blocklists.zones]]\nzone = \"bad zone\"\nseverity = \"low\"\ncodes = \"generic\"\n",
                "blocklists.zones[0].zone",
            ),
            (
                "[[blocklists.zones]]\nzone = \"a.test\"\nseverity = \"low\"\ncodes = \"generic\"\n[[blocklists.zones]]\nzone = \"A.test.\"\nseverity = \"high\"\ncodes = \"generic\"\n",
                "blocklists.zones[1].zone",
            ),
            (
                "[[blocklists.zones]]\nzone = \"a.test\"\nseverity = \"urgent\"\ncodes = \"generic\"\n",
                "line 3: unknown variant `urgent`, expected one of `low`, `medium`, `high`",
            ),
        ];
        for (text, field) in cases {
            let e = user_error(text);
            assert!(e.contains(field), "{text}: {e}");
        }
    }
}
