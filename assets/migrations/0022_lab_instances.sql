-- The lab's inventory (issue 15): each instance a real host on this machine (a network
-- namespace, see src/lab). Kept in the database like the simulated cloud's, so a crash
-- cannot make the lab forget what it made; the host itself is found by `host_id`.
CREATE TABLE lab_instances (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    host_id         TEXT NOT NULL UNIQUE,
    cluster         TEXT NOT NULL,
    region          TEXT NOT NULL,
    label           TEXT NOT NULL,
    plan            TEXT NOT NULL,
    ip              TEXT NOT NULL,
    -- running | stopped (asked by suspend/resume; the host's processes are the truth)
    power           TEXT NOT NULL,
    firewall        TEXT,
    rdns            TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    deleted_at      TEXT
);
CREATE UNIQUE INDEX lab_instances_live_ip ON lab_instances (ip) WHERE deleted_at IS NULL;
