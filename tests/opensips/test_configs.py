"""Checks that protect the OpenSIPS configs and the OpenSIPS dialog migration from risky edits.

OpenSIPS cannot run in this test suite (it is not in Debian's archive), so the configs are checked
statically: a small scanner drops comments, keeps strings apart from code, and the tests then look at
modules, module parameters, routes and control sockets. Every module and parameter name in
`KNOWN_MODULES` was checked against the OpenSIPS 3.5 module documentation; add one only after doing
the same, because OpenSIPS refuses to start on an unknown module or parameter and a telco engineer
should learn that here, not on the production box.

The dialog migration is applied for real, twice, to the PostgreSQL on 127.0.0.1:5432 inside a
throw-away schema, and fed the row OpenSIPS 3.5.9 itself wrote (capture 04b).
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.captures import event_datagrams, http_body, load_blocks

REPO_ROOT = Path(__file__).resolve().parents[2]
EDGE_CFG = REPO_ROOT / "opensips" / "edge.cfg"
AI_NODE_CFG = REPO_ROOT / "opensips" / "ai-node.cfg"
CLI_CFG = REPO_ROOT / "opensips" / "opensips-cli.cfg"
DIALOG_SQL = REPO_ROOT / "sql" / "0001_opensips_dialog.sql"

PG_DSN = os.environ.get("AVC_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")

# Module -> the parameters of it these configs may set, as documented for OpenSIPS 3.5.
KNOWN_MODULES: Mapping[str, frozenset[str]] = {
    "proto_udp": frozenset({"udp_port"}),
    "signaling": frozenset(),
    "sl": frozenset(),
    "tm": frozenset({"fr_timeout", "fr_inv_timeout", "restart_fr_on_each_reply", "onreply_avp_mode"}),
    "rr": frozenset({"append_fromtag", "enable_double_rr"}),
    "maxfwd": frozenset({"max_limit"}),
    "sipmsgops": frozenset(),
    "db_postgres": frozenset(),
    "dialog": frozenset(
        {
            "enable_stats",
            "hash_size",
            "rr_param",
            "default_timeout",
            "dlg_match_mode",
            "db_url",
            "db_mode",
            "db_update_period",
            "db_flush_vals_profiles",
            "options_ping_interval",
            "reinvite_ping_interval",
            "table_name",
        }
    ),
    "dispatcher": frozenset(
        {
            "db_url",
            "table_name",
            "partition",
            "ds_ping_method",
            "ds_ping_from",
            "ds_ping_interval",
            "ds_probing_mode",
            "ds_probing_sock",
            "ds_probing_list",
            "options_reply_codes",
        }
    ),
    "pike": frozenset(
        {"sampling_time_unit", "reqs_density_per_unit", "remove_latency", "check_route", "pike_log_level"}
    ),
    "ratelimit": frozenset({"timer_interval", "limit_per_interval", "expire_time", "hash_size", "default_algorithm"}),
    "b2b_entities": frozenset(
        {
            "server_hsize",
            "client_hsize",
            "db_url",
            "db_mode",
            "update_period",
            "b2b_key_prefix",
            "advertised_contact",
            "ua_default_timeout",
        }
    ),
    "event_datagram": frozenset(),
    "mi_datagram": frozenset({"socket_name", "children_count", "socket_timeout"}),
    "httpd": frozenset({"ip", "port", "buf_size", "post_buf_size"}),
    "mi_http": frozenset({"root", "trace_destination", "trace_bwlist"}),
}

# Script function that arms a route -> the kind of route it must name.
ARMING_FUNCTIONS: Mapping[str, str] = {
    "t_on_failure": "failure_route",
    "t_on_reply": "onreply_route",
    "t_on_branch": "branch_route",
}

LOOPBACK = "127.0.0.1"

_LOADMODULE = re.compile(r'\bloadmodule\s+"(?P<path>[^"]+)"')
_MODPARAM = re.compile(
    r'\bmodparam\(\s*"(?P<module>[^"]+)"\s*,\s*"(?P<param>[^"]+)"\s*,\s*(?P<value>"(?:[^"\\]|\\.)*"|[^\s)]+)\s*\)'
)
_ROUTE_DEF = re.compile(r"(?m)^[ \t]*(?P<kind>[a-z_]*route)\s*(?:\[\s*(?P<name>[^\],\s]+)[^\]]*\])?\s*\{")
_ROUTE_CALL = re.compile(r"(?<![\w$])route\(\s*(?P<name>\w+)\s*\)")
_ARMING_CALL = re.compile(r"\b(?P<func>t_on_failure|t_on_reply|t_on_branch)\(\s*\"(?P<name>[^\"]*)\"\s*\)")
_SUBSCRIBE_CALL = re.compile(r"\bsubscribe_event\(\s*\"[^\"]*\"\s*,\s*\"(?P<socket>[^\"]*)\"")


class CfgSyntaxError(ValueError):
    """The config cannot even be scanned (unterminated string or comment)."""


@dataclass(frozen=True, slots=True)
class ModParam:
    """One `modparam(module, name, value)` line; `value` has its quotes removed."""

    module: str
    name: str
    value: str
    line: int


@dataclass(frozen=True, slots=True)
class Cfg:
    """An OpenSIPS script after scanning.

    `code` is the text without comments; `skeleton` is `code` with the inside of every string blanked,
    so that syntax checks never look into strings. Both keep every offset and line of the original.
    """

    name: str
    code: str
    skeleton: str

    def line_of(self, offset: int) -> int:
        return self.code.count("\n", 0, offset) + 1

    @property
    def modules(self) -> list[str]:
        return [Path(match.group("path")).name.removesuffix(".so") for match in _iter_code(self, _LOADMODULE)]

    @property
    def modparams(self) -> list[ModParam]:
        params = []
        for match in _iter_code(self, _MODPARAM):
            value = match.group("value")
            if value.startswith('"'):
                value = value[1:-1]
            params.append(ModParam(match.group("module"), match.group("param"), value, self.line_of(match.start())))
        return params

    def param(self, module: str, name: str) -> str:
        values = [p.value for p in self.modparams if p.module == module and p.name == name]
        assert len(values) == 1, f"{self.name}: expected exactly one modparam({module!r}, {name!r}), got {values}"
        return values[0]

    def route_definitions(self) -> list[tuple[str, str | None, int]]:
        return [(m.group("kind"), m.group("name"), self.line_of(m.start())) for m in _ROUTE_DEF.finditer(self.skeleton)]

    def route_references(self) -> list[tuple[str, str, int]]:
        """(route kind, route name, line) for every route(...) call and every t_on_*("...") arming."""
        refs = [("route", m.group("name"), self.line_of(m.start())) for m in _ROUTE_CALL.finditer(self.skeleton)]
        refs += [
            (ARMING_FUNCTIONS[m.group("func")], m.group("name"), self.line_of(m.start()))
            for m in _iter_code(self, _ARMING_CALL)
        ]
        return refs

    def calls(self, function: str) -> list[int]:
        """Offsets of every call of `function` outside strings."""
        return [m.start() for m in re.finditer(rf"(?<![\w$]){re.escape(function)}\s*\(", self.skeleton)]


def _iter_code(cfg: Cfg, pattern: re.Pattern[str]) -> list[re.Match[str]]:
    """Matches of `pattern` that start outside a string.

    The patterns need string contents (module names, route names), so they run on `code`; a match
    counts only where the skeleton has the same character, i.e. where it does not start in a string.
    """
    return [match for match in pattern.finditer(cfg.code) if cfg.skeleton[match.start()] == cfg.code[match.start()]]


def scan(name: str, text: str) -> Cfg:
    """Drop `#` and `/* */` comments and blank string contents, keeping offsets and line numbers."""
    code: list[str] = []
    skeleton: list[str] = []
    i = 0
    quote = ""
    string_start = 0
    while i < len(text):
        ch = text[i]
        if quote:
            chunk = text[i : i + 2] if ch == "\\" else ch
            if ch == quote:
                quote = ""
                code.append(ch)
                skeleton.append(ch)
            else:
                code.append(chunk)
                skeleton.append(re.sub(r"[^\n]", " ", chunk))
            i += len(chunk)
        elif ch in "\"'":
            quote = ch
            string_start = i
            code.append(ch)
            skeleton.append(ch)
            i += 1
        elif ch == "#" or text.startswith("/*", i):
            end = text.find("\n", i) if ch == "#" else text.find("*/", i + 2)
            if end < 0 and ch != "#":
                raise CfgSyntaxError(f"{name}: unterminated /* comment at line {text.count(chr(10), 0, i) + 1}")
            end = len(text) if end < 0 else (end if ch == "#" else end + 2)
            blank = re.sub(r"[^\n]", " ", text[i:end])
            code.append(blank)
            skeleton.append(blank)
            i = end
        else:
            code.append(ch)
            skeleton.append(ch)
            i += 1
    if quote:
        raise CfgSyntaxError(f"{name}: unterminated string at line {text.count(chr(10), 0, string_start) + 1}")
    return Cfg(name, "".join(code), "".join(skeleton))


@cache
def load_cfg(path: Path) -> Cfg:
    return scan(path.name, path.read_text(encoding="utf-8"))


def balance_errors(cfg: Cfg) -> list[str]:
    """Unbalanced (), [] or {} outside strings and comments, with the line where it shows."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[tuple[str, int]] = []
    errors = []
    for offset, ch in enumerate(cfg.skeleton):
        if ch in "([{":
            stack.append((ch, offset))
        elif ch in pairs:
            if not stack or stack[-1][0] != pairs[ch]:
                errors.append(f"{cfg.name}:{cfg.line_of(offset)}: unexpected {ch!r}")
            else:
                stack.pop()
    errors += [f"{cfg.name}:{cfg.line_of(offset)}: {ch!r} never closed" for ch, offset in stack]
    return errors


