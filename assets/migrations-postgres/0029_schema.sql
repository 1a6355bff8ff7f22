-- mailfleet's schema on PostgreSQL, as of SQLite migration 0029: the same tables, columns,
-- indexes and change stamps, in PostgreSQL's spelling. A PostgreSQL database starts here;
-- later migrations come in pairs, one for each engine.
--
-- Types: SQLite's INTEGER is BIGINT (mailfleet binds and reads 64-bit integers), REAL is
-- DOUBLE PRECISION, BLOB is BYTEA. Timestamps stay RFC 3339 text, as on SQLite, so that the
-- store's SQL and its comparisons are the same on both. Text compares byte by byte
-- (COLLATE "C"), as SQLite's does, whatever the database's own collation.
--
-- `rowid`: the tables whose rows the store reads in insertion order carry an identity
-- column of that name, which is what SQLite's rowid gives them.

-- The few SQLite functions the store's SQL uses, for PostgreSQL.
CREATE FUNCTION unixepoch(t text) RETURNS bigint LANGUAGE sql STABLE STRICT
    AS $$ SELECT floor(extract(epoch FROM t::timestamptz))::bigint $$;
CREATE FUNCTION unixepoch(t text, modifier text) RETURNS numeric LANGUAGE sql STABLE STRICT
    AS $$ SELECT CASE WHEN modifier = 'subsec'
                      THEN floor(extract(epoch FROM t::timestamptz) * 1000) / 1000
                      ELSE floor(extract(epoch FROM t::timestamptz)) END $$;
CREATE FUNCTION julianday(t text) RETURNS double precision LANGUAGE sql STABLE STRICT
    AS $$ SELECT extract(epoch FROM (t::timestamp AT TIME ZONE 'UTC'))::double precision
                 / 86400.0 + 2440587.5 $$;
CREATE FUNCTION date(t text, modifier text) RETURNS text LANGUAGE sql STABLE STRICT
    AS $$ SELECT to_char(t::date + modifier::interval, 'YYYY-MM-DD') $$;
