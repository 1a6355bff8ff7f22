-- What the configure step publishes for a request, and the certificates it obtains.
--
-- dns_records: one row per planned record. `owned` says whether this request added it to
-- the zone (a record already there with the same content is not ours and is never removed
-- by our rollback); `status` is planned → published → verified, or removed once rolled
-- back. A shared record (a domain's DKIM or DMARC record that several nodes rely on) is
-- handed to another live holder instead of being removed.
CREATE TABLE dns_records (
    request_id   TEXT NOT NULL REFERENCES requests (id),
    position     INTEGER NOT NULL,
    zone         TEXT NOT NULL,
    purpose      TEXT NOT NULL,          -- a, mx, spf, dkim, dkim-ed25519, dmarc, mta-sts, tls-rpt
    name         TEXT NOT NULL,          -- fully qualified, trailing dot
    rtype        TEXT NOT NULL,
    ttl          INTEGER NOT NULL,
    content      TEXT NOT NULL,          -- as the provider stores it (TXT: quoted strings)
    want         TEXT NOT NULL,          -- what a resolver should answer (TXT: joined)
    provider     TEXT NOT NULL,
    owned        INTEGER NOT NULL DEFAULT 1,
    status       TEXT NOT NULL,          -- planned | published | verified | removed
    seen         TEXT,                   -- what the last check answered
    published_at TEXT,
    verified_at  TEXT,
    removed_at   TEXT,
    PRIMARY KEY (request_id, position)
);
CREATE INDEX dns_records_live ON dns_records (name, rtype) WHERE status <> 'removed';

-- Certificates: the chain in PEM; its private key sealed (ChaCha20-Poly1305, the same
-- sealing key as DKIM keys) or in a 0600 file. `status`: active | superseded | retired.
CREATE TABLE certificates (
    id          TEXT PRIMARY KEY,
    request_id  TEXT REFERENCES requests (id),
    hostname    TEXT NOT NULL,
    names       TEXT NOT NULL,           -- JSON array
    issuer      TEXT NOT NULL,
    serial      TEXT NOT NULL,
    not_before  TEXT NOT NULL,
    not_after   TEXT NOT NULL,
    chain_pem   TEXT NOT NULL,
    key_sealed  BLOB,
    key_file    TEXT,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    renewed_at  TEXT,
    renew_error TEXT,
    CHECK ((key_sealed IS NULL) <> (key_file IS NULL))
);
CREATE INDEX certificates_by_host ON certificates (hostname, status);
CREATE INDEX certificates_by_request ON certificates (request_id, status);
CREATE INDEX certificates_by_expiry ON certificates (status, not_after);

-- ACME accounts, one per directory: the credentials are a secret, sealed or in a file.
CREATE TABLE acme_accounts (
    directory   TEXT PRIMARY KEY,
    sealed      BLOB,
    key_file    TEXT,
    created_at  TEXT NOT NULL,
    CHECK ((sealed IS NULL) <> (key_file IS NULL))
);

-- The node's certificate expiry, kept beside the node so the fleet view needs no join.
ALTER TABLE nodes ADD COLUMN cert_not_after TEXT;
