-- Scaling (seed 001, issue 16): a request the engine files on its own names the cause it
-- answers ("capacity" for a scale-out, "queue:<node id>" for a resize). At most one request
-- per cause is live: the unique index below holds it, so two evaluations at once cannot
-- both file one. A request releases its cause the first time it finishes (completed,
-- failed, rolled back, rejected, deprovisioned), and `scaling_done_at` keeps when: the cause
-- fires again only for a condition that holds over a window after that moment. A release
-- is never undone (a completed node later suspended does not take its cause back).
ALTER TABLE requests ADD COLUMN scaling_cause TEXT;
ALTER TABLE requests ADD COLUMN scaling_done_at TEXT;

CREATE UNIQUE INDEX requests_one_live_per_scaling_cause ON requests (scaling_cause)
    WHERE scaling_cause IS NOT NULL AND scaling_done_at IS NULL;
CREATE INDEX requests_scaling_done ON requests (scaling_done_at)
    WHERE scaling_cause IS NOT NULL;

-- Every path that changes a request's state goes through an UPDATE of `state`: the release
-- is recorded there, in the same statement's transaction, whoever made the change.
CREATE TRIGGER requests_scaling_released AFTER UPDATE OF state ON requests
WHEN NEW.scaling_cause IS NOT NULL AND NEW.scaling_done_at IS NULL
 AND NEW.state IN ('completed', 'failed', 'rolled_back', 'rejected', 'deprovisioned') BEGIN
    UPDATE requests SET scaling_done_at = NEW.updated_at WHERE rowid = NEW.rowid;
END;
