-- Which connector node wrote a call's row, so that a node starting up can close the rows it left open when it
-- crashed (no process owns them any more) without touching the live calls of other nodes.
-- Idempotent: every statement may run again on an up-to-date database.
ALTER TABLE call_sessions ADD COLUMN IF NOT EXISTS node text CHECK (node IS NULL OR length(node) BETWEEN 1 AND 128);
CREATE INDEX IF NOT EXISTS call_sessions_open_node_idx ON call_sessions (node) WHERE ended_at IS NULL;
