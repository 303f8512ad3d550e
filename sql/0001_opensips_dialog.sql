-- 0001: the OpenSIPS 3.5 "dialog" table, where the edge proxy (opensips/edge.cfg)
-- persists every call and the variables avc pushes over MI (dialog.vars).
--
-- Column for column the table of OpenSIPS 3.5's scripts/postgres/dialog-create.sql
-- (dialog module table version 12), plus the "version" table of
-- scripts/postgres/standard-create.sql that OpenSIPS reads at start-up to check
-- the schema. Made idempotent so the ordered migration set can be re-applied:
--   * CREATE TABLE IF NOT EXISTS for both tables;
--   * the version row is inserted ON CONFLICT DO NOTHING. An existing row with an
--     older number is deliberately left alone: OpenSIPS then refuses to start
--     with "invalid version ... for table dialog", which is the right outcome for
--     a table this migration did not create.
--
-- Apply with: psql -v ON_ERROR_STOP=1 -d opensips -f sql/0001_opensips_dialog.sql

CREATE TABLE IF NOT EXISTS version (
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_t_name_idx UNIQUE (table_name)
);

INSERT INTO version (table_name, table_version) VALUES ('dialog', '12')
    ON CONFLICT (table_name) DO NOTHING;

CREATE TABLE IF NOT EXISTS dialog (
    dlg_id BIGINT PRIMARY KEY NOT NULL,
    callid VARCHAR(255) NOT NULL,
    from_uri VARCHAR(255) NOT NULL,
    from_tag VARCHAR(64) NOT NULL,
    to_uri VARCHAR(255) NOT NULL,
    to_tag VARCHAR(64) NOT NULL,
    mangled_from_uri VARCHAR(255) DEFAULT NULL,
    mangled_to_uri VARCHAR(255) DEFAULT NULL,
    caller_cseq VARCHAR(11) NOT NULL,
    callee_cseq VARCHAR(11) NOT NULL,
    caller_ping_cseq INTEGER NOT NULL,
    callee_ping_cseq INTEGER NOT NULL,
    caller_route_set TEXT,
    callee_route_set TEXT,
    caller_contact VARCHAR(255),
    callee_contact VARCHAR(255),
    caller_sock VARCHAR(64) NOT NULL,
    callee_sock VARCHAR(64) NOT NULL,
    state INTEGER NOT NULL,
    start_time INTEGER NOT NULL,
    timeout INTEGER NOT NULL,
    vars BYTEA DEFAULT NULL,
    profiles TEXT DEFAULT NULL,
    script_flags VARCHAR(255) DEFAULT NULL,
    module_flags INTEGER DEFAULT 0 NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    rt_on_answer VARCHAR(64) DEFAULT NULL,
    rt_on_timeout VARCHAR(64) DEFAULT NULL,
    rt_on_hangup VARCHAR(64) DEFAULT NULL
);
