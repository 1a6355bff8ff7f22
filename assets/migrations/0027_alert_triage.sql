-- Triage (issue 16): an on-call engineer acknowledges an alert ("I have it") or silences it
-- for a while ("known, do not page me until …"), each with who and why. Both stay on the
-- alert; the audit log keeps each act. A silenced alert is not sent to the alert sinks
-- until its silence ends (if it is still open then, it goes).
ALTER TABLE alerts ADD COLUMN acked_at TEXT;
ALTER TABLE alerts ADD COLUMN acked_by TEXT;
ALTER TABLE alerts ADD COLUMN ack_note TEXT;
ALTER TABLE alerts ADD COLUMN silenced_until TEXT;
ALTER TABLE alerts ADD COLUMN silenced_by TEXT;
ALTER TABLE alerts ADD COLUMN silence_reason TEXT;
-- The Triage view reads the last hour's events.
CREATE INDEX events_by_time ON events (at);
