-- A node's resize (issue 14, seed 001's vertical scaling) is a request of its own: its
-- `operation` is 'resize' (every request before this one provisions), its `target` the
-- provisioning request of the node it resizes, and its plan and sizes the new ones. It runs
-- two steps (resize, confirm) and rolls back by reverting the provider's upgrade.
ALTER TABLE requests ADD COLUMN operation TEXT NOT NULL DEFAULT 'provision';
ALTER TABLE requests ADD COLUMN target TEXT REFERENCES requests (id);
-- The plan the node was on when the resize was filed, for history and the console.
ALTER TABLE requests ADD COLUMN from_plan TEXT;
-- A resize that took its node out of rotation (into maintenance) while the server restarts
-- on its new size: it brings the node back when it ends, whichever way.
ALTER TABLE requests ADD COLUMN drained INTEGER NOT NULL DEFAULT 0;
-- One resize of a node at a time (a provider takes one upgrade order at a time): checked
-- when the resize is filed, and kept by the database against two filed at once.
CREATE UNIQUE INDEX requests_one_resize ON requests (target)
    WHERE target IS NOT NULL
      AND state IN ('queued','pending_approval','allocating','verifying','failed','rolling_back');

-- The simulated cloud keeps a resize it has applied but not confirmed, so that it can be
-- reverted to what the instance was.
ALTER TABLE sim_instances ADD COLUMN prev_plan TEXT;
ALTER TABLE sim_instances ADD COLUMN prev_cpu INTEGER;
ALTER TABLE sim_instances ADD COLUMN prev_memory_gb INTEGER;
ALTER TABLE sim_instances ADD COLUMN prev_storage_gb INTEGER;