def route_errors(cfg: Cfg) -> list[str]:
    """Routes referenced but not defined, and routes defined twice."""
    defined: dict[tuple[str, str | None], int] = {}
    errors = []
    for kind, name, line in cfg.route_definitions():
        if (kind, name) in defined:
            errors.append(f"{cfg.name}:{line}: {kind}[{name}] already defined at line {defined[(kind, name)]}")
        defined[(kind, name)] = line
    for kind, name, line in cfg.route_references():
        if (kind, name) not in defined:
            errors.append(f"{cfg.name}:{line}: {kind}[{name}] is referenced but never defined")
    return errors


BOTH_CFGS = pytest.mark.parametrize("path", [EDGE_CFG, AI_NODE_CFG], ids=["edge", "ai-node"])


# --- the scanner itself ---------------------------------------------------------------------------------


def test_scanner_ignores_routes_braces_and_modules_in_comments_and_strings() -> None:
    cfg = scan(
        "t.cfg",
        '# route(ghost) { loadmodule "x.so"\n'
        "/* failure_route[ghost] {\n } */\n"
        'loadmodule "tm.so"\n'
        'route { xlog("route(ghost) { #not a comment"); route(real); }\n'
        "route[real] { exit; }\n",
    )

    assert cfg.modules == ["tm"]
    assert balance_errors(cfg) == []
    assert route_errors(cfg) == []
    assert cfg.line_of(cfg.code.index("route[real]")) == 6


