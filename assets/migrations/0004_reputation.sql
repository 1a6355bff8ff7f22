-- Reputation: when each node's IP is next checked, how trustworthy each blocklist zone is,
-- open and closed alerts, and why a node was paused.

CREATE TABLE node_checks (
    node_id         TEXT PRIMARY KEY REFERENCES nodes (id),
    last_checked_at TEXT,
    next_check_at   TEXT NOT NULL
);
CREATE INDEX node_checks_due ON node_checks (next_check_at);

CREATE TABLE zone_health (
    zone       TEXT PRIMARY KEY,
    usable     INTEGER NOT NULL,
    why        TEXT,
    checked_at TEXT NOT NULL
);

CREATE TABLE alerts (
    id          TEXT PRIMARY KEY,
    severity    TEXT NOT NULL,          -- high | medium | low
    kind        TEXT NOT NULL,          -- blocklist | bounce | zone
    subject     TEXT NOT NULL,          -- what it is about: "node:<id>:<zone>", "zone:<zone>", ...
    node_id     TEXT REFERENCES nodes (id),
    message     TEXT NOT NULL,
    raised_at   TEXT NOT NULL,
    resolved_at TEXT,
    resolution  TEXT
);
-- At most one open alert per subject.
CREATE UNIQUE INDEX alerts_open_subject ON alerts (subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_by_time ON alerts (raised_at);

-- Why a paused node is paused: blocklist | bounce | warmup | operator.
ALTER TABLE nodes ADD COLUMN pause_cause TEXT;
ALTER TABLE ip_blacklist_events ADD COLUMN severity TEXT;
CREATE INDEX blacklist_by_node ON ip_blacklist_events (node_id, blacklist_provider, delisted_at);
