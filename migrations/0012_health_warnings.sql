-- Training-health warnings are log lines with a stable code (`flat_loss/bbox_regression`,
-- `stalled`, …; the trainer's `train::health`). The run page and the runs list show the latest
-- line of each code.

ALTER TABLE run_logs ADD COLUMN code TEXT;

CREATE INDEX run_logs_warnings ON run_logs (run_id, code) WHERE code IS NOT NULL;