def test_route_check_reports_a_misspelled_failure_route_with_its_line() -> None:
    cfg = scan(
        "t.cfg",
        'route {\n\tt_on_failure("ai_node_failover");\n\tt_relay();\n}\nfailure_route[ai_node_failvoer] { exit; }\n',
    )

    assert route_errors(cfg) == ["t.cfg:2: failure_route[ai_node_failover] is referenced but never defined"]


def test_balance_check_reports_a_missing_closing_brace() -> None:
    cfg = scan("t.cfg", "route {\n\tif (has_totag()) {\n\t\texit;\n}\n")

    assert balance_errors(cfg) == ["t.cfg:1: '{' never closed"]


def test_scanner_rejects_an_unterminated_string_with_its_line() -> None:
    with pytest.raises(CfgSyntaxError, match="unterminated string at line 2"):
        scan("t.cfg", 'loadmodule "tm.so"\nmodparam("tm", "fr_timeout, 5)\n')


# --- both configs ---------------------------------------------------------------------------------------


@BOTH_CFGS
def test_every_loaded_module_is_a_known_opensips_35_module_loaded_once(path: Path) -> None:
    modules = load_cfg(path).modules

    assert modules, f"{path.name} loads no module"
    assert [m for m in modules if m not in KNOWN_MODULES] == []
    assert len(modules) == len(set(modules)), f"{path.name} loads a module twice: {modules}"


