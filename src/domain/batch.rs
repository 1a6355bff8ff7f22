//! Batches of provisioning requests read from a TOML or JSON file (`mailfleet request
//! import FILE`), and the order in which to write them.
//!
//! Requests in a batch refer to each other by `key` through `depends_on`; an entry that is
//! not a key of the batch is taken to be the id (or an id prefix) of an existing request,
//! which the caller resolves. [`order`] sorts the batch with Kahn's algorithm so that every
//! prerequisite comes before the requests that depend on it; a cycle rejects the whole
//! batch and is named, e.g. `a → b → c → a`.
//!
//! Pure: no I/O, no clock. The caller reads the file, validates tenant/region/plan against
//! its configuration, resolves external ids and writes the requests in one transaction in
//! the order returned here.
//!
//! # File formats
//!
//! TOML, an array of tables named `requests`:
//!
//! ```toml
//! [[requests]]
//! key = "db"            # optional: defaults to the label
//! tenant = "acme"
//! region = "dallas"
//! plan = "ssd-4"
//! label = "mx-db-1"
//! domain = "mail.example.com"   # optional
//! depends_on = []               # optional
//! ```
//!
//! JSON, either `{"requests": [ {...}, ... ]}` or a bare top-level array `[ {...}, ... ]`,
//! with the same fields. Unknown fields are rejected, naming the field.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::Path;

/// The format of a batch file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// The format named by a path's extension, `.toml` or `.json` (in any case).
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("toml") {
            Some(Format::Toml)
        } else if ext.eq_ignore_ascii_case("json") {
            Some(Format::Json)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
        }
    }

    /// What this format calls a map of fields.
    fn map_word(self) -> &'static str {
        match self {
            Format::Toml => "table",
            Format::Json => "object",
        }
    }

    /// [`Format::map_word`] with its article.
    fn a_map(self) -> &'static str {
        match self {
            Format::Toml => "a table",
            Format::Json => "an object",
        }
    }
}

/// One request of a batch, as written in the file (after validation; nothing is trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    /// How other requests of the batch refer to this one. Optional in the file: when absent
    /// it defaults to `label`.
    pub key: String,
    pub tenant: String,
    pub region: String,
    pub plan: String,
    pub label: String,
    pub domain: Option<String>,
    /// Keys of this batch, or ids (or id prefixes) of existing requests. A key of the batch
    /// wins over an id prefix that happens to be spelt the same.
    pub depends_on: Vec<String>,
}

/// Why a batch was rejected. Any error rejects the whole batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The file could not be read as a batch: a syntax error (carrying the parser's message
    /// with its line and column), or a structural one naming the path of the offending
    /// value, e.g. `TOML: requests[3].plan: expected a string, found integer`. Paths use
    /// the file's own 0-based array indexes. The message starts with the format's name.
    Parse(String),
    /// The file is well formed but holds no requests.
    Empty,
    /// Two requests share a key; `first` and `second` are 1-based positions in the file.
    DuplicateKey {
        key: String,
        first: usize,
        second: usize,
    },
    /// A field's value is unacceptable. `index` is the request's 1-based position in the
    /// file (like the positions of [`BatchError::DuplicateKey`]); `key` is the request's key
    /// as written (possibly empty); `message` starts with the field's name, e.g.
    /// `label: must not be empty`.
    Invalid {
        index: usize,
        key: String,
        message: String,
    },
    /// A dependency cycle, as keys in the direction "depends on", the first repeated at the
    /// end: `["a", "b", "c", "a"]` means a depends on b, b on c and c on a.
    Cycle(Vec<String>),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Parse(message) => f.write_str(message),
            BatchError::Empty => f.write_str("the batch holds no requests"),
            BatchError::DuplicateKey { key, first, second } => write!(
                f,
                "duplicate key {key:?}: requests {first} and {second} both use it"
            ),
            BatchError::Invalid {
                index,
                key,
                message,
            } => {
                if key.is_empty() {
                    write!(f, "request {index}: {message}")
                } else {
                    write!(f, "request {index} (key {key:?}): {message}")
                }
            }
            BatchError::Cycle(keys) => write!(
                f,
                "dependency cycle: {}; nothing was imported",
                keys.join(" → ")
            ),
        }
    }
}

impl std::error::Error for BatchError {}

/// The fields a request may have, in the order they are documented.
const FIELDS: [&str; 7] = [
    "key",
    "tenant",
    "region",
    "plan",
    "label",
    "domain",
    "depends_on",
];

