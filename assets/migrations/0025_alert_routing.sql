-- Alert routing (issue 16): each alert is sent once to the configured sinks. An alert
-- raised before routing existed counts as told; a sender claims one until notify_until,
-- so that two processes never send it twice; a failure is kept on it and tried again.
ALTER TABLE alerts ADD COLUMN notified_at TEXT;
ALTER TABLE alerts ADD COLUMN notify_until TEXT;
ALTER TABLE alerts ADD COLUMN notify_error TEXT;
UPDATE alerts SET notified_at = raised_at;
CREATE INDEX alerts_to_notify ON alerts (raised_at) WHERE notified_at IS NULL;