@BOTH_CFGS
def test_every_modparam_targets_a_loaded_module_and_a_documented_parameter(path: Path) -> None:
    cfg = load_cfg(path)
    loaded = set(cfg.modules)
    problems = []
    for p in cfg.modparams:
        for module in p.module.split("|"):
            if module not in loaded:
                problems.append(f"{cfg.name}:{p.line}: modparam for {module!r}, which is not loaded")
            elif p.name not in KNOWN_MODULES[module]:
                problems.append(f"{cfg.name}:{p.line}: {module!r} has no documented parameter {p.name!r}")

    assert cfg.modparams, f"{path.name} sets no module parameter"
    assert problems == []


@BOTH_CFGS
def test_modparams_come_after_the_loadmodule_of_their_module(path: Path) -> None:
    cfg = load_cfg(path)
    first_load = {m: cfg.line_of(cfg.code.index(f'"{m}.so"')) for m in cfg.modules}

    assert [p for p in cfg.modparams if p.line < first_load.get(p.module, 0)] == []


@BOTH_CFGS
def test_brackets_balance_outside_strings_and_comments(path: Path) -> None:
    assert balance_errors(load_cfg(path)) == []


@BOTH_CFGS
def test_every_referenced_route_exists_exactly_once(path: Path) -> None:
    cfg = load_cfg(path)

    assert ("route", None) in {(kind, name) for kind, name, _ in cfg.route_definitions()}, "no main route"
    assert route_errors(cfg) == []


@BOTH_CFGS
def test_control_sockets_listen_on_loopback_only(path: Path) -> None:
    cfg = load_cfg(path)
    modules = set(cfg.modules)

    if "mi_datagram" in modules:
        assert re.fullmatch(rf"udp:{re.escape(LOOPBACK)}:\d+", cfg.param("mi_datagram", "socket_name"))
    if "httpd" in modules:
        # httpd binds every interface when "ip" is left out, so it must be set explicitly.
        assert cfg.param("httpd", "ip") == LOOPBACK
    subscribed = [m.group("socket") for m in _iter_code(cfg, _SUBSCRIBE_CALL)]
    assert [s for s in subscribed if LOOPBACK not in s] == []
    assert {"mi_datagram", "httpd", "mi_http"} <= modules


# --- edge.cfg -------------------------------------------------------------------------------------------


def test_edge_persists_mi_pushed_dialog_vars_with_db_mode_2_and_flushed_vals() -> None:
    cfg = load_cfg(EDGE_CFG)

    # Capture 04c: only this combination wrote dlg_push_var values into dialog.vars.
    assert cfg.param("dialog", "db_mode") == "2"
    assert cfg.param("dialog", "db_flush_vals_profiles") == "1"
    assert 1 <= int(cfg.param("dialog", "db_update_period")) <= 5
    assert cfg.param("dialog", "db_url").startswith("postgres://")


def test_edge_creates_a_dialog_with_ai_state_before_relaying_a_new_call() -> None:
    cfg = load_cfg(EDGE_CFG)
    new_call = cfg.skeleton.index("route[new_call]")
    create = [o for o in cfg.calls("create_dialog") if o > new_call]
    relay = [o for o in cfg.calls("route") if o > new_call and cfg.code.startswith("route(relay)", o)]

    assert create and relay and create[0] < relay[0]
    assert re.search(r'\$dlg_val\(ai_state\)\s*=\s*"routing"', cfg.code)
    assert cfg.calls("record_route") and cfg.calls("loose_route")


def test_edge_probes_ai_nodes_and_fails_over_on_503_and_timeouts() -> None:
    cfg = load_cfg(EDGE_CFG)
    failover = cfg.skeleton.index("failure_route[ai_node_failover]")

    assert int(cfg.param("dispatcher", "ds_ping_interval")) > 0
    assert cfg.param("dispatcher", "ds_probing_mode") == "1"
    assert ("failure_route", "ai_node_failover") in {(kind, name) for kind, name, _ in cfg.route_references()}
    assert [o for o in cfg.calls("ds_next_dst") if o > failover]
    assert '"503"' in cfg.code[failover:] and '"408"' in cfg.code[failover:]


def test_edge_filters_floods_rates_and_scanners_before_routing() -> None:
    cfg = load_cfg(EDGE_CFG)
    first_route_call = min(o for o in cfg.calls("route") if cfg.line_of(o) > cfg.line_of(cfg.skeleton.index("route {")))

    for check in ("mf_process_maxfwd_header", "sipmsg_validate", "pike_check_req"):
        assert cfg.calls(check) and cfg.calls(check)[0] < first_route_call, check
    assert cfg.calls("rl_check")
    assert "friendly-scanner" in cfg.code and "sipvicious" in cfg.code