/// A parsed document reduced to what a batch can be made of, whatever the format.
enum Node<'a> {
    Null,
    Str(&'a str),
    List(Vec<Node<'a>>),
    Map(Vec<(&'a str, Node<'a>)>),
    /// Any other scalar, by its type name.
    Other(&'static str),
}

impl<'a> Node<'a> {
    fn from_toml(value: &'a toml::Value) -> Node<'a> {
        match value {
            toml::Value::String(s) => Node::Str(s),
            toml::Value::Integer(_) => Node::Other("integer"),
            toml::Value::Float(_) => Node::Other("float"),
            toml::Value::Boolean(_) => Node::Other("boolean"),
            toml::Value::Datetime(_) => Node::Other("datetime"),
            toml::Value::Array(items) => Node::List(items.iter().map(Node::from_toml).collect()),
            toml::Value::Table(table) => Node::from_toml_table(table),
        }
    }

    fn from_toml_table(table: &'a toml::Table) -> Node<'a> {
        Node::Map(
            table
                .iter()
                .map(|(k, v)| (k.as_str(), Node::from_toml(v)))
                .collect(),
        )
    }

    fn from_json(value: &'a serde_json::Value) -> Node<'a> {
        match value {
            serde_json::Value::Null => Node::Null,
            serde_json::Value::Bool(_) => Node::Other("boolean"),
            serde_json::Value::Number(_) => Node::Other("number"),
            serde_json::Value::String(s) => Node::Str(s),
            serde_json::Value::Array(items) => {
                Node::List(items.iter().map(Node::from_json).collect())
            }
            serde_json::Value::Object(map) => Node::Map(
                map.iter()
                    .map(|(k, v)| (k.as_str(), Node::from_json(v)))
                    .collect(),
            ),
        }
    }

    fn kind(&self, format: Format) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Str(_) => "string",
            Node::List(_) => "array",
            Node::Map(_) => format.map_word(),
            Node::Other(kind) => kind,
        }
    }
}

fn parse_error(format: Format, path: &str, message: impl fmt::Display) -> BatchError {
    BatchError::Parse(format!("{}: {path}: {message}", format.name()))
}

/// 1-based line and column of a byte offset into `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// A request as read from the file, before validation.
struct RawItem {
    key: Option<String>,
    tenant: String,
    region: String,
    plan: String,
    label: String,
    domain: Option<String>,
    depends_on: Vec<String>,
}

fn read_item(node: &Node<'_>, path: &str, format: Format) -> Result<RawItem, BatchError> {
    let Node::Map(entries) = node else {
        return Err(parse_error(
            format,
            path,
            format!("expected {}, found {}", format.a_map(), node.kind(format)),
        ));
    };
    if let Some((name, _)) = entries.iter().find(|(name, _)| !FIELDS.contains(name)) {
        return Err(parse_error(
            format,
            path,
            format!(
                "unknown field `{}`; expected one of {}",
                name.escape_debug(),
                FIELDS.join(", ")
            ),
        ));
    }
    let get = |field: &str| {
        entries
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, value)| value)
    };
    let wrong_type = |field: &str, expected: &str, found: &Node<'_>| {
        parse_error(
            format,
            &format!("{path}.{field}"),
            format!("expected {expected}, found {}", found.kind(format)),
        )
    };
    let required = |field: &str| match get(field) {
        None => Err(parse_error(
            format,
            path,
            format!("missing field `{field}`"),
        )),
        Some(Node::Str(s)) => Ok((*s).to_owned()),
        Some(other) => Err(wrong_type(field, "a string", other)),
    };
    let optional = |field: &str| match get(field) {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Str(s)) => Ok(Some((*s).to_owned())),
        Some(other) => Err(wrong_type(field, "a string", other)),
    };
    let depends_on = match get("depends_on") {
        None => Vec::new(),
        Some(Node::List(entries)) => entries
            .iter()
            .enumerate()
            .map(|(i, entry)| match entry {
                Node::Str(s) => Ok((*s).to_owned()),
                other => Err(wrong_type(&format!("depends_on[{i}]"), "a string", other)),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(wrong_type("depends_on", "an array of strings", other)),
    };
    Ok(RawItem {
        key: optional("key")?,
        tenant: required("tenant")?,
        region: required("region")?,
        plan: required("plan")?,
        label: required("label")?,
        domain: optional("domain")?,
        depends_on,
    })
}

/// Reads the request list of a document, checking its structure but not its values.
fn read_document(text: &str, format: Format) -> Result<Vec<RawItem>, BatchError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let read_list = |node: &Node<'_>, prefix: &str| -> Result<Vec<RawItem>, BatchError> {
        let Node::List(items) = node else {
            return Err(parse_error(
                format,
                prefix,
                format!(
                    "expected an array of {}s, found {}",
                    format.map_word(),
                    node.kind(format)
                ),
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| read_item(item, &format!("{prefix}[{i}]"), format))
            .collect()
    };
    let read_top = |node: &Node<'_>| -> Result<Vec<RawItem>, BatchError> {
        match node {
            Node::Map(entries) => {
                if let Some((name, _)) = entries.iter().find(|(name, _)| *name != "requests") {
                    return Err(parse_error(
                        format,
                        "top level",
                        format!("unknown field `{}`; expected requests", name.escape_debug()),
                    ));
                }
                match entries.first() {
                    Some((_, requests)) => read_list(requests, "requests"),
                    None => Ok(Vec::new()),
                }
            }
            Node::List(_) if format == Format::Json => read_list(node, ""),
            other => Err(BatchError::Parse(format!(
                "{}: expected an object with a `requests` array, or an array of requests; found {}",
                format.name(),
                other.kind(format)
            ))),
        }
    };
    match format {
        Format::Toml => {
            let table = toml::from_str::<toml::Table>(text).map_err(|e| {
                let message = e
                    .message()
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                match e.span() {
                    Some(span) => {
                        let (line, column) = line_column(text, span.start);
                        BatchError::Parse(format!("TOML: line {line}, column {column}: {message}"))
                    }
                    None => BatchError::Parse(format!("TOML: {message}")),
                }
            })?;
            read_top(&Node::from_toml_table(&table))
        }
        Format::Json => {
            let value = serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| BatchError::Parse(format!("JSON: {e}")))?;
            read_top(&Node::from_json(&value))
        }
    }
}

