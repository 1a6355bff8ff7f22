-- ACME orders placed and not yet finished. An order is kept before any of its challenges is
-- answered, and forgotten once it ends; one still here was cut off (a killed process) or
-- failed. The next order for the same names deactivates its pending authorizations first
-- (RFC 8555 §7.5.2), instead of leaving them open at the CA until they expire.
CREATE TABLE acme_orders (
    url        TEXT PRIMARY KEY,
    directory  TEXT NOT NULL,
    names      TEXT NOT NULL,           -- the identifiers, lowercased, sorted, comma-joined
    placed_by  TEXT NOT NULL,
    placed_at  TEXT NOT NULL
);
CREATE INDEX acme_orders_by_names ON acme_orders (directory, names);
