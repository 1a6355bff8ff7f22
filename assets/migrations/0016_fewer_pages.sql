-- Fewer pages written per commit (issue 13, engine throughput). `cargo bench --bench engine`
-- wrote about 65 pages of WAL per pipeline; these two parts of them bought
-- nothing.

-- No query looks events up by name: `events --name` matches a substring (LIKE '%…%'),
-- which this index cannot serve. Every event wrote it.
DROP INDEX events_by_name;

-- The indexes of live DNS records were partial on `status <> 'removed'`: every status
-- change (planned, published, verified) rewrote both entries, each keyed by the whole
-- record (a DKIM key is some 400 bytes). `removed_at` is set exactly when a record is
-- removed, so keyed on it the entries are written when a record is planned and when it
-- is removed, not in between. A removed record without the time (none is written so) gets
-- one, so that it stays out of the indexes.
UPDATE dns_records SET removed_at = COALESCE(verified_at, published_at, '1970-01-01T00:00:00.000000Z')
    WHERE status = 'removed' AND removed_at IS NULL;
DROP INDEX dns_records_live;
DROP INDEX dns_records_owner;
CREATE INDEX dns_records_live ON dns_records (name, rtype, content) WHERE removed_at IS NULL;
CREATE INDEX dns_records_owner ON dns_records (name, rtype, content)
    WHERE owned = 1 AND removed_at IS NULL;