/// Checks a required text field: not empty or blank, no control characters.
fn check_text(field: &str, value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        Err(format!("{field}: must not contain control characters"))
    } else if value.is_empty() {
        Err(format!("{field}: must not be empty"))
    } else if value.trim().is_empty() {
        Err(format!("{field}: must not be blank"))
    } else {
        Ok(())
    }
}

/// The longest key (or depends_on entry) of a batch.
pub const MAX_KEY: usize = 128;

/// Checks a reference (a key, or a depends_on entry): not empty, at most [`MAX_KEY`]
/// characters, no whitespace, no control characters.
fn check_reference(field: &str, value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_KEY {
        Err(format!("{field}: is longer than {MAX_KEY} characters"))
    } else if value.chars().any(char::is_control) {
        Err(format!("{field}: must not contain control characters"))
    } else if value.is_empty() {
        Err(format!("{field}: must not be empty"))
    } else if value.chars().any(char::is_whitespace) {
        Err(format!("{field}: must not contain whitespace"))
    } else {
        Ok(())
    }
}

fn validate(raw: RawItem) -> Result<BatchItem, (String, String)> {
    let key_as_written = raw.key.clone().unwrap_or_default();
    let fail = |message: String| (key_as_written.clone(), message);
    if let Some(key) = &raw.key {
        check_reference("key", key).map_err(fail)?;
    }
    for (field, value) in [
        ("tenant", &raw.tenant),
        ("region", &raw.region),
        ("plan", &raw.plan),
        ("label", &raw.label),
    ] {
        check_text(field, value).map_err(fail)?;
    }
    if let Some(domain) = &raw.domain {
        if domain.is_empty() {
            return Err(fail(
                "domain: must not be empty; leave the field out instead".into(),
            ));
        }
        check_text("domain", domain).map_err(fail)?;
    }
    for (i, entry) in raw.depends_on.iter().enumerate() {
        check_reference(&format!("depends_on[{i}]"), entry).map_err(fail)?;
    }
    let key = match raw.key {
        Some(key) => key,
        None => {
            check_reference("key", &raw.label).map_err(|message| {
                fail(format!(
                    "{message} (the key defaults to the label; set `key` explicitly)"
                ))
            })?;
            raw.label.clone()
        }
    };
    Ok(BatchItem {
        key,
        tenant: raw.tenant,
        region: raw.region,
        plan: raw.plan,
        label: raw.label,
        domain: raw.domain,
        depends_on: raw.depends_on,
    })
}

/// The first pair of requests sharing a key, as 1-based positions.
fn find_duplicate(keys: impl IntoIterator<Item = impl AsRef<str>>) -> Option<BatchError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, key) in keys.into_iter().enumerate() {
        let key = key.as_ref();
        if let Some(&first) = seen.get(key) {
            return Some(BatchError::DuplicateKey {
                key: key.to_owned(),
                first: first + 1,
                second: i + 1,
            });
        }
        seen.insert(key.to_owned(), i);
    }
    None
}

