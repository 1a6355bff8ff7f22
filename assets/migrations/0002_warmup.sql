-- Warm-up: each sending node's plan and where it is on it, and its daily log.

CREATE TABLE node_warmup (
    node_id        TEXT PRIMARY KEY REFERENCES nodes (id),
    plan           TEXT NOT NULL,
    day            INTEGER NOT NULL,   -- 1-based day of the plan
    days           INTEGER NOT NULL,   -- the plan's length
    cap            INTEGER NOT NULL,   -- today's cap (messages per day)
    status         TEXT NOT NULL,      -- warming | held | paused | completed
    reason         TEXT,               -- why it holds or is paused
    started_at     TEXT NOT NULL,
    day_started_at TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE warmup_days (
    node_id    TEXT NOT NULL REFERENCES nodes (id),
    date       TEXT NOT NULL,          -- YYYY-MM-DD at the day boundary's offset
    day        INTEGER NOT NULL,
    cap        INTEGER NOT NULL,
    scheduled  INTEGER NOT NULL DEFAULT 0,
    sent       INTEGER NOT NULL DEFAULT 0,
    delivered  INTEGER NOT NULL DEFAULT 0,
    deferred   INTEGER NOT NULL DEFAULT 0,
    bounced    INTEGER NOT NULL DEFAULT 0,
    complaints INTEGER NOT NULL DEFAULT 0,
    decision   TEXT,                   -- advanced | held | paused | completed, once the day closed
    reason     TEXT,
    PRIMARY KEY (node_id, date)
);
