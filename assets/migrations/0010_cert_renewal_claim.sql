-- A renewal in progress: the process that is ordering the certificate again, and until when
-- its claim holds. Two processes that both run the renewal task (the console and
-- `mailfleet work`) then never order one certificate twice, and a renewal cut off in the
-- middle of its order is known by a claim that lapsed without being released.
ALTER TABLE certificates ADD COLUMN renewing_by TEXT;
ALTER TABLE certificates ADD COLUMN renewing_until TEXT;