/// Reads and validates a batch. Errors are reported for the first offending request in
/// file order: structural errors ([`BatchError::Parse`]) for the whole file first, then
/// [`BatchError::Empty`], then field checks ([`BatchError::Invalid`]) and duplicate keys.
///
/// A request without a `key` gets its `label` as key. Keys must be non-empty and hold no
/// whitespace or control characters; so must `depends_on` entries. `tenant`, `region`,
/// `plan` and `label` must be non-empty; `domain`, when given, too. No text field may hold
/// control characters. Nothing is trimmed. Dependencies are not checked here: see
/// [`order`].
pub fn parse(text: &str, format: Format) -> Result<Vec<BatchItem>, BatchError> {
    let raw = read_document(text, format)?;
    if raw.is_empty() {
        return Err(BatchError::Empty);
    }
    let items = raw
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            validate(raw).map_err(|(key, message)| BatchError::Invalid {
                index: i + 1,
                key,
                message,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    match find_duplicate(items.iter().map(|item| item.key.as_str())) {
        Some(error) => Err(error),
        None => Ok(items),
    }
}

/// Splits each item's depends_on into batch-internal keys and the rest (external id prefixes).
///
/// For each item, in the same order: the indexes into `items` of the requests it depends on
/// within the batch, and the entries that name no key of the batch (to be resolved as ids
/// or id prefixes of existing requests). Both lists keep the order of `depends_on` and hold
/// no repeats. Should two items share a key, the entry refers to the first of them.
pub fn internal_deps(items: &[BatchItem]) -> Vec<(Vec<usize>, Vec<String>)> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        index.entry(item.key.as_str()).or_insert(i);
    }
    items
        .iter()
        .map(|item| {
            let mut internal = Vec::new();
            let mut external: Vec<String> = Vec::new();
            let mut seen_internal = HashSet::new();
            for entry in &item.depends_on {
                match index.get(entry.as_str()) {
                    Some(&dep) => {
                        if seen_internal.insert(dep) {
                            internal.push(dep);
                        }
                    }
                    None => {
                        if !external.contains(entry) {
                            external.push(entry.clone());
                        }
                    }
                }
            }
            (internal, external)
        })
        .collect()
}

/// Kahn's algorithm over the internal edges (an edge a → b means a depends on b, so b comes first).
/// Deterministic: among requests that are ready, the one earlier in the file goes first.
/// Returns indexes into `items` in an order where every prerequisite precedes its dependents.
///
/// External dependencies are not edges. Items sharing a key are rejected with
/// [`BatchError::DuplicateKey`]. When requests are left over, one actual cycle among them
/// is reported as [`BatchError::Cycle`]: starting from the first leftover request in file
/// order, it follows each request's first leftover prerequisite until a request repeats,
/// and names the loop only (a self-dependency is `a → a`).
pub fn order(items: &[BatchItem]) -> Result<Vec<usize>, BatchError> {
    if let Some(error) = find_duplicate(items.iter().map(|item| item.key.as_str())) {
        return Err(error);
    }
    let deps: Vec<Vec<usize>> = internal_deps(items)
        .into_iter()
        .map(|(internal, _)| internal)
        .collect();
    let mut waiting_on: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    for (a, prerequisites) in deps.iter().enumerate() {
        for &b in prerequisites {
            dependents[b].push(a);
        }
    }
    let mut ready: BTreeSet<usize> = (0..items.len()).filter(|&i| waiting_on[i] == 0).collect();
    let mut out = Vec::with_capacity(items.len());
    let mut done = vec![false; items.len()];
    while let Some(b) = ready.pop_first() {
        out.push(b);
        done[b] = true;
        for &a in &dependents[b] {
            waiting_on[a] -= 1;
            if waiting_on[a] == 0 {
                ready.insert(a);
            }
        }
    }
    if out.len() == items.len() {
        return Ok(out);
    }
    Err(BatchError::Cycle(
        find_cycle(&deps, &done)
            .into_iter()
            .map(|i| items[i].key.clone())
            .collect(),
    ))
}

