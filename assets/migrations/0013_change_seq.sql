-- What the console reads after its first load: only the rows that changed. One counter for
-- the whole database, bumped by triggers inside the transaction that writes a row the
-- console shows, and stamped on that row. A reader holding sequence S reads the rows whose
-- change_seq > S, and the counter, in one read transaction: with one writer at a time the
-- stamps commit in order, so nothing is skipped.
--
-- A node's row also stands for its warm-up (node_warmup) and its recent daily log
-- (warmup_days); a request's row for its steps' attempts and failures (request_steps).

CREATE TABLE change_counter (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO change_counter (id, seq) VALUES (1, 0);

ALTER TABLE nodes ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ip_blacklist_events ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;

CREATE INDEX nodes_changed ON nodes (change_seq);
CREATE INDEX requests_changed ON requests (change_seq);
CREATE INDEX blacklist_changed ON ip_blacklist_events (change_seq);
CREATE INDEX alerts_changed ON alerts (change_seq);
-- The console's first page (the Fleet sorted by label) without reading the whole fleet.
CREATE INDEX nodes_by_label ON nodes (label, id);
-- The newest date of the warm-up log, which the sparklines' window hangs on.
CREATE INDEX warmup_days_by_date ON warmup_days (date);

-- A row written with the stamp it already had gets a new one; a statement that sets
-- change_seq itself (only these triggers do) does not fire them again.
CREATE TRIGGER nodes_stamp_insert AFTER INSERT ON nodes BEGIN
    UPDATE change_counter SET seq = seq + 1;
    UPDATE nodes SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER nodes_stamp_update AFTER UPDATE ON nodes
WHEN NEW.change_seq = OLD.change_seq BEGIN
    UPDATE change_counter SET seq = seq + 1;
    UPDATE nodes SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER requests_stamp_insert AFTER INSERT ON requests BEGIN
    UPDATE change_counter SET seq = seq + 1;
    UPDATE requests SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER requests_stamp_update AFTER UPDATE ON requests
WHEN NEW.change_seq = OLD.change_seq BEGIN
    UPDATE change_counter SET seq = seq + 1;
    UPDATE requests SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER blacklist_stamp_insert AFTER INSERT ON ip_blacklist_events BEGIN
    UPDATE change_counter SET seq = seq + 1;
    UPDATE ip_blacklist_events SET change_seq = (SELECT seq FROM change_counter)
    WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER blacklist_stamp_update AFTER UPDATE ON ip_blacklist_events
WHEN NEW.change_seq = OLD.change_seq BEGIN
    UPDATE change_counter SET seq = seq + 1;
    UPDATE ip_blacklist_events SET change_seq = (SELECT seq FROM change_counter)
    WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER alerts_stamp_insert AFTER INSERT ON alerts BEGIN
    UPDATE change_counter SET seq = seq + 1;
    UPDATE alerts SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER alerts_stamp_update AFTER UPDATE ON alerts
WHEN NEW.change_seq = OLD.change_seq BEGIN
    UPDATE change_counter SET seq = seq + 1;
    UPDATE alerts SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;

-- What a node's row shows of its warm-up and its log; what a request's row shows of its
-- steps (attempts, which one failed): a change there is a change of the row.
CREATE TRIGGER node_warmup_stamp_insert AFTER INSERT ON node_warmup BEGIN
    UPDATE nodes SET change_seq = change_seq WHERE id = NEW.node_id;
END;
CREATE TRIGGER node_warmup_stamp_update AFTER UPDATE ON node_warmup BEGIN
    UPDATE nodes SET change_seq = change_seq WHERE id = NEW.node_id;
END;
CREATE TRIGGER warmup_days_stamp_insert AFTER INSERT ON warmup_days BEGIN
    UPDATE nodes SET change_seq = change_seq WHERE id = NEW.node_id;
END;
CREATE TRIGGER warmup_days_stamp_update AFTER UPDATE ON warmup_days
WHEN NEW.sent IS NOT OLD.sent OR NEW.cap IS NOT OLD.cap OR NEW.decision IS NOT OLD.decision BEGIN
    UPDATE nodes SET change_seq = change_seq WHERE id = NEW.node_id;
END;
CREATE TRIGGER request_steps_stamp_insert AFTER INSERT ON request_steps BEGIN
    UPDATE requests SET change_seq = change_seq WHERE id = NEW.request_id;
END;
CREATE TRIGGER request_steps_stamp_update AFTER UPDATE ON request_steps
WHEN NEW.attempts IS NOT OLD.attempts OR NEW.status IS NOT OLD.status BEGIN
    UPDATE requests SET change_seq = change_seq WHERE id = NEW.request_id;
END;
