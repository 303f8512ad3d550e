-- The connector's own records: one row per call, the call's turns, and an audit row per banking operation.
-- Idempotent: every statement may run again on an up-to-date database.
--
-- Privacy choices:
-- * ANI: only its last four digits are kept (ani_last4), enough to match a caller's complaint with the
--   call time. A hash would not protect the number (all 10^10 numbers hash in minutes), and the full
--   number already lives where the network needs it (OpenSIPS' dialog table, CDRs).
-- * Turn text and audit params are written redacted (banking/redact.py): no card number, PIN, one-time
--   code or date of birth ever reaches these tables.
-- * Turns go with their call when a retention job deletes old calls; audit rows outlive them, so a call
--   with audit rows cannot be deleted (ON DELETE RESTRICT) until the audit retention has passed.

CREATE TABLE IF NOT EXISTS call_sessions (
    id          uuid PRIMARY KEY,
    call_id     text NOT NULL CHECK (length(call_id) BETWEEN 1 AND 256),
    b2b_key     text,
    ani_last4   text CHECK (ani_last4 ~ '^[0-9]{1,4}$'),
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    outcome     text,
    auth_level  smallint CHECK (auth_level IN (0, 1)),
    intent      text,
    record      jsonb NOT NULL DEFAULT '{}'::jsonb,
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX IF NOT EXISTS call_sessions_call_id_idx ON call_sessions (call_id);
CREATE INDEX IF NOT EXISTS call_sessions_started_at_idx ON call_sessions (started_at);
-- Calls still open: what a node restart or a stuck call leaves behind.
CREATE INDEX IF NOT EXISTS call_sessions_open_idx ON call_sessions (started_at) WHERE ended_at IS NULL;

CREATE TABLE IF NOT EXISTS conversation_turns (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id  uuid NOT NULL REFERENCES call_sessions (id) ON DELETE CASCADE,
    seq         integer NOT NULL CHECK (seq >= 0),
    speaker     text NOT NULL CHECK (speaker IN ('caller', 'bot')),
    text        text NOT NULL,
    timings     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (session_id, seq)
);

CREATE TABLE IF NOT EXISTS banking_transactions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id  uuid NOT NULL REFERENCES call_sessions (id) ON DELETE RESTRICT,
    operation   text NOT NULL,
    auth_level  smallint CHECK (auth_level IN (0, 1)),
    params      jsonb NOT NULL DEFAULT '{}'::jsonb,
    outcome     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS banking_transactions_session_idx ON banking_transactions (session_id, created_at);
CREATE INDEX IF NOT EXISTS banking_transactions_operation_idx ON banking_transactions (operation, created_at);
