-- Access details an administrator entered for a request on a manual provider (issue 14,
-- seed 002): the vendor-managed server's IP address and SSH port. The request waits in
-- awaiting_input until they are given; a teardown marks them released (the server is the
-- vendor's to take back).
CREATE TABLE manual_access (
    request_id  TEXT PRIMARY KEY REFERENCES requests (id),
    ip          TEXT NOT NULL,
    ssh_port    INTEGER NOT NULL,
    provided_by TEXT NOT NULL,
    provided_at TEXT NOT NULL,
    released_at TEXT
);
-- One live request per address.
CREATE UNIQUE INDEX manual_access_live_ip ON manual_access (ip) WHERE released_at IS NULL;
