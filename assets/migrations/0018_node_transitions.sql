-- Each change of a node's status, as the node lifecycle (domain/node.rs) decided it
-- (issue 14): when, from what, to what, who and why. Written in the same transaction as
-- the status (store/nodes.rs `transition`), so that the history and the status agree.
CREATE TABLE node_transitions (
    seq         INTEGER PRIMARY KEY,
    node_id     TEXT NOT NULL REFERENCES nodes (id),
    at          TEXT NOT NULL,
    from_status TEXT,                  -- NULL: the node's first status
    to_status   TEXT NOT NULL,
    cause       TEXT,                  -- a pause's cause
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX node_transitions_by_node ON node_transitions (node_id, seq);

-- Nodes registered before the lifecycle kept a history start with the status they had.
INSERT INTO node_transitions (node_id, at, from_status, to_status, cause, actor, reason)
    SELECT id, updated_at, NULL, status, pause_cause, 'mailfleet',
           'status when transitions began to be kept' || COALESCE(': ' || status_reason, '')
    FROM nodes ORDER BY created_at, id;