/// One cycle among the requests Kahn's algorithm left over, first node repeated at the end.
///
/// Every leftover request waits on at least one leftover prerequisite (else it would have
/// become ready), so the walk always goes on until a request repeats.
fn find_cycle(deps: &[Vec<usize>], done: &[bool]) -> Vec<usize> {
    let leftover: Vec<usize> = (0..deps.len()).filter(|&i| !done[i]).collect();
    let mut position: Vec<Option<usize>> = vec![None; deps.len()];
    let mut path: Vec<usize> = Vec::new();
    let mut current = leftover.first().copied();
    while let Some(node) = current {
        if let Some(start) = position[node] {
            let mut cycle = path.split_off(start);
            cycle.push(node);
            return cycle;
        }
        position[node] = Some(path.len());
        path.push(node);
        current = deps[node].iter().copied().find(|&dep| !done[dep]);
    }
    // Unreachable by the argument above; name every leftover request rather than panic.
    leftover
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOML_BATCH: &str = r#"
[[requests]]
key = "db"
tenant = "acme"
region = "dallas"
plan = "ssd-4"
label = "mx-db-1"
depends_on = []

[[requests]]
key = "web"
tenant = "acme"
region = "dallas"
plan = "ssd-2"
label = "mx-web-1"
domain = "mail.example.com"
depends_on = ["db", "0193a"]

[[requests]]
tenant = "acme"
region = "dallas"
plan = "ssd-2"
label = "mx-web-2"
"#;

    const JSON_REQUESTS: &str = r#"[
        {"key": "db", "tenant": "acme", "region": "dallas", "plan": "ssd-4",
         "label": "mx-db-1", "depends_on": []},
        {"key": "web", "tenant": "acme", "region": "dallas", "plan": "ssd-2",
         "label": "mx-web-1", "domain": "mail.example.com", "depends_on": ["db", "0193a"]},
        {"tenant": "acme", "region": "dallas", "plan": "ssd-2", "label": "mx-web-2"}
    ]"#;

    fn item(key: &str, depends_on: &[&str]) -> BatchItem {
        BatchItem {
            key: key.to_owned(),
            tenant: "acme".into(),
            region: "dallas".into(),
            plan: "ssd-2".into(),
            label: format!("mx-{key}"),
            domain: None,
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn keys_in_order(items: &[BatchItem]) -> Vec<String> {
        order(items)
            .expect("an acyclic batch")
            .into_iter()
            .map(|i| items[i].key.clone())
            .collect()
    }

    /// Every internal prerequisite precedes its dependent, and the order is a permutation.
    fn assert_respects_edges(items: &[BatchItem], ordered: &[usize]) {
        let mut sorted = ordered.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..items.len()).collect::<Vec<_>>());
        let mut position = vec![0; items.len()];
        for (pos, &i) in ordered.iter().enumerate() {
            position[i] = pos;
        }
        for (a, (internal, _)) in internal_deps(items).iter().enumerate() {
            for &b in internal {
                assert!(position[b] < position[a], "{b} must precede {a}");
            }
        }
    }

    fn parse_message(text: &str, format: Format) -> String {
        match parse(text, format) {
            Err(BatchError::Parse(message)) => message,
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn toml_json_object_and_bare_array_parse_to_the_same_items() {
        let from_toml = parse(TOML_BATCH, Format::Toml).expect("valid TOML");
        let from_array = parse(JSON_REQUESTS, Format::Json).expect("valid JSON array");
        let object = format!("{{\"requests\": {JSON_REQUESTS}}}");
        let from_object = parse(&object, Format::Json).expect("valid JSON object");
        assert_eq!(from_toml, from_array);
        assert_eq!(from_toml, from_object);
        assert_eq!(from_toml.len(), 3);
        assert_eq!(from_toml[1].domain.as_deref(), Some("mail.example.com"));
        assert_eq!(from_toml[1].depends_on, vec!["db", "0193a"]);
        assert!(from_toml[2].depends_on.is_empty());
    }

    #[test]
    fn key_defaults_to_label() {
        let items = parse(TOML_BATCH, Format::Toml).expect("valid TOML");
        assert_eq!(items[2].key, "mx-web-2");
        assert_eq!(items[2].label, "mx-web-2");
    }

    #[test]
    fn unknown_field_is_named() {
        let toml = "[[requests]]\ntenant='a'\nregion='r'\nplan='p'\nlabel='l'\nflavour='x'\n";
        let message = parse_message(toml, Format::Toml);
        assert!(message.starts_with("TOML: requests[0]: "), "{message}");
        assert!(message.contains("unknown field `flavour`"), "{message}");

        let json = r#"[{"tenant":"a","region":"r","plan":"p","label":"l"},{"tenant":"a","region":"r","plan":"p","label":"m","colour":1}]"#;
        let message = parse_message(json, Format::Json);
        assert!(message.starts_with("JSON: [1]: "), "{message}");
        assert!(message.contains("unknown field `colour`"), "{message}");

        let message = parse_message(r#"{"requests": [], "extra": 1}"#, Format::Json);
        assert!(message.contains("unknown field `extra`"), "{message}");
    }

    #[test]
    fn missing_required_field_is_reported() {
        let toml = "[[requests]]\ntenant='a'\nregion='r'\nlabel='l'\n";
        assert_eq!(
            parse_message(toml, Format::Toml),
            "TOML: requests[0]: missing field `plan`"
        );
        let json = r#"{"requests": [{"tenant":"a","region":"r","plan":"p"}]}"#;
        assert_eq!(
            parse_message(json, Format::Json),
            "JSON: requests[0]: missing field `label`"
        );
    }

    #[test]
    fn wrong_types_name_the_path() {
        let json = r#"{"requests": [{"tenant":"a","region":"r","plan":4,"label":"l"}]}"#;
        assert_eq!(
            parse_message(json, Format::Json),
            "JSON: requests[0].plan: expected a string, found number"
        );
        let toml =
            "[[requests]]\ntenant='a'\nregion='r'\nplan='p'\nlabel='l'\ndepends_on=['x', 3]\n";
        assert_eq!(
            parse_message(toml, Format::Toml),
            "TOML: requests[0].depends_on[1]: expected a string, found integer"
        );
        assert_eq!(
            parse_message("requests = 3", Format::Toml),
            "TOML: requests: expected an array of tables, found integer"
        );
        assert_eq!(
            parse_message("[3]", Format::Json),
            "JSON: [0]: expected an object, found number"
        );
        assert!(parse_message("\"x\"", Format::Json).starts_with("JSON: expected an object"));
    }

    #[test]
    fn syntax_errors_carry_the_parser_message() {
        let message = parse_message("[[requests]]\ntenant = \n", Format::Toml);
        assert!(message.starts_with("TOML: line 2, column "), "{message}");
        assert!(!message.contains('\n'), "{message}");
        let message = parse_message("{\"requests\": [", Format::Json);
        assert!(message.starts_with("JSON: "), "{message}");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn empty_batches_are_rejected() {
        for (text, format) in [
            ("", Format::Toml),
            ("requests = []", Format::Toml),
            ("[]", Format::Json),
            ("{}", Format::Json),
            (r#"{"requests": []}"#, Format::Json),
        ] {
            assert_eq!(parse(text, format), Err(BatchError::Empty), "{text:?}");
        }
        assert_eq!(BatchError::Empty.to_string(), "the batch holds no requests");
    }

    #[test]
    fn duplicate_keys_report_both_positions() {
        let json = r#"[
            {"key":"a","tenant":"t","region":"r","plan":"p","label":"l1"},
            {"key":"b","tenant":"t","region":"r","plan":"p","label":"l2"},
            {"tenant":"t","region":"r","plan":"p","label":"a"}
        ]"#;
        let error = parse(json, Format::Json).expect_err("duplicate");
        assert_eq!(
            error,
            BatchError::DuplicateKey {
                key: "a".into(),
                first: 1,
                second: 3
            }
        );
        assert_eq!(
            error.to_string(),
            "duplicate key \"a\": requests 1 and 3 both use it"
        );
        assert!(matches!(
            order(&[item("x", &[]), item("x", &[])]),
            Err(BatchError::DuplicateKey {
                first: 1,
                second: 2,
                ..
            })
        ));
    }

    #[test]
    fn invalid_fields_are_named() {
        let base = |extra: &str| {
            format!(
                r#"[{{"key":"ok","tenant":"t","region":"r","plan":"p","label":"l"}}, {{"tenant":"t","region":"r","plan":"p","label":"l2"{extra}}}]"#
            )
        };
        let invalid = |extra: &str| match parse(&base(extra), Format::Json) {
            Err(BatchError::Invalid {
                index,
                key,
                message,
            }) => (index, key, message),
            other => panic!("expected Invalid for {extra:?}, got {other:?}"),
        };
        let (index, key, message) = invalid(r#","key":"a b""#);
        assert_eq!((index, key.as_str()), (2, "a b"));
        assert_eq!(message, "key: must not contain whitespace");
        assert_eq!(invalid(r#","key":"""#).2, "key: must not be empty");
        assert_eq!(
            invalid(r#","key":"a\u0007""#).2,
            "key: must not contain control characters"
        );
        assert_eq!(invalid(r#","label":"""#).2, "label: must not be empty");
        assert_eq!(invalid(r#","tenant":"  ""#).2, "tenant: must not be blank");
        assert_eq!(
            invalid(r#","domain":"""#).2,
            "domain: must not be empty; leave the field out instead"
        );
        assert_eq!(
            invalid(r#","depends_on":["ok",""]"#).2,
            "depends_on[1]: must not be empty"
        );
        let long = "k".repeat(MAX_KEY + 1);
        assert_eq!(
            invalid(&format!(r#","key":"{long}""#)).2,
            "key: is longer than 128 characters"
        );
        assert!(parse(
            &base(&format!(r#","key":"{}""#, "k".repeat(MAX_KEY))),
            Format::Json
        )
        .is_ok());
        let (_, key, message) = invalid(r#","label":"mx web""#);
        assert_eq!(key, "");
        assert!(message.starts_with("key: must not contain whitespace (the key defaults"));

        let error = BatchError::Invalid {
            index: 4,
            key: "web".into(),
            message: "label: must not be empty".into(),
        };
        assert_eq!(
            error.to_string(),
            "request 4 (key \"web\"): label: must not be empty"
        );
    }

    #[test]
    fn format_from_path_reads_the_extension() {
        assert_eq!(Format::from_path(Path::new("a/b.toml")), Some(Format::Toml));
        assert_eq!(Format::from_path(Path::new("B.TOML")), Some(Format::Toml));
        assert_eq!(Format::from_path(Path::new("x.Json")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("x.yaml")), None);
        assert_eq!(Format::from_path(Path::new("json")), None);
    }

    #[test]
    fn internal_deps_split_keys_from_external_ids() {
        let items = [
            item("a", &[]),
            item("b", &["a", "0193abc", "a", "0193abc"]),
            item("c", &["ffee", "b", "a"]),
        ];
        assert_eq!(
            internal_deps(&items),
            vec![
                (vec![], vec![]),
                (vec![0], vec!["0193abc".to_owned()]),
                (vec![1, 0], vec!["ffee".to_owned()]),
            ]
        );
    }

    #[test]
    fn kahn_orders_a_chain() {
        let items = [item("c", &["b"]), item("b", &["a"]), item("a", &[])];
        assert_eq!(keys_in_order(&items), ["a", "b", "c"]);
        assert_eq!(order(&items), Ok(vec![2, 1, 0]));
    }

    #[test]
    fn kahn_orders_a_diamond() {
        let items = [
            item("top", &["left", "right"]),
            item("right", &["bottom"]),
            item("left", &["bottom"]),
            item("bottom", &[]),
        ];
        let ordered = order(&items).expect("acyclic");
        assert_respects_edges(&items, &ordered);
        assert_eq!(keys_in_order(&items), ["bottom", "right", "left", "top"]);
    }

    #[test]
    fn independent_items_keep_file_order() {
        let items = [item("z", &[]), item("m", &[]), item("a", &[])];
        assert_eq!(order(&items), Ok(vec![0, 1, 2]));
        // Once a request becomes ready it competes by file position.
        let items = [item("late", &["first"]), item("first", &[]), item("x", &[])];
        assert_eq!(keys_in_order(&items), ["first", "late", "x"]);
    }

    #[test]
    fn external_deps_are_not_edges() {
        let items = [
            item("a", &["0193aa"]),
            item("b", &["a", "zz"]),
            item("c", &["q"]),
        ];
        assert_eq!(order(&items), Ok(vec![0, 1, 2]));
    }

    #[test]
    fn ordering_respects_every_edge() {
        let items = [
            item("e", &["d", "b"]),
            item("d", &["c", "ext"]),
            item("c", &[]),
            item("b", &["c", "a"]),
            item("a", &[]),
            item("f", &[]),
        ];
        let ordered = order(&items).expect("acyclic");
        assert_respects_edges(&items, &ordered);
    }

    #[test]
    fn three_cycle_is_named_exactly() {
        let items = [item("a", &["b"]), item("b", &["c"]), item("c", &["a"])];
        let error = order(&items).expect_err("cycle");
        assert_eq!(
            error,
            BatchError::Cycle(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        assert_eq!(
            error.to_string(),
            "dependency cycle: a → b → c → a; nothing was imported"
        );
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let items = [item("ok", &[]), item("a", &["ok", "a"])];
        let error = order(&items).expect_err("cycle");
        assert_eq!(error, BatchError::Cycle(vec!["a".into(), "a".into()]));
        assert_eq!(
            error.to_string(),
            "dependency cycle: a → a; nothing was imported"
        );
    }

    #[test]
    fn cycle_hanging_off_a_valid_prefix_names_only_the_loop() {
        let items = [
            item("root", &[]),
            item("x", &["root", "a"]),
            item("a", &["b"]),
            item("b", &["a"]),
        ];
        assert_eq!(
            order(&items),
            Err(BatchError::Cycle(vec!["a".into(), "b".into(), "a".into()]))
        );
    }

    #[test]
    fn parsed_cycle_rejects_the_batch() {
        let toml = r#"
[[requests]]
key = "a"
tenant = "t"
region = "r"
plan = "p"
label = "la"
depends_on = ["b"]

[[requests]]
key = "b"
tenant = "t"
region = "r"
plan = "p"
label = "lb"
depends_on = ["a"]
"#;
        let items = parse(toml, Format::Toml).expect("valid file");
        assert_eq!(
            order(&items).map_err(|e| e.to_string()),
            Err("dependency cycle: a → b → a; nothing was imported".to_owned())
        );
    }

    /// A random DAG over `n` nodes (node i may depend only on nodes j < i), with a random
    /// shuffle of the file order; returns the items in file order.
    fn dag(
        n: usize,
        edges: &[bool],
        extra: &[(usize, usize)],
        file_order: &[usize],
    ) -> Vec<BatchItem> {
        let mut deps: Vec<Vec<String>> = vec![Vec::new(); n];
        let mut bit = 0;
        for (i, node_deps) in deps.iter_mut().enumerate() {
            for j in 0..i {
                if edges.get(bit).copied().unwrap_or(false) {
                    node_deps.push(format!("k{j}"));
                }
                bit += 1;
            }
            if i % 3 == 0 {
                node_deps.push(format!("ext-{i}"));
            }
        }
        for &(from, to) in extra {
            deps[from].push(format!("k{to}"));
        }
        file_order
            .iter()
            .map(|&node| {
                let refs: Vec<&str> = deps[node].iter().map(String::as_str).collect();
                item(&format!("k{node}"), &refs)
            })
            .collect()
    }

    fn dag_strategy() -> impl Strategy<Value = (usize, Vec<bool>, Vec<usize>, Vec<usize>)> {
        (1usize..12).prop_flat_map(|n| {
            let nodes: Vec<usize> = (0..n).collect();
            (
                Just(n),
                proptest::collection::vec(proptest::bool::weighted(0.3), n * (n - 1) / 2),
                proptest::sample::subsequence(nodes.clone(), 1..=n),
                Just(nodes).prop_shuffle(),
            )
        })
    }

    proptest! {
        #[test]
        fn random_dags_order_prerequisites_first((n, edges, _chain, file_order) in dag_strategy()) {
            let items = dag(n, &edges, &[], &file_order);
            let ordered = order(&items);
            prop_assert!(ordered.is_ok(), "{:?}", ordered);
            let ordered = ordered.unwrap_or_default();
            let mut position = vec![usize::MAX; items.len()];
            for (pos, &i) in ordered.iter().enumerate() {
                prop_assert_eq!(position[i], usize::MAX);
                position[i] = pos;
            }
            prop_assert_eq!(ordered.len(), items.len());
            for (a, (internal, _)) in internal_deps(&items).iter().enumerate() {
                for &b in internal {
                    prop_assert!(position[b] < position[a]);
                }
            }
        }

        #[test]
        fn a_back_edge_closing_a_path_yields_a_real_cycle((n, edges, chain, file_order) in dag_strategy()) {
            // `chain` ascends; walking it downwards is a path of "depends on" edges
            // (high depends on low). The lowest node depending on the highest closes it.
            let mut extra: Vec<(usize, usize)> = chain.windows(2).map(|w| (w[1], w[0])).collect();
            let (low, high) = (chain[0], chain[chain.len() - 1]);
            extra.push((low, high));
            let items = dag(n, &edges, &extra, &file_order);
            match order(&items) {
                Err(BatchError::Cycle(cycle)) => {
                    prop_assert!(cycle.len() >= 2);
                    prop_assert_eq!(cycle.first(), cycle.last());
                    let inner: HashSet<&String> = cycle[1..].iter().collect();
                    prop_assert_eq!(inner.len(), cycle.len() - 1, "a simple cycle: {:?}", cycle);
                    for pair in cycle.windows(2) {
                        let from = items.iter().find(|it| it.key == pair[0]);
                        prop_assert!(from.is_some());
                        prop_assert!(
                            from.is_some_and(|it| it.depends_on.contains(&pair[1])),
                            "{} does not depend on {}", pair[0], pair[1]
                        );
                    }
                }
                other => prop_assert!(false, "expected a cycle, got {:?}", other),
            }
        }
    }
}
