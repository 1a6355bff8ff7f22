-- Certificates gain what their later life needs; the table is rebuilt because SQLite cannot
-- change a CHECK constraint in place.
--
-- renewing_by, renewing_until: a renewal in progress, the process ordering the certificate
-- again and until when its claim holds. Two processes that both run the renewal task (the
-- console and `mailfleet work`) never order one certificate twice, and a renewal cut off in
-- the middle of its order is known by a claim that lapsed without being released.
--
-- revoked_at, revoke_error: a torn-down node's certificate is revoked at its CA ([tls]
-- revoke_on_teardown), or why it could not be. Its keys (and those of the certificates it
-- superseded) are destroyed either way: key_sealed and key_file are then both NULL, which
-- the old CHECK refused; an active certificate still needs its key.
CREATE TABLE certificates_v10 (
    id             TEXT PRIMARY KEY,
    request_id     TEXT REFERENCES requests (id),
    hostname       TEXT NOT NULL,
    names          TEXT NOT NULL,           -- JSON array
    issuer         TEXT NOT NULL,
    serial         TEXT NOT NULL,
    not_before     TEXT NOT NULL,
    not_after      TEXT NOT NULL,
    chain_pem      TEXT NOT NULL,
    key_sealed     BLOB,
    key_file       TEXT,
    status         TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    renewed_at     TEXT,
    renew_error    TEXT,
    renewing_by    TEXT,
    renewing_until TEXT,
    revoked_at     TEXT,
    revoke_error   TEXT,
    CHECK (key_sealed IS NULL OR key_file IS NULL),
    CHECK (status <> 'active' OR key_sealed IS NOT NULL OR key_file IS NOT NULL)
);
INSERT INTO certificates_v10 (id, request_id, hostname, names, issuer, serial, not_before, not_after,
        chain_pem, key_sealed, key_file, status, created_at, renewed_at, renew_error)
    SELECT id, request_id, hostname, names, issuer, serial, not_before, not_after,
        chain_pem, key_sealed, key_file, status, created_at, renewed_at, renew_error
    FROM certificates;
DROP TABLE certificates;
ALTER TABLE certificates_v10 RENAME TO certificates;
CREATE INDEX certificates_by_host ON certificates (hostname, status);
CREATE INDEX certificates_by_request ON certificates (request_id, status);
CREATE INDEX certificates_by_expiry ON certificates (status, not_after);
