-- SSH to nodes (issue 15): mailfleet's own key pair, its private half kept like DKIM keys
-- (sealed under the sealing key, or in a file beside the database), and each node's host
-- key, pinned on first contact and checked on every later one.
CREATE TABLE ssh_identity (
    name       TEXT PRIMARY KEY,       -- 'provisioning'
    public_key TEXT NOT NULL,          -- an OpenSSH line
    key_sealed BLOB,
    key_file   TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE ssh_host_keys (
    instance    TEXT PRIMARY KEY,      -- the instance's id at its provider
    address     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,         -- SHA256:...
    pinned_at   TEXT NOT NULL
);