CREATE FUNCTION max(a bigint, b bigint) RETURNS bigint LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL WHEN a >= b THEN a ELSE b END $$;
CREATE FUNCTION min(a bigint, b bigint) RETURNS bigint LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL WHEN a <= b THEN a ELSE b END $$;
CREATE FUNCTION max(a double precision, b double precision) RETURNS double precision
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL WHEN a >= b THEN a ELSE b END $$;
CREATE FUNCTION min(a double precision, b double precision) RETURNS double precision
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL WHEN a <= b THEN a ELSE b END $$;
CREATE FUNCTION max(a text, b text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL WHEN a >= b THEN a ELSE b END $$;
CREATE FUNCTION min(a text, b text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL WHEN a <= b THEN a ELSE b END $$;
CREATE FUNCTION group_concat_step(acc text, v text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN v IS NULL THEN acc WHEN acc IS NULL THEN v ELSE acc || ',' || v END $$;
CREATE AGGREGATE group_concat(text) (SFUNC = group_concat_step, STYPE = text);
CREATE FUNCTION group_concat_step(acc text, v text, sep text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN v IS NULL THEN acc WHEN acc IS NULL THEN v ELSE acc || sep || v END $$;
CREATE AGGREGATE group_concat(text, text) (SFUNC = group_concat_step, STYPE = text);

CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);

CREATE TABLE change_counter (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    open BIGINT NOT NULL DEFAULT 0
);
INSERT INTO change_counter (id, seq, open) VALUES (1, 0, 0);

CREATE TABLE tenants (
    name             TEXT COLLATE "C" PRIMARY KEY,
    quota_nodes      BIGINT NOT NULL,
    quota_cpu        BIGINT NOT NULL,
    quota_memory_gb  BIGINT NOT NULL,
    quota_storage_gb BIGINT NOT NULL,
    updated_at       TEXT COLLATE "C" NOT NULL
);

CREATE TABLE plans (
    name       TEXT COLLATE "C" PRIMARY KEY,
    cpu        BIGINT NOT NULL,
    memory_gb  BIGINT NOT NULL,
    storage_gb BIGINT NOT NULL,
    kind       TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE clusters (
    name            TEXT COLLATE "C" PRIMARY KEY,
    provider        TEXT COLLATE "C" NOT NULL,
    region          TEXT COLLATE "C" NOT NULL,
    is_default      BIGINT NOT NULL,
    health          TEXT COLLATE "C" NOT NULL,
    cap_cpu         BIGINT NOT NULL,
    cap_memory_gb   BIGINT NOT NULL,
    cap_storage_gb  BIGINT NOT NULL,
    cap_vm_slots    BIGINT NOT NULL,
    updated_at      TEXT COLLATE "C" NOT NULL
);

CREATE TABLE requests (
    rowid            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id               TEXT COLLATE "C" PRIMARY KEY,
    tenant           TEXT COLLATE "C" NOT NULL,
    region           TEXT COLLATE "C" NOT NULL,
    plan             TEXT COLLATE "C" NOT NULL,
    kind             TEXT COLLATE "C" NOT NULL,
    cpu              BIGINT NOT NULL,
    memory_gb        BIGINT NOT NULL,
    storage_gb       BIGINT NOT NULL,
    label            TEXT COLLATE "C" NOT NULL,
    domain           TEXT COLLATE "C",
    state            TEXT COLLATE "C" NOT NULL,
    requested_by     TEXT COLLATE "C" NOT NULL,
    cluster          TEXT COLLATE "C",
    approval_rule    TEXT COLLATE "C",
    approval_reason  TEXT COLLATE "C",
    wait_reason      TEXT COLLATE "C",
    teardown         TEXT COLLATE "C",
    cancel_requested TEXT COLLATE "C",
    error            TEXT COLLATE "C",
    needs_attention  BIGINT NOT NULL DEFAULT 0,
    lease_owner      TEXT COLLATE "C",
    lease_expires_at TEXT COLLATE "C",
    fence            BIGINT NOT NULL DEFAULT 0,
    next_run_at      TEXT COLLATE "C" NOT NULL,
    progress_at      TEXT COLLATE "C" NOT NULL,
    created_at       TEXT COLLATE "C" NOT NULL,
    updated_at       TEXT COLLATE "C" NOT NULL,
    approval_rule_version BIGINT,
    change_seq       BIGINT NOT NULL DEFAULT 0,
    operation        TEXT COLLATE "C" NOT NULL DEFAULT 'provision',
    target           TEXT COLLATE "C" REFERENCES requests (id),
    from_plan        TEXT COLLATE "C",
    drained          BIGINT NOT NULL DEFAULT 0,
    scaling_cause    TEXT COLLATE "C",
    scaling_done_at  TEXT COLLATE "C"
);
CREATE INDEX requests_by_label ON requests (tenant, label);
CREATE INDEX requests_by_state ON requests (state, next_run_at);
CREATE INDEX requests_by_tenant ON requests (tenant, state);
CREATE INDEX requests_changed ON requests (change_seq);
CREATE INDEX requests_due ON requests (next_run_at)
    WHERE state IN ('queued','allocating','configuring','activating','verifying','failed','rolling_back');
CREATE INDEX requests_in_flight ON requests (progress_at)
    WHERE state IN ('allocating','configuring','activating','verifying');
CREATE INDEX requests_live_label ON requests (label)
    WHERE state NOT IN ('rolled_back', 'rejected', 'deprovisioned');
CREATE UNIQUE INDEX requests_one_live_per_scaling_cause ON requests (scaling_cause)
    WHERE scaling_cause IS NOT NULL AND scaling_done_at IS NULL;
CREATE UNIQUE INDEX requests_one_resize ON requests (target)
    WHERE target IS NOT NULL
      AND state IN ('queued','pending_approval','allocating','verifying','failed','rolling_back');
CREATE INDEX requests_scaling_done ON requests (scaling_done_at)
    WHERE scaling_cause IS NOT NULL;

CREATE TABLE request_deps (
    request_id TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
    depends_on TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
    PRIMARY KEY (request_id, depends_on)
);
CREATE INDEX request_deps_reverse ON request_deps (depends_on);

CREATE TABLE request_steps (
    request_id  TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
    step        TEXT COLLATE "C" NOT NULL,
    position    BIGINT NOT NULL,
    status      TEXT COLLATE "C" NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    started_at  TEXT COLLATE "C",
    finished_at TEXT COLLATE "C",
    error       TEXT COLLATE "C",
    PRIMARY KEY (request_id, step)
);

CREATE TABLE step_tasks (
    request_id TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
    step       TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    position   BIGINT NOT NULL,
    status     TEXT COLLATE "C" NOT NULL,
    detail     TEXT COLLATE "C",
    updated_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (request_id, step, name)
);

CREATE TABLE transitions (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    request_id TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
    from_state TEXT COLLATE "C",
    to_state   TEXT COLLATE "C" NOT NULL,
    actor      TEXT COLLATE "C" NOT NULL,
    reason     TEXT COLLATE "C",
    at         TEXT COLLATE "C" NOT NULL
);
CREATE INDEX transitions_by_request ON transitions (request_id, id);

CREATE TABLE resources (
    id           TEXT COLLATE "C" PRIMARY KEY,
    request_id   TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
    seq          BIGINT NOT NULL,
    kind         TEXT COLLATE "C" NOT NULL,
    status       TEXT COLLATE "C" NOT NULL,
    provider     TEXT COLLATE "C",
    provider_ref TEXT COLLATE "C",
    tenant       TEXT COLLATE "C" NOT NULL,
    cluster      TEXT COLLATE "C",
    cpu          BIGINT NOT NULL DEFAULT 0,
    memory_gb    BIGINT NOT NULL DEFAULT 0,
    storage_gb   BIGINT NOT NULL DEFAULT 0,
    slots        BIGINT NOT NULL DEFAULT 0,
    detail       TEXT COLLATE "C",
    created_at   TEXT COLLATE "C" NOT NULL,
    released_at  TEXT COLLATE "C",
    UNIQUE (request_id, kind)
);
CREATE INDEX resources_live_instances ON resources (created_at)
    WHERE kind = 'instance' AND status <> 'released';

CREATE TABLE held_totals (
    kind       TEXT COLLATE "C" NOT NULL,
    owner      TEXT COLLATE "C" NOT NULL,
    units      BIGINT NOT NULL,
    cpu        BIGINT NOT NULL,
    memory_gb  BIGINT NOT NULL,
    storage_gb BIGINT NOT NULL,
    PRIMARY KEY (kind, owner)
);

CREATE TABLE nodes (
    rowid            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id               TEXT COLLATE "C" PRIMARY KEY,
    request_id       TEXT COLLATE "C" UNIQUE REFERENCES requests (id),
    provider_id      TEXT COLLATE "C",
    tenant           TEXT COLLATE "C" NOT NULL,
    label            TEXT COLLATE "C" NOT NULL,
    hostname         TEXT COLLATE "C" NOT NULL,
    ip_address       TEXT COLLATE "C",
    region           TEXT COLLATE "C" NOT NULL,
    cluster          TEXT COLLATE "C",
    plan             TEXT COLLATE "C" NOT NULL,
    status           TEXT COLLATE "C" NOT NULL,
    status_reason    TEXT COLLATE "C",
    resume_status    TEXT COLLATE "C",
    reputation_score BIGINT NOT NULL DEFAULT 100,
    current_load     BIGINT NOT NULL DEFAULT 0,
    created_at       TEXT COLLATE "C" NOT NULL,
    updated_at       TEXT COLLATE "C" NOT NULL,
    last_heartbeat   TEXT COLLATE "C",
    pause_cause      TEXT COLLATE "C",
    cert_not_after   TEXT COLLATE "C",
    change_seq       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX nodes_by_label ON nodes (label, id);
CREATE INDEX nodes_by_status ON nodes (status);
CREATE INDEX nodes_changed ON nodes (change_seq);

CREATE TABLE node_transitions (
    seq         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    node_id     TEXT COLLATE "C" NOT NULL REFERENCES nodes (id),
    at          TEXT COLLATE "C" NOT NULL,
    from_status TEXT COLLATE "C",
    to_status   TEXT COLLATE "C" NOT NULL,
    cause       TEXT COLLATE "C",
    actor       TEXT COLLATE "C" NOT NULL,
    reason      TEXT COLLATE "C" NOT NULL
);
CREATE INDEX node_transitions_by_node ON node_transitions (node_id, seq);

CREATE TABLE node_checks (
    node_id         TEXT COLLATE "C" PRIMARY KEY REFERENCES nodes (id),
    last_checked_at TEXT COLLATE "C",
    next_check_at   TEXT COLLATE "C" NOT NULL
);
CREATE INDEX node_checks_due ON node_checks (next_check_at);

CREATE TABLE node_heartbeats (
    rowid        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id      TEXT COLLATE "C" NOT NULL REFERENCES nodes (id),
    seq          BIGINT NOT NULL,
    measured_at  TEXT COLLATE "C" NOT NULL,
    received_at  TEXT COLLATE "C" NOT NULL,
    cpu_pct      DOUBLE PRECISION NOT NULL,
    mem_used     BIGINT NOT NULL,
    mem_total    BIGINT NOT NULL,
    queue_free   BIGINT NOT NULL,
    queue_len    BIGINT NOT NULL,
    net_rx       BIGINT NOT NULL,
    net_tx       BIGINT NOT NULL,
    delivered    BIGINT NOT NULL,
    bounced      BIGINT NOT NULL,
    deferred     BIGINT NOT NULL,
    complaints   BIGINT NOT NULL
);
CREATE INDEX node_heartbeats_by_time ON node_heartbeats (node_id, received_at);

CREATE TABLE node_warmup (
    node_id        TEXT COLLATE "C" PRIMARY KEY REFERENCES nodes (id),
    plan           TEXT COLLATE "C" NOT NULL,
    day            BIGINT NOT NULL,
    days           BIGINT NOT NULL,
    cap            BIGINT NOT NULL,
    status         TEXT COLLATE "C" NOT NULL,
    reason         TEXT COLLATE "C",
    started_at     TEXT COLLATE "C" NOT NULL,
    day_started_at TEXT COLLATE "C" NOT NULL,
    updated_at     TEXT COLLATE "C" NOT NULL,
    day_date       TEXT COLLATE "C",
    schedule       TEXT COLLATE "C",
    pushed_cap     BIGINT
);
CREATE INDEX node_warmup_due ON node_warmup (status, day_date);

CREATE TABLE warmup_days (
    node_id    TEXT COLLATE "C" NOT NULL REFERENCES nodes (id),
    date       TEXT COLLATE "C" NOT NULL,
    day        BIGINT NOT NULL,
    cap        BIGINT NOT NULL,
    scheduled  BIGINT NOT NULL DEFAULT 0,
    sent       BIGINT NOT NULL DEFAULT 0,
    delivered  BIGINT NOT NULL DEFAULT 0,
    deferred   BIGINT NOT NULL DEFAULT 0,
    bounced    BIGINT NOT NULL DEFAULT 0,
    complaints BIGINT NOT NULL DEFAULT 0,
    decision   TEXT COLLATE "C",
    reason     TEXT COLLATE "C",
    PRIMARY KEY (node_id, date)
);
CREATE INDEX warmup_days_by_date ON warmup_days (date);
CREATE INDEX warmup_days_closed ON warmup_days (date, sent, cap, decision) WHERE decision IS NOT NULL;

CREATE TABLE approval_rules (
    name          TEXT COLLATE "C" NOT NULL,
    version       BIGINT NOT NULL,
    priority      BIGINT NOT NULL,
    tenant        TEXT COLLATE "C",
    definition    TEXT COLLATE "C" NOT NULL,
    first_seen_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, definition)
);

CREATE TABLE audit (
    id     BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at     TEXT COLLATE "C" NOT NULL,
    actor  TEXT COLLATE "C" NOT NULL,
    action TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C",
    detail TEXT COLLATE "C"
);

CREATE TABLE events (
    seq        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id         TEXT COLLATE "C" NOT NULL UNIQUE,
    name       TEXT COLLATE "C" NOT NULL,
    request_id TEXT COLLATE "C",
    node_id    TEXT COLLATE "C",
    tenant     TEXT COLLATE "C",
    actor      TEXT COLLATE "C" NOT NULL,
    payload    TEXT COLLATE "C" NOT NULL,
    at         TEXT COLLATE "C" NOT NULL
);
CREATE INDEX events_by_request ON events (request_id, seq);
CREATE INDEX events_by_time ON events (at);

CREATE TABLE ip_blacklist_events (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    node_id            TEXT COLLATE "C" REFERENCES nodes (id),
    ip_address         TEXT COLLATE "C" NOT NULL,
    blacklist_provider TEXT COLLATE "C" NOT NULL,
    code               TEXT COLLATE "C",
    meaning            TEXT COLLATE "C",
    listed_at          TEXT COLLATE "C" NOT NULL,
    delisted_at        TEXT COLLATE "C",
    details            TEXT COLLATE "C",
    severity           TEXT COLLATE "C",
    change_seq         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX blacklist_by_node ON ip_blacklist_events (node_id, blacklist_provider, delisted_at);
CREATE INDEX blacklist_changed ON ip_blacklist_events (change_seq);
CREATE INDEX blacklist_open ON ip_blacklist_events (delisted_at, node_id);

CREATE TABLE alerts (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    severity            TEXT COLLATE "C" NOT NULL,
    kind                TEXT COLLATE "C" NOT NULL,
    subject             TEXT COLLATE "C" NOT NULL,
    node_id             TEXT COLLATE "C" REFERENCES nodes (id),
    message             TEXT COLLATE "C" NOT NULL,
    raised_at           TEXT COLLATE "C" NOT NULL,
    resolved_at         TEXT COLLATE "C",
    resolution          TEXT COLLATE "C",
    change_seq          BIGINT NOT NULL DEFAULT 0,
    notified_at         TEXT COLLATE "C",
    notify_until        TEXT COLLATE "C",
    notify_error        TEXT COLLATE "C",
    acked_at            TEXT COLLATE "C",
    acked_by            TEXT COLLATE "C",
    ack_note            TEXT COLLATE "C",
    silenced_until      TEXT COLLATE "C",
    silenced_by         TEXT COLLATE "C",
    silence_reason      TEXT COLLATE "C",
    resolve_notified_at TEXT COLLATE "C"
);
CREATE INDEX alerts_by_time ON alerts (raised_at);
CREATE INDEX alerts_changed ON alerts (change_seq);
CREATE UNIQUE INDEX alerts_open_subject ON alerts (subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_resolved_to_notify ON alerts (resolved_at)
    WHERE resolve_notified_at IS NULL AND notified_at IS NOT NULL;
CREATE INDEX alerts_to_notify ON alerts (raised_at) WHERE notified_at IS NULL;

CREATE TABLE zone_health (
    zone       TEXT COLLATE "C" PRIMARY KEY,
    usable     BIGINT NOT NULL,
    why        TEXT COLLATE "C",
    checked_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE dkim_keys (
    rowid       BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    domain      TEXT COLLATE "C" NOT NULL,
    selector    TEXT COLLATE "C" NOT NULL,
    algorithm   TEXT COLLATE "C" NOT NULL,
    public_key  TEXT COLLATE "C" NOT NULL,
    sealed      BYTEA,
    key_file    TEXT COLLATE "C",
    created_at  TEXT COLLATE "C" NOT NULL,
    retired_at  TEXT COLLATE "C",
    PRIMARY KEY (domain, selector),
    CHECK ((sealed IS NULL) <> (key_file IS NULL))
);

CREATE TABLE dns_records (
    request_id   TEXT COLLATE "C" NOT NULL REFERENCES requests (id),
    position     BIGINT NOT NULL,
    zone         TEXT COLLATE "C" NOT NULL,
    purpose      TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,
    rtype        TEXT COLLATE "C" NOT NULL,
    ttl          BIGINT NOT NULL,
    content      TEXT COLLATE "C" NOT NULL,
    want         TEXT COLLATE "C" NOT NULL,
    provider     TEXT COLLATE "C" NOT NULL,
    owned        BIGINT NOT NULL DEFAULT 1,
    status       TEXT COLLATE "C" NOT NULL,
    seen         TEXT COLLATE "C",
    published_at TEXT COLLATE "C",
    verified_at  TEXT COLLATE "C",
    removed_at   TEXT COLLATE "C",
    PRIMARY KEY (request_id, position)
);
CREATE INDEX dns_records_live ON dns_records (name, rtype, content) WHERE removed_at IS NULL;
CREATE INDEX dns_records_owner ON dns_records (name, rtype, content)
    WHERE owned = 1 AND removed_at IS NULL;

CREATE TABLE sim_dns_records (
    zone        TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    rtype       TEXT COLLATE "C" NOT NULL,
    ttl         BIGINT NOT NULL,
    content     TEXT COLLATE "C" NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (zone, name, rtype, content)
);

CREATE TABLE certificates (
    rowid          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id             TEXT COLLATE "C" PRIMARY KEY,
    request_id     TEXT COLLATE "C" REFERENCES requests (id),
    hostname       TEXT COLLATE "C" NOT NULL,
    names          TEXT COLLATE "C" NOT NULL,
    issuer         TEXT COLLATE "C" NOT NULL,
    serial         TEXT COLLATE "C" NOT NULL,
    not_before     TEXT COLLATE "C" NOT NULL,
    not_after      TEXT COLLATE "C" NOT NULL,
    chain_pem      TEXT COLLATE "C" NOT NULL,
    key_sealed     BYTEA,
    key_file       TEXT COLLATE "C",
    status         TEXT COLLATE "C" NOT NULL,
    created_at     TEXT COLLATE "C" NOT NULL,
    renewed_at     TEXT COLLATE "C",
    renew_error    TEXT COLLATE "C",
    renewing_by    TEXT COLLATE "C",
    renewing_until TEXT COLLATE "C",
    revoked_at     TEXT COLLATE "C",
    revoke_error   TEXT COLLATE "C",
    CHECK (key_sealed IS NULL OR key_file IS NULL),
    CHECK (status <> 'active' OR key_sealed IS NOT NULL OR key_file IS NOT NULL)
);
CREATE INDEX certificates_by_expiry ON certificates (status, not_after);
CREATE INDEX certificates_by_host ON certificates (hostname, status);
CREATE INDEX certificates_by_request ON certificates (request_id, status);

CREATE TABLE acme_accounts (
    directory   TEXT COLLATE "C" PRIMARY KEY,
    sealed      BYTEA,
    key_file    TEXT COLLATE "C",
    created_at  TEXT COLLATE "C" NOT NULL,
    CHECK ((sealed IS NULL) <> (key_file IS NULL))
);

CREATE TABLE acme_orders (
    url        TEXT COLLATE "C" PRIMARY KEY,
    directory  TEXT COLLATE "C" NOT NULL,
    names      TEXT COLLATE "C" NOT NULL,
    placed_by  TEXT COLLATE "C" NOT NULL,
    placed_at  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX acme_orders_by_names ON acme_orders (directory, names);

CREATE TABLE provider_breakers (
    provider   TEXT COLLATE "C" PRIMARY KEY,
    open       BIGINT NOT NULL,
    failures   BIGINT NOT NULL,
    opened_at  TEXT COLLATE "C",
    retry_at   TEXT COLLATE "C",
    last_error TEXT COLLATE "C",
    updated_at TEXT COLLATE "C" NOT NULL,
    change_seq BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE manual_access (
    request_id  TEXT COLLATE "C" PRIMARY KEY REFERENCES requests (id),
    ip          TEXT COLLATE "C" NOT NULL,
    ssh_port    BIGINT NOT NULL,
    provided_by TEXT COLLATE "C" NOT NULL,
    provided_at TEXT COLLATE "C" NOT NULL,
    released_at TEXT COLLATE "C"
);
CREATE UNIQUE INDEX manual_access_live_ip ON manual_access (ip) WHERE released_at IS NULL;

CREATE TABLE sim_instances (
    id              TEXT COLLATE "C" PRIMARY KEY,
    idempotency_key TEXT COLLATE "C" NOT NULL UNIQUE,
    cluster         TEXT COLLATE "C" NOT NULL,
    region          TEXT COLLATE "C" NOT NULL,
    label           TEXT COLLATE "C" NOT NULL,
    plan            TEXT COLLATE "C" NOT NULL,
    cpu             BIGINT NOT NULL,
    memory_gb       BIGINT NOT NULL,
    storage_gb      BIGINT NOT NULL,
    ip              TEXT COLLATE "C" NOT NULL,
    power           TEXT COLLATE "C" NOT NULL,
    firewall        TEXT COLLATE "C",
    rdns            TEXT COLLATE "C",
    mail_stack      BIGINT NOT NULL DEFAULT 0,
    ready_at        TEXT COLLATE "C" NOT NULL,
    created_at      TEXT COLLATE "C" NOT NULL,
    updated_at      TEXT COLLATE "C" NOT NULL,
    deleted_at      TEXT COLLATE "C",
    prev_plan       TEXT COLLATE "C",
    prev_cpu        BIGINT,
    prev_memory_gb  BIGINT,
    prev_storage_gb BIGINT
);
CREATE UNIQUE INDEX sim_instances_live_ip ON sim_instances (ip) WHERE deleted_at IS NULL;

CREATE TABLE lab_instances (
    id              TEXT COLLATE "C" PRIMARY KEY,
    idempotency_key TEXT COLLATE "C" NOT NULL UNIQUE,
    host_id         TEXT COLLATE "C" NOT NULL UNIQUE,
    cluster         TEXT COLLATE "C" NOT NULL,
    region          TEXT COLLATE "C" NOT NULL,
    label           TEXT COLLATE "C" NOT NULL,
    plan            TEXT COLLATE "C" NOT NULL,
    ip              TEXT COLLATE "C" NOT NULL,
    power           TEXT COLLATE "C" NOT NULL,
    firewall        TEXT COLLATE "C",
    rdns            TEXT COLLATE "C",
    created_at      TEXT COLLATE "C" NOT NULL,
    updated_at      TEXT COLLATE "C" NOT NULL,
    deleted_at      TEXT COLLATE "C"
);
CREATE UNIQUE INDEX lab_instances_live_ip ON lab_instances (ip) WHERE deleted_at IS NULL;

CREATE TABLE ssh_host_keys (
    instance    TEXT COLLATE "C" PRIMARY KEY,
    address     TEXT COLLATE "C" NOT NULL,
    fingerprint TEXT COLLATE "C" NOT NULL,
    pinned_at   TEXT COLLATE "C" NOT NULL
);

CREATE TABLE ssh_identity (
    name       TEXT COLLATE "C" PRIMARY KEY,
    public_key TEXT COLLATE "C" NOT NULL,
    key_sealed BYTEA,
    key_file   TEXT COLLATE "C",
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE agent_tokens (
    agent      TEXT COLLATE "C" PRIMARY KEY,
    key_sealed BYTEA,
    key_file   TEXT COLLATE "C",
    issued_at  TEXT COLLATE "C" NOT NULL,
    last_seq   BIGINT NOT NULL DEFAULT 0,
    last_at    TEXT COLLATE "C",
    CHECK (key_sealed IS NULL OR key_file IS NULL)
);

-- Change stamps (SQLite migrations 0013 and 0015): every row the console shows carries the
-- sequence of the transaction that last changed it. The store opens one stamp per
-- transaction (`change_counter.open`); a statement may set `change_seq` itself. The stamp
-- row is locked by the transaction that moves it until that one commits, so stamps are
-- handed out in commit order even with many writers.
CREATE FUNCTION stamp_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
    o bigint;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.change_seq IS DISTINCT FROM OLD.change_seq THEN
        RETURN NEW;
    END IF;
    SELECT seq, open INTO s, o FROM change_counter WHERE id = 1;
    IF o = 1 THEN
        NEW.change_seq := s;
    ELSE
        UPDATE change_counter SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO s;
        NEW.change_seq := s;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER nodes_stamp BEFORE INSERT OR UPDATE ON nodes
    FOR EACH ROW EXECUTE FUNCTION stamp_row();
CREATE TRIGGER requests_stamp BEFORE INSERT OR UPDATE ON requests
    FOR EACH ROW EXECUTE FUNCTION stamp_row();
CREATE TRIGGER alerts_stamp BEFORE INSERT OR UPDATE ON alerts
    FOR EACH ROW EXECUTE FUNCTION stamp_row();
CREATE TRIGGER blacklist_stamp BEFORE INSERT OR UPDATE ON ip_blacklist_events
    FOR EACH ROW EXECUTE FUNCTION stamp_row();

-- A child row's change touches its parent (the console reads the parent again).
CREATE FUNCTION touch_node() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE nodes SET change_seq = change_seq
     WHERE id = NEW.node_id
       AND change_seq IS DISTINCT FROM (SELECT seq FROM change_counter WHERE open = 1);
    RETURN NULL;
END $$;
CREATE TRIGGER node_warmup_stamp AFTER INSERT OR UPDATE ON node_warmup
    FOR EACH ROW EXECUTE FUNCTION touch_node();
-- A day's row touches its node only when what the console shows of it moves.
CREATE TRIGGER warmup_days_stamp_insert AFTER INSERT ON warmup_days
    FOR EACH ROW EXECUTE FUNCTION touch_node();
CREATE TRIGGER warmup_days_stamp_update AFTER UPDATE ON warmup_days
    FOR EACH ROW
    WHEN (NEW.sent IS DISTINCT FROM OLD.sent OR NEW.cap IS DISTINCT FROM OLD.cap
          OR NEW.decision IS DISTINCT FROM OLD.decision)
    EXECUTE FUNCTION touch_node();

CREATE FUNCTION touch_request() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE requests SET change_seq = change_seq
     WHERE id = NEW.request_id
       AND change_seq IS DISTINCT FROM (SELECT seq FROM change_counter WHERE open = 1);
    RETURN NULL;
END $$;
CREATE TRIGGER request_steps_stamp_insert AFTER INSERT ON request_steps
    FOR EACH ROW EXECUTE FUNCTION touch_request();
CREATE TRIGGER request_steps_stamp_update AFTER UPDATE ON request_steps
    FOR EACH ROW
    WHEN (NEW.attempts IS DISTINCT FROM OLD.attempts OR NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION touch_request();

-- A scaling request's cause is free again once the request ends (migration 0028).
CREATE FUNCTION scaling_released() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.scaling_cause IS NOT NULL AND NEW.scaling_done_at IS NULL
       AND NEW.state IN ('completed', 'failed', 'rolled_back', 'rejected', 'deprovisioned') THEN
        NEW.scaling_done_at := NEW.updated_at;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER requests_scaling_released BEFORE UPDATE OF state ON requests
    FOR EACH ROW EXECUTE FUNCTION scaling_released();

-- Quota and capacity held, kept as running totals (migration 0017).
CREATE FUNCTION held_totals_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.kind IN ('quota', 'capacity')
       AND OLD.status <> 'released' THEN
        UPDATE held_totals SET units = units - 1, cpu = cpu - OLD.cpu,
            memory_gb = memory_gb - OLD.memory_gb, storage_gb = storage_gb - OLD.storage_gb
         WHERE kind = OLD.kind
           AND owner = CASE OLD.kind WHEN 'quota' THEN OLD.tenant ELSE OLD.cluster END;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.kind IN ('quota', 'capacity')
       AND NEW.status <> 'released'
       AND (CASE NEW.kind WHEN 'quota' THEN NEW.tenant ELSE NEW.cluster END) IS NOT NULL THEN
        INSERT INTO held_totals (kind, owner, units, cpu, memory_gb, storage_gb)
        VALUES (NEW.kind, CASE NEW.kind WHEN 'quota' THEN NEW.tenant ELSE NEW.cluster END,
                1, NEW.cpu, NEW.memory_gb, NEW.storage_gb)
        ON CONFLICT (kind, owner) DO UPDATE SET units = held_totals.units + 1,
            cpu = held_totals.cpu + EXCLUDED.cpu,
            memory_gb = held_totals.memory_gb + EXCLUDED.memory_gb,
            storage_gb = held_totals.storage_gb + EXCLUDED.storage_gb;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER held_totals_insert AFTER INSERT ON resources
    FOR EACH ROW EXECUTE FUNCTION held_totals_track();
CREATE TRIGGER held_totals_update AFTER UPDATE OF kind, status, tenant, cluster, cpu, memory_gb, storage_gb
    ON resources FOR EACH ROW EXECUTE FUNCTION held_totals_track();
CREATE TRIGGER held_totals_delete AFTER DELETE ON resources
    FOR EACH ROW EXECUTE FUNCTION held_totals_track();
