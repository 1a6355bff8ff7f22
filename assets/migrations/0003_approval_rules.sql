-- Approval rules as the config declared them, one row per version: when a rule's
-- definition changes, the next version is added and the old one kept, so a request's
-- history says which version of which rule held it.

CREATE TABLE approval_rules (
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    priority      INTEGER NOT NULL,
    tenant        TEXT,                 -- NULL: a global rule
    definition    TEXT NOT NULL,        -- the rule as JSON, exactly as matched
    first_seen_at TEXT NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, definition)
);

ALTER TABLE requests ADD COLUMN approval_rule_version INTEGER;
