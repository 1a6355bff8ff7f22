-- Yesterday's warm-up figures (the most recent closed date in the window, and what the days
-- closed on it sent and allowed), which the console reads again whenever a warming node
-- changes: from this index alone, not from every day of the window's rows.
CREATE INDEX warmup_days_closed ON warmup_days (date, sent, cap, decision) WHERE decision IS NOT NULL;
