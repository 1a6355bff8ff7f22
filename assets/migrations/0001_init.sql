-- mailfleet schema, version 1. Timestamps are RFC 3339 UTC text of fixed width (see clock::ts),
-- ids are UUIDv7 text. SQL kept to what SQLite and PostgreSQL both accept where possible.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Catalog, mirrored from the config so history keeps what applied.
CREATE TABLE tenants (
    name             TEXT PRIMARY KEY,
    quota_nodes      INTEGER NOT NULL,
    quota_cpu        INTEGER NOT NULL,
    quota_memory_gb  INTEGER NOT NULL,
    quota_storage_gb INTEGER NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE clusters (
    name            TEXT PRIMARY KEY,
    provider        TEXT NOT NULL,
    region          TEXT NOT NULL,
    is_default      INTEGER NOT NULL,
    health          TEXT NOT NULL,
    cap_cpu         INTEGER NOT NULL,
    cap_memory_gb   INTEGER NOT NULL,
    cap_storage_gb  INTEGER NOT NULL,
    cap_vm_slots    INTEGER NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE plans (
    name       TEXT PRIMARY KEY,
    cpu        INTEGER NOT NULL,
    memory_gb  INTEGER NOT NULL,
    storage_gb INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE requests (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    region           TEXT NOT NULL,
    plan             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    cpu              INTEGER NOT NULL,
    memory_gb        INTEGER NOT NULL,
    storage_gb       INTEGER NOT NULL,
    label            TEXT NOT NULL,
    domain           TEXT,
    state            TEXT NOT NULL,
    requested_by     TEXT NOT NULL,
    cluster          TEXT,
    approval_rule    TEXT,
    approval_reason  TEXT,
    wait_reason      TEXT,
    teardown         TEXT,              -- NULL | rollback | deprovision
    cancel_requested TEXT,              -- NULL | rollback: asked while a worker held it
    error            TEXT,
    needs_attention  INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    fence            INTEGER NOT NULL DEFAULT 0,
    next_run_at      TEXT NOT NULL,
    progress_at      TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX requests_by_state ON requests (state, next_run_at);
CREATE INDEX requests_by_tenant ON requests (tenant, state);
CREATE INDEX requests_by_label ON requests (tenant, label);
-- What the scheduler looks at: requests the engine has work for, by when.
CREATE INDEX requests_due ON requests (next_run_at)
    WHERE state IN ('queued','allocating','configuring','activating','verifying','failed','rolling_back');
CREATE INDEX requests_in_flight ON requests (progress_at)
    WHERE state IN ('allocating','configuring','activating','verifying');

CREATE TABLE request_deps (
    request_id TEXT NOT NULL REFERENCES requests (id),
    depends_on TEXT NOT NULL REFERENCES requests (id),
    PRIMARY KEY (request_id, depends_on)
);
CREATE INDEX request_deps_reverse ON request_deps (depends_on);

CREATE TABLE request_steps (
    request_id  TEXT NOT NULL REFERENCES requests (id),
    step        TEXT NOT NULL,
    position    INTEGER NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    started_at  TEXT,
    finished_at TEXT,
    error       TEXT,
    PRIMARY KEY (request_id, step)
);

CREATE TABLE step_tasks (
    request_id TEXT NOT NULL REFERENCES requests (id),
    step       TEXT NOT NULL,
    name       TEXT NOT NULL,
    position   INTEGER NOT NULL,
    status     TEXT NOT NULL,
    detail     TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (request_id, step, name)
);

CREATE TABLE transitions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL REFERENCES requests (id),
    from_state TEXT,
    to_state   TEXT NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT,
    at         TEXT NOT NULL
);
CREATE INDEX transitions_by_request ON transitions (request_id, id);

-- What a provider (or the engine's own books) allocated for a request. `seq` orders
-- compensations: released newest first.
CREATE TABLE resources (
    id           TEXT PRIMARY KEY,
    request_id   TEXT NOT NULL REFERENCES requests (id),
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,         -- intent | allocated | released
    provider     TEXT,
    provider_ref TEXT,
    tenant       TEXT NOT NULL,
    cluster      TEXT,
    cpu          INTEGER NOT NULL DEFAULT 0,
    memory_gb    INTEGER NOT NULL DEFAULT 0,
    storage_gb   INTEGER NOT NULL DEFAULT 0,
    slots        INTEGER NOT NULL DEFAULT 0,
    detail       TEXT,
    created_at   TEXT NOT NULL,
    released_at  TEXT,
    UNIQUE (request_id, kind)
);
-- Quota and capacity in use are sums over what is held; these cover those sums.
CREATE INDEX resources_held_by_tenant ON resources (kind, tenant, cpu, memory_gb, storage_gb) WHERE status <> 'released';
CREATE INDEX resources_held_by_cluster ON resources (kind, cluster, cpu, memory_gb, storage_gb) WHERE status <> 'released';
CREATE INDEX resources_by_ref ON resources (provider_ref);

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    request_id      TEXT UNIQUE REFERENCES requests (id),
    provider_id     TEXT,
    tenant          TEXT NOT NULL,
    label           TEXT NOT NULL,
    hostname        TEXT NOT NULL,
    ip_address      TEXT,
    region          TEXT NOT NULL,
    cluster         TEXT,
    plan            TEXT NOT NULL,
    status          TEXT NOT NULL,      -- provisioning | warming | active | maintenance | paused | unhealthy | decommissioned
    status_reason   TEXT,
    resume_status   TEXT,
    reputation_score INTEGER NOT NULL DEFAULT 100,
    current_load    INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_heartbeat  TEXT
);
CREATE INDEX nodes_by_status ON nodes (status);

CREATE TABLE ip_blacklist_events (
    id                 TEXT PRIMARY KEY,
    node_id            TEXT REFERENCES nodes (id),
    ip_address         TEXT NOT NULL,
    blacklist_provider TEXT NOT NULL,
    code               TEXT,
    meaning            TEXT,
    listed_at          TEXT NOT NULL,
    delisted_at        TEXT,
    details            TEXT
);
CREATE INDEX blacklist_open ON ip_blacklist_events (delisted_at, node_id);

-- The outbox: written in the same transaction as the change it describes.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    request_id TEXT,
    node_id    TEXT,
    tenant     TEXT,
    actor      TEXT NOT NULL,
    payload    TEXT NOT NULL,
    at         TEXT NOT NULL
);
CREATE INDEX events_by_request ON events (request_id, seq);
CREATE INDEX events_by_name ON events (name, seq);

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT
);

-- The simulated cloud's own inventory. It lives in the same database so that a crash cannot
-- make it forget what exists; only providers/sim.rs (through store/sim.rs) touches it.
CREATE TABLE sim_instances (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    cluster         TEXT NOT NULL,
    region          TEXT NOT NULL,
    label           TEXT NOT NULL,
    plan            TEXT NOT NULL,
    cpu             INTEGER NOT NULL,
    memory_gb       INTEGER NOT NULL,
    storage_gb      INTEGER NOT NULL,
    ip              TEXT NOT NULL,
    power           TEXT NOT NULL,      -- building | running | stopped
    firewall        TEXT,
    rdns            TEXT,
    mail_stack      INTEGER NOT NULL DEFAULT 0,
    ready_at        TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    deleted_at      TEXT
);
CREATE UNIQUE INDEX sim_instances_live_ip ON sim_instances (ip) WHERE deleted_at IS NULL;
