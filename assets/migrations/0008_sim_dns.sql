-- The simulated DNS provider's zones (dns::sim): every record it holds, so a restart or a
-- crash cannot make it forget what was published. A zone exists once it holds a record (it
-- is created implicitly by the first publish into it). One row per record; a record set is
-- the rows of one (zone, name, rtype), and holds each content at most once. Names are fully
-- qualified and lowercase, with the trailing dot; TXT content is in quoted-strings form.

CREATE TABLE sim_dns_records (
    zone        TEXT NOT NULL,          -- example.com.
    name        TEXT NOT NULL,          -- mx1.example.com.
    rtype       TEXT NOT NULL,          -- A, MX, TXT, ...
    ttl         INTEGER NOT NULL,       -- shared by the record set: the last publish sets it
    content     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (zone, name, rtype, content)
);
