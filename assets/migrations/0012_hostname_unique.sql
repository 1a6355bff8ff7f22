-- A hostname (label + domain) belongs to one live request. Admission checks it inside the
-- write transaction that inserts the request (store::requests::hostname_holder), so two
-- creates at once cannot both pass. This index serves that check: the live requests of one
-- label. It is not UNIQUE on purpose: databases written before the check may already hold
-- two live requests of one hostname, and a unique index would make them impossible to open.
CREATE INDEX requests_live_label ON requests (label)
    WHERE state NOT IN ('rolled_back', 'rejected', 'deprovisioned');
