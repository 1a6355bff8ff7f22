-- DKIM keys per domain and selector. The private half is either sealed here (ChaCha20-
-- Poly1305 under the key in the environment variable named by [dkim] key_env) or kept in
-- its own 0600 file, whose path is recorded; never both, never in the clear.

CREATE TABLE dkim_keys (
    domain      TEXT NOT NULL,
    selector    TEXT NOT NULL,
    algorithm   TEXT NOT NULL,          -- rsa-2048
    public_key  TEXT NOT NULL,          -- base64 SubjectPublicKeyInfo: the record's p=
    sealed      BLOB,                   -- nonce ‖ ciphertext ‖ tag
    key_file    TEXT,
    created_at  TEXT NOT NULL,
    retired_at  TEXT,
    PRIMARY KEY (domain, selector),
    CHECK ((sealed IS NULL) <> (key_file IS NULL))
);
