-- Warm-up day boundaries: the date (at the configured offset) of each node's current day,
-- and the node's own schedule when an operator changed its pace.

ALTER TABLE node_warmup ADD COLUMN day_date TEXT;
ALTER TABLE node_warmup ADD COLUMN schedule TEXT;   -- JSON array of daily caps, overriding the plan
UPDATE node_warmup SET day_date = substr(day_started_at, 1, 10);
CREATE INDEX node_warmup_due ON node_warmup (status, day_date);
