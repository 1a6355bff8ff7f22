-- Warm-up caps enforced on the node (issue 16): the daily cap last installed in a node's
-- Postfix (as an hourly rate limit); -1 for "no limit" (warm-up over). NULL: not yet.
ALTER TABLE node_warmup ADD COLUMN pushed_cap INTEGER;
