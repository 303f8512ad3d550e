-- 0005: the OpenSIPS 3.5 "address" table of the permissions module, where telco
-- engineers list the carriers and SBCs the edge proxy (opensips/edge.cfg) trusts.
--
-- Column for column the table of OpenSIPS 3.5's scripts/postgres/permissions-create.sql
-- (address table version 5), plus its row in the "version" table that OpenSIPS
-- checks at start-up. Idempotent like 0001:
--   * CREATE TABLE IF NOT EXISTS for both tables ("version" may come from 0001);
--   * the version row is inserted ON CONFLICT DO NOTHING: an existing row with
--     another number is left alone, and OpenSIPS then refuses to start on the
--     mismatch instead of reading a table it does not know.
--
-- What edge.cfg reads (check_source_address(1, $avp(trunk))):
--   grp           1 = trusted carrier/SBC; other groups are unused today
--   ip, mask      one address (mask 32) or a subnet (e.g. 28)
--   port          0 = any source port (SMALLINT upstream: ports above 32767 need 0)
--   proto         'any', 'udp', 'tcp', 'tls' or 'sctp'
--   pattern       NULL (not used by edge.cfg)
--   context_info  "trunk=<name>;cps=<new calls per second>", at most 32 characters
--
-- Rows are site data, added by hand; the new row counts once the edge has run
-- `opensips-cli -x mi address_reload` (opensips/README.md, "Trusted carriers").
-- For example (192.0.2.0/24 is a documentation range, never a real carrier):
--   INSERT INTO address (grp, ip, mask, port, proto, context_info)
--   SELECT 1, '192.0.2.10', 32, 0, 'any', 'trunk=carrier-a;cps=10'
--   WHERE NOT EXISTS (SELECT 1 FROM address WHERE grp = 1 AND ip = '192.0.2.10');
--
-- Apply with: psql -v ON_ERROR_STOP=1 -d opensips -f sql/0005_opensips_permissions.sql

CREATE TABLE IF NOT EXISTS version (
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_t_name_idx UNIQUE (table_name)
);

INSERT INTO version (table_name, table_version) VALUES ('address', '5')
    ON CONFLICT (table_name) DO NOTHING;

CREATE TABLE IF NOT EXISTS address (
    id SERIAL PRIMARY KEY NOT NULL,
    grp SMALLINT DEFAULT 0 NOT NULL,
    ip VARCHAR(50) NOT NULL,
    mask SMALLINT DEFAULT 32 NOT NULL,
    port SMALLINT DEFAULT 0 NOT NULL,
    proto VARCHAR(4) DEFAULT 'any' NOT NULL,
    pattern VARCHAR(64) DEFAULT NULL,
    context_info VARCHAR(32) DEFAULT NULL
);