# --- ai-node.cfg ----------------------------------------------------------------------------------------


def test_ai_node_starts_ua_sessions_with_the_arhb_flags() -> None:
    cfg = load_cfg(AI_NODE_CFG)

    assert re.findall(r'ua_session_server_init\(\s*\$var\(key\)\s*,\s*"arhb"\s*\)', cfg.code) == [
        'ua_session_server_init($var(key), "arhb")'
    ]


def test_ai_node_flags_deliver_the_headers_and_body_avc_parses() -> None:
    # avc reads Call-ID/From/PAI from `headers` and the SDP offer from `body` of the NEW event (capture 02);
    # without the h and b flags OpenSIPS 3.5.9 leaves them out.
    new_event = json.loads(event_datagrams("02_call1_caller_hangs_up.txt")[0])["params"]
    flags = re.search(r'ua_session_server_init\([^,]+,\s*"(?P<flags>[^"]*)"', load_cfg(AI_NODE_CFG).code)

    assert new_event["event_type"] == "NEW"
    assert "Call-ID: " in new_event["headers"] and new_event["body"].startswith("v=0")
    assert flags is not None and {"h", "b"} <= set(flags.group("flags"))


def test_ai_node_admits_only_the_edge_before_creating_a_session() -> None:
    cfg = load_cfg(AI_NODE_CFG)
    edge_check = [o for o in cfg.calls("route") if cfg.code.startswith("route(from_edge)", o)]

    assert edge_check and edge_check[0] < cfg.calls("ua_session_server_init")[0]
    assert re.search(r'is_method\("OPTIONS"\)\)\s*\{\s*send_reply\(200,', cfg.code)
    assert re.search(r'send_reply\(405, "Method Not Allowed"\)', cfg.code)


def test_ai_node_mi_sockets_are_the_ones_the_captures_and_avc_use() -> None:
    cfg = load_cfg(AI_NODE_CFG)
    titles = {block.title for block in load_blocks("02_call1_caller_hangs_up.txt")}
    http_url = f"http://{cfg.param('httpd', 'ip')}:{cfg.param('httpd', 'port')}/{cfg.param('mi_http', 'root')}"

    assert f"MI over mi_datagram {cfg.param('mi_datagram', 'socket_name')} REQUEST (raw datagram)" in titles
    assert f"MI over mi_http {http_url} REQUEST" in titles


def test_ai_node_session_timeout_fires_before_the_edge_dialog_timeout() -> None:
    ua_timeout = int(load_cfg(AI_NODE_CFG).param("b2b_entities", "ua_default_timeout"))

    assert 0 < ua_timeout < int(load_cfg(EDGE_CFG).param("dialog", "default_timeout"))


def test_dialog_tracking_and_b2b_never_share_an_instance() -> None:
    # On one 3.5.9 instance create_dialog() + ua_session_server_init() crashed the server.
    edge, ai_node = set(load_cfg(EDGE_CFG).modules), set(load_cfg(AI_NODE_CFG).modules)

    assert "dialog" in edge and "b2b_entities" not in edge
    assert "b2b_entities" in ai_node and "event_datagram" in ai_node and "dialog" not in ai_node
    assert not load_cfg(AI_NODE_CFG).calls("create_dialog")


def test_edge_and_ai_node_control_ports_do_not_collide_on_one_host() -> None:
    def ports(cfg: Cfg) -> set[str]:
        return {cfg.param("mi_datagram", "socket_name").rsplit(":", 1)[1], cfg.param("httpd", "port")}

    assert ports(load_cfg(EDGE_CFG)).isdisjoint(ports(load_cfg(AI_NODE_CFG)))


# --- opensips-cli.cfg -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "path"), [("edge", EDGE_CFG), ("ai-node", AI_NODE_CFG)])
def test_opensips_cli_sections_reach_each_instances_mi(section: str, path: Path) -> None:
    cli = configparser.ConfigParser()
    cli.read(CLI_CFG, encoding="utf-8")
    cfg = load_cfg(path)
    http = cli[f"{section}-http"]

    assert cli[section]["communication_type"] == "datagram"
    assert f"udp:{cli[section]['datagram_ip']}:{cli[section]['datagram_port']}" == cfg.param(
        "mi_datagram", "socket_name"
    )
    assert http["communication_type"] == "http"
    assert http["url"] == f"http://{LOOPBACK}:{cfg.param('httpd', 'port')}/{cfg.param('mi_http', 'root')}"


