-- The OpenSIPS 3.5 "dispatcher" table the edge proxy reads its AI nodes from (set 1, edge.cfg).
--
-- sql/ has no dispatcher migration yet (opensips/README.md, "Database"), so the compose lab and a
-- first Kubernetes install apply this file after `python -m banking.migrate`, which creates the
-- "version" table (sql/0001_opensips_dialog.sql). Column for column OpenSIPS 3.5's
-- scripts/postgres/dispatcher-create.sql (table version 9); compare with
-- /usr/share/opensips/postgres/dispatcher-create.sql of the installed OpenSIPS when upgrading:
-- OpenSIPS refuses to start on a version mismatch. Idempotent, like the migrations.
--
--   psql -v ON_ERROR_STOP=1 -d <database> -f deploy/postgres/dispatcher.sql
--
-- Rows (one per AI node SIP address) are site data, added separately, for example:
--   INSERT INTO dispatcher (setid, destination, description)
--   SELECT 1, 'sip:10.20.0.21:5070', 'ai-node-a'
--   WHERE NOT EXISTS (SELECT 1 FROM dispatcher WHERE setid = 1 AND destination = 'sip:10.20.0.21:5070');

INSERT INTO version (table_name, table_version) VALUES ('dispatcher', '9')
    ON CONFLICT (table_name) DO NOTHING;

CREATE TABLE IF NOT EXISTS dispatcher (
    id SERIAL PRIMARY KEY NOT NULL,
    setid INTEGER DEFAULT 0 NOT NULL,
    destination VARCHAR(192) DEFAULT '' NOT NULL,
    socket VARCHAR(128) DEFAULT NULL,
    state INTEGER DEFAULT 0 NOT NULL,
    probe_mode INTEGER DEFAULT 0 NOT NULL,
    weight VARCHAR(64) DEFAULT 1 NOT NULL,
    priority INTEGER DEFAULT 0 NOT NULL,
    attrs VARCHAR(128) DEFAULT NULL,
    description VARCHAR(64) DEFAULT NULL
);
