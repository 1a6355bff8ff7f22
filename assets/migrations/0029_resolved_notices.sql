-- Alert routing tells a resolution too (issue 16): an alert that was sent when raised is
-- sent again when it resolves, once (`resolve_notified_at`). Alerts resolved before this
-- count as told. An alert resolved before its raising was sent is not sent at all.
ALTER TABLE alerts ADD COLUMN resolve_notified_at TEXT;
UPDATE alerts SET resolve_notified_at = resolved_at WHERE resolved_at IS NOT NULL;
CREATE INDEX alerts_resolved_to_notify ON alerts (resolved_at)
    WHERE resolve_notified_at IS NULL AND notified_at IS NOT NULL;