def test_opensips_cli_default_section_is_the_edge() -> None:
    cli = configparser.ConfigParser()
    cli.read(CLI_CFG, encoding="utf-8")

    assert cli["default"]["datagram_port"] == cli["edge"]["datagram_port"]
    assert {cli[s].get("datagram_ip", LOOPBACK) for s in cli.sections()} == {LOOPBACK}


# --- sql/0001_opensips_dialog.sql -----------------------------------------------------------------------

# (column, data_type, character_maximum_length, is_nullable) of OpenSIPS 3.5's dialog table, version 12.
EXPECTED_DIALOG_COLUMNS: list[tuple[str, str, int | None, str]] = [
    ("dlg_id", "bigint", None, "NO"),
    ("callid", "character varying", 255, "NO"),
    ("from_uri", "character varying", 255, "NO"),
    ("from_tag", "character varying", 64, "NO"),
    ("to_uri", "character varying", 255, "NO"),
    ("to_tag", "character varying", 64, "NO"),
    ("mangled_from_uri", "character varying", 255, "YES"),
    ("mangled_to_uri", "character varying", 255, "YES"),
    ("caller_cseq", "character varying", 11, "NO"),
    ("callee_cseq", "character varying", 11, "NO"),
    ("caller_ping_cseq", "integer", None, "NO"),
    ("callee_ping_cseq", "integer", None, "NO"),
    ("caller_route_set", "text", None, "YES"),
    ("callee_route_set", "text", None, "YES"),
    ("caller_contact", "character varying", 255, "YES"),
    ("callee_contact", "character varying", 255, "YES"),
    ("caller_sock", "character varying", 64, "NO"),
    ("callee_sock", "character varying", 64, "NO"),
    ("state", "integer", None, "NO"),
    ("start_time", "integer", None, "NO"),
    ("timeout", "integer", None, "NO"),
    ("vars", "bytea", None, "YES"),
    ("profiles", "text", None, "YES"),
    ("script_flags", "character varying", 255, "YES"),
    ("module_flags", "integer", None, "NO"),
    ("flags", "integer", None, "NO"),
    ("rt_on_answer", "character varying", 64, "YES"),
    ("rt_on_timeout", "character varying", 64, "YES"),
    ("rt_on_hangup", "character varying", 64, "YES"),
]


def psql_table(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first table in psql's aligned output."""
    lines = text.splitlines()
    header_at = next(i for i, line in enumerate(lines) if "|" in line)
    header = [cell.strip() for cell in lines[header_at].split("|")]
    rows = []
    for line in lines[header_at + 2 :]:
        if not line.startswith(" ") or "|" not in line:
            break
        # Only the last column may hold "|" (dialog.vars uses it as a separator).
        rows.append([cell.strip() for cell in line.split("|", len(header) - 1)])
    return header, rows


def capture_psql(capture: str, title_prefix: str) -> tuple[list[str], list[list[str]]]:
    block = next(b for b in load_blocks(capture) if b.title.startswith(title_prefix))
    return psql_table(block.payload.decode("utf-8"))


def test_every_dialog_column_opensips_359_wrote_exists_in_the_migration() -> None:
    sql = DIALOG_SQL.read_text(encoding="utf-8")
    body = sql[sql.index("CREATE TABLE IF NOT EXISTS dialog") :]
    migrated = set(re.findall(r"(?m)^\s{4}(\w+)\s", body))
    seen = set()
    for capture in (
        "04a_dialog_dbmode1_NO_flush_vals.txt",
        "04b_dialog_dbmode1_with_flush_vals.txt",
        "04c_dialog_dbmode2_delayed_with_flush_vals.txt",
    ):
        seen |= set(capture_psql(capture, "psql: dialog row BEFORE")[0])

    assert {"dlg_id", "vars", "profiles", "module_flags"} <= seen
    assert seen - migrated == set()
    assert migrated == {name for name, *_ in EXPECTED_DIALOG_COLUMNS}


async def _connect() -> Any:
    try:
        return await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_DSN} ({exc!r}). Start the local PostgreSQL server "
            "(e.g. `pg_ctlcluster <version> main start`, or the postgres service of deploy/docker-compose) "
            "with trust auth for user postgres and a database named `test`, or point AVC_TEST_PG_DSN at one.",
            pytrace=False,
        )


