-- One stamp per transaction instead of one per written row (0013 bumped the counter and
-- wrote each row a second time for every statement, and a request's row again for each of
-- its steps' rows: the engine's writer spent a good part of its time there).
--
-- The store's writer may open a stamp in its transaction: it bumps the counter once and
-- sets `open`; every row the transaction changes then carries that one value (written by
-- the statement itself, or by these triggers), a row already carrying it is not written
-- again, and the writer sets `open` back to 0 before it commits. So no committed state
-- ever has `open = 1`, and a write that opens nothing (another program's, or a path of
-- ours that does not) is stamped as under 0013: counter bumped, row stamped. Either way
-- every changed row commits with a sequence greater than any a reader can hold, in the
-- same transaction as the counter.

ALTER TABLE change_counter ADD COLUMN open INTEGER NOT NULL DEFAULT 0;

DROP TRIGGER nodes_stamp_insert;
DROP TRIGGER nodes_stamp_update;
DROP TRIGGER requests_stamp_insert;
DROP TRIGGER requests_stamp_update;
DROP TRIGGER blacklist_stamp_insert;
DROP TRIGGER blacklist_stamp_update;
DROP TRIGGER alerts_stamp_insert;
DROP TRIGGER alerts_stamp_update;
DROP TRIGGER node_warmup_stamp_insert;
DROP TRIGGER node_warmup_stamp_update;
DROP TRIGGER warmup_days_stamp_insert;
DROP TRIGGER warmup_days_stamp_update;
DROP TRIGGER request_steps_stamp_insert;
DROP TRIGGER request_steps_stamp_update;

-- `(SELECT seq FROM change_counter WHERE open = 1)` is the open stamp, or NULL when none
-- is open. A row that already holds the open stamp was written by this transaction.
-- An UPDATE that sets change_seq to a new value itself (only the writer's open stamp, or
-- these triggers) does not fire them.

CREATE TRIGGER nodes_stamp_insert AFTER INSERT ON nodes
WHEN NEW.change_seq IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE change_counter SET seq = seq + 1 WHERE open = 0;
    UPDATE nodes SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER nodes_stamp_update AFTER UPDATE ON nodes
WHEN NEW.change_seq = OLD.change_seq
 AND NEW.change_seq IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE change_counter SET seq = seq + 1 WHERE open = 0;
    UPDATE nodes SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER requests_stamp_insert AFTER INSERT ON requests
WHEN NEW.change_seq IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE change_counter SET seq = seq + 1 WHERE open = 0;
    UPDATE requests SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER requests_stamp_update AFTER UPDATE ON requests
WHEN NEW.change_seq = OLD.change_seq
 AND NEW.change_seq IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE change_counter SET seq = seq + 1 WHERE open = 0;
    UPDATE requests SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER blacklist_stamp_insert AFTER INSERT ON ip_blacklist_events
WHEN NEW.change_seq IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE change_counter SET seq = seq + 1 WHERE open = 0;
    UPDATE ip_blacklist_events SET change_seq = (SELECT seq FROM change_counter)
    WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER blacklist_stamp_update AFTER UPDATE ON ip_blacklist_events
WHEN NEW.change_seq = OLD.change_seq
 AND NEW.change_seq IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE change_counter SET seq = seq + 1 WHERE open = 0;
    UPDATE ip_blacklist_events SET change_seq = (SELECT seq FROM change_counter)
    WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER alerts_stamp_insert AFTER INSERT ON alerts
WHEN NEW.change_seq IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE change_counter SET seq = seq + 1 WHERE open = 0;
    UPDATE alerts SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER alerts_stamp_update AFTER UPDATE ON alerts
WHEN NEW.change_seq = OLD.change_seq
 AND NEW.change_seq IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE change_counter SET seq = seq + 1 WHERE open = 0;
    UPDATE alerts SET change_seq = (SELECT seq FROM change_counter) WHERE rowid = NEW.rowid;
END;

-- What a node's row shows of its warm-up and its log, what a request's row shows of its
-- steps: a change there is a change of the row, unless the row already holds the open
-- stamp.
CREATE TRIGGER node_warmup_stamp_insert AFTER INSERT ON node_warmup
WHEN (SELECT change_seq FROM nodes WHERE id = NEW.node_id)
     IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE nodes SET change_seq = change_seq WHERE id = NEW.node_id;
END;
CREATE TRIGGER node_warmup_stamp_update AFTER UPDATE ON node_warmup
WHEN (SELECT change_seq FROM nodes WHERE id = NEW.node_id)
     IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE nodes SET change_seq = change_seq WHERE id = NEW.node_id;
END;
CREATE TRIGGER warmup_days_stamp_insert AFTER INSERT ON warmup_days
WHEN (SELECT change_seq FROM nodes WHERE id = NEW.node_id)
     IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE nodes SET change_seq = change_seq WHERE id = NEW.node_id;
END;
CREATE TRIGGER warmup_days_stamp_update AFTER UPDATE ON warmup_days
WHEN (NEW.sent IS NOT OLD.sent OR NEW.cap IS NOT OLD.cap OR NEW.decision IS NOT OLD.decision)
 AND (SELECT change_seq FROM nodes WHERE id = NEW.node_id)
     IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE nodes SET change_seq = change_seq WHERE id = NEW.node_id;
END;
CREATE TRIGGER request_steps_stamp_insert AFTER INSERT ON request_steps
WHEN (SELECT change_seq FROM requests WHERE id = NEW.request_id)
     IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE requests SET change_seq = change_seq WHERE id = NEW.request_id;
END;
CREATE TRIGGER request_steps_stamp_update AFTER UPDATE ON request_steps
WHEN (NEW.attempts IS NOT OLD.attempts OR NEW.status IS NOT OLD.status)
 AND (SELECT change_seq FROM requests WHERE id = NEW.request_id)
     IS NOT (SELECT seq FROM change_counter WHERE open = 1) BEGIN
    UPDATE requests SET change_seq = change_seq WHERE id = NEW.request_id;
END;

-- The sums of quota and capacity in use read only the `quota` and `capacity` rows; the
-- indexes behind them held every resource a request records (instance, IP, firewall,
-- rDNS, DNS, certificate, node), each written on every insert and every status change.
-- Only those two kinds now, and live instances (reconcile) by their own small index. No
-- query looks resources up by provider_ref.
DROP INDEX resources_held_by_tenant;
DROP INDEX resources_held_by_cluster;
DROP INDEX resources_by_ref;
CREATE INDEX resources_quota_held ON resources (tenant, cpu, memory_gb, storage_gb)
    WHERE kind = 'quota' AND status <> 'released';
CREATE INDEX resources_capacity_held ON resources (cluster, cpu, memory_gb, storage_gb)
    WHERE kind = 'capacity' AND status <> 'released';
CREATE INDEX resources_live_instances ON resources (created_at)
    WHERE kind = 'instance' AND status <> 'released';
