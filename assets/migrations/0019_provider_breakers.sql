-- Each provider's circuit breaker as it last changed (issue 14): open (since when, after
-- how many failures, the last error, when it is tried again) or closed. Written only when
-- the circuit opens or closes. Admission holds queued requests on a provider whose circuit
-- is open; `cluster list` and the console show it.
CREATE TABLE provider_breakers (
    provider   TEXT PRIMARY KEY,
    open       INTEGER NOT NULL,       -- 1: open (or half-open: a probe may go at retry_at)
    failures   INTEGER NOT NULL,
    opened_at  TEXT,
    retry_at   TEXT,
    last_error TEXT,
    updated_at TEXT NOT NULL,
    change_seq INTEGER NOT NULL DEFAULT 0   -- the console reads it again when it moves
);
