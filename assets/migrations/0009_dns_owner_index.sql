-- Finding the other holders of a shared record (a domain's DKIM or DMARC record, which every
-- node of the domain plans) must not scan every request of the domain: both indexes lead
-- with the whole record (name, type, content). The second holds only the one row per live
-- record that owns it.
DROP INDEX dns_records_live;
CREATE INDEX dns_records_live ON dns_records (name, rtype, content) WHERE status <> 'removed';
CREATE INDEX dns_records_owner ON dns_records (name, rtype, content) WHERE owned = 1 AND status <> 'removed';
