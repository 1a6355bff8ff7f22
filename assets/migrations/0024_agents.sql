-- The monitoring agent (issue 16): each node's agent has a token of its own (sealed under
-- the sealing key, or in a file beside the database), issued for its provisioning request;
-- its reports carry a sequence number that only goes up, so none is accepted twice. Each
-- accepted report is a heartbeat row.
CREATE TABLE agent_tokens (
    agent      TEXT PRIMARY KEY,       -- the node's provisioning request id
    key_sealed BLOB,
    key_file   TEXT,
    issued_at  TEXT NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    last_at    TEXT,
    CHECK (key_sealed IS NULL OR key_file IS NULL)
);
CREATE TABLE node_heartbeats (
    node_id      TEXT NOT NULL REFERENCES nodes (id),
    seq          INTEGER NOT NULL,
    measured_at  TEXT NOT NULL,        -- the agent's clock
    received_at  TEXT NOT NULL,        -- ours
    cpu_pct      REAL NOT NULL,
    mem_used     INTEGER NOT NULL,
    mem_total    INTEGER NOT NULL,
    queue_free   INTEGER NOT NULL,     -- bytes free on the mail queue's filesystem
    queue_len    INTEGER NOT NULL,
    net_rx       INTEGER NOT NULL,
    net_tx       INTEGER NOT NULL,
    delivered    INTEGER NOT NULL,     -- since the agent's previous report
    bounced      INTEGER NOT NULL,
    deferred     INTEGER NOT NULL,
    complaints   INTEGER NOT NULL
);
CREATE INDEX node_heartbeats_by_time ON node_heartbeats (node_id, received_at);