@pytest.fixture
async def schema_conn() -> AsyncIterator[Any]:
    """A connection whose search_path is a fresh schema, dropped afterwards."""
    conn = await _connect()
    schema = f"opensips_migration_{uuid.uuid4().hex[:12]}"
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}"')
        yield conn
    finally:
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def _apply_dialog_migration(conn: Any) -> None:
    await conn.execute(DIALOG_SQL.read_text(encoding="utf-8"))


async def test_dialog_migration_applies_twice_and_creates_the_opensips_35_tables(schema_conn: Any) -> None:
    await _apply_dialog_migration(schema_conn)
    await _apply_dialog_migration(schema_conn)

    columns = await schema_conn.fetch(
        "SELECT column_name, data_type, character_maximum_length, is_nullable FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'dialog' ORDER BY ordinal_position"
    )
    versions = await schema_conn.fetch("SELECT table_name, table_version FROM version")

    assert [tuple(row) for row in columns] == EXPECTED_DIALOG_COLUMNS
    assert [tuple(row) for row in versions] == [("dialog", 12)]


async def test_dialog_migration_leaves_an_existing_version_row_alone(schema_conn: Any) -> None:
    await schema_conn.execute(
        "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL, "
        "CONSTRAINT version_t_name_idx UNIQUE (table_name)); INSERT INTO version VALUES ('dialog', 11)"
    )

    await _apply_dialog_migration(schema_conn)

    # OpenSIPS then refuses to start on the version mismatch instead of using a table it does not know.
    assert await schema_conn.fetchval("SELECT table_version FROM version WHERE table_name = 'dialog'") == 11


async def test_dialog_table_stores_the_row_and_vars_opensips_359_wrote(schema_conn: Any) -> None:
    await _apply_dialog_migration(schema_conn)
    header, rows = capture_psql("04b_dialog_dbmode1_with_flush_vals.txt", "psql: dialog row BEFORE")
    vars_header, vars_rows = capture_psql("04c_dialog_dbmode2_delayed_with_flush_vals.txt", "psql: dialog row 1 s")
    dlg_list = next(
        b.payload
        for b in load_blocks("04b_dialog_dbmode1_with_flush_vals.txt")
        if b.title == "MI over mi_http RESPONSE"
    )
    dialogs = json.loads(http_body(dlg_list))["result"]["Dialogs"][0]
    types = dict(
        await schema_conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'dialog'"
        )
    )
    row: dict[str, object] = {
        name: (int(cell) if types[name] in ("bigint", "integer") else (cell or None))
        for name, cell in zip(header, rows[0], strict=True)
    }
    row |= {
        "from_uri": dialogs["from_uri"],
        "to_uri": dialogs["to_uri"],
        "caller_ping_cseq": 0,
        "callee_ping_cseq": 0,
        "vars": dict(zip(vars_header, vars_rows[0], strict=True))["vars_raw"].encode(),
    }
    columns = ", ".join(f'"{name}"' for name in row)
    placeholders = ", ".join(f"${i}" for i in range(1, len(row) + 1))

    await schema_conn.execute(f"INSERT INTO dialog ({columns}) VALUES ({placeholders})", *row.values())
    stored = await schema_conn.fetchrow("SELECT dlg_id, callid, state, vars FROM dialog")

    # dlg_id 1814005054204 does not fit a 32-bit integer: the column must be BIGINT.
    assert stored["dlg_id"] == int(dialogs["db_id"]) == 1814005054204
    assert stored["callid"] == dialogs["callid"]
    assert stored["state"] == 4
    assert bytes(stored["vars"]).endswith(b"ai_state#1#greeting_played|created_by#1#opensips.cfg|")


def test_postgres_failure_message_names_what_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 1: the migration tests must fail loudly, never skip.
    monkeypatch.setattr(sys.modules[__name__], "PG_DSN", "postgresql://postgres@127.0.0.1:1/test")

    with pytest.raises(pytest.fail.Exception, match="Start the local PostgreSQL server"):
        asyncio.run(_connect())
