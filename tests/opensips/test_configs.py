"""Checks that protect the OpenSIPS configs and the OpenSIPS dialog migration from risky edits.

OpenSIPS cannot run in this test suite (it is not in Debian's archive), so the configs are checked
statically: a small scanner drops comments, keeps strings apart from code, and the tests then look at
modules, module parameters, routes and control sockets. Every module and parameter name in
`KNOWN_MODULES` was checked against the OpenSIPS 3.5 module documentation; add one only after doing
the same, because OpenSIPS refuses to start on an unknown module or parameter and a telco engineer
should learn that here, not on the production box.

The dialog and permissions migrations are applied for real, twice, to the PostgreSQL on 127.0.0.1:5432
inside a throw-away schema; the dialog table is fed the row OpenSIPS 3.5.9 itself wrote (capture 04b), the
address table the example row its migration documents.
"""

from __future__ import annotations

import asyncio
import configparser
import inspect
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

from avc.connector import LIVENESS_KEY
from avc.opensips.mi import OpenSIPSMI
from tests.support.captures import event_datagrams, http_body, load_blocks

REPO_ROOT = Path(__file__).resolve().parents[2]
EDGE_CFG = REPO_ROOT / "opensips" / "edge.cfg"
AI_NODE_CFG = REPO_ROOT / "opensips" / "ai-node.cfg"
CLI_CFG = REPO_ROOT / "opensips" / "opensips-cli.cfg"
DIALOG_SQL = REPO_ROOT / "sql" / "0001_opensips_dialog.sql"
PERMISSIONS_SQL = REPO_ROOT / "sql" / "0005_opensips_permissions.sql"

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
    "permissions": frozenset(
        {
            "db_url",
            "address_table",
            "partition",
            "grp_col",
            "ip_col",
            "mask_col",
            "port_col",
            "proto_col",
            "pattern_col",
            "info_col",
        }
    ),
    "cachedb_local": frozenset(
        {"cachedb_url", "cache_collections", "cache_clean_period", "cluster_id", "cluster_persistency"}
    ),
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

    def block_after(self, offset: int) -> tuple[int, int]:
        """(start, end) offsets of the `{ ... }` block that opens first at or after `offset`, braces included."""
        start = self.skeleton.index("{", offset)
        depth = 0
        for end in range(start, len(self.skeleton)):
            depth += {"{": 1, "}": -1}.get(self.skeleton[end], 0)
            if depth == 0:
                return start, end + 1
        raise CfgSyntaxError(f"{self.name}:{self.line_of(start)}: block never closed")

    def route_block(self, kind: str, name: str | None = None) -> tuple[int, int]:
        """(start, end) offsets of the body of `kind[name]` (`route` without a name: the main route)."""
        for match in _ROUTE_DEF.finditer(self.skeleton):
            if (match.group("kind"), match.group("name")) == (kind, name):
                return self.block_after(match.start())
        raise AssertionError(f"{self.name}: no {kind}[{name}]")

    def calls_in(self, function: str, block: tuple[int, int]) -> list[int]:
        return [o for o in self.calls(function) if block[0] < o < block[1]]

    def route_calls(self, name: str) -> list[int]:
        """Offsets of every `route(name)` call."""
        return [m.start() for m in _ROUTE_CALL.finditer(self.skeleton) if m.group("name") == name]


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
    main = cfg.route_block("route")
    [trusted] = cfg.route_calls("trusted")
    first_routing_call = min(o for o in cfg.calls("route") if main[0] < o < main[1] and o != trusted)

    for check in ("mf_process_maxfwd_header", "sipmsg_validate", "pike_check_req"):
        assert cfg.calls(check) and main[0] < cfg.calls(check)[0] < first_routing_call, check
    assert cfg.calls("rl_check")
    assert "friendly-scanner" in cfg.code and "sipvicious" in cfg.code


def test_edge_checks_trust_first_and_keeps_pike_and_the_scanner_filter_for_untrusted_sources() -> None:
    # Capture facts 2026-12-02: pike (30 requests / 2 s) blocked a carrier sending 10 calls/s after ~20 calls.
    cfg = load_cfg(EDGE_CFG)
    main = cfg.route_block("route")
    untrusted_if = re.search(r"if\s*\(\s*!route\(trusted\)\s*\)\s*\{", cfg.code)
    assert untrusted_if is not None
    untrusted = cfg.block_after(untrusted_if.start())

    assert untrusted[0] == untrusted_if.end() - 1
    assert main[0] < untrusted_if.start() < cfg.calls("mf_process_maxfwd_header")[0]
    assert cfg.calls("pike_check_req") == cfg.calls_in("pike_check_req", untrusted) != []
    assert untrusted[0] < cfg.code.index("friendly-scanner") < untrusted[1]


def test_edge_trusts_address_group_1_as_trunks_and_the_dispatcher_set_as_ai_nodes() -> None:
    cfg = load_cfg(EDGE_CFG)
    trusted = cfg.route_block("route", "trusted")
    body = cfg.code[trusted[0] : trusted[1]]

    assert re.search(r"check_source_address\(\s*1\s*,\s*\$avp\(trunk\)\s*\)\)\s*\{\s*setflag\(TRUNK\);", body)
    assert re.search(r"ds_is_in_list\(\s*\$si\s*,\s*\$sp\s*,\s*1\s*\)", body)
    assert cfg.calls("check_source_address") == cfg.calls_in("check_source_address", trusted)
    # The address table is read from the same PostgreSQL as the dialogs, through the module's default columns.
    assert cfg.param("permissions", "db_url") == cfg.param("dialog", "db_url")
    assert [p for p in cfg.modparams if p.module == "permissions" and p.name.endswith(("_col", "_table"))] == []


def test_edge_rate_limits_trusted_trunks_only_on_initial_invites() -> None:
    cfg = load_cfg(EDGE_CFG)
    main = cfg.route_block("route")
    new_call = cfg.route_block("route", "new_call")
    trunk_rate = cfg.route_block("route", "trunk_rate")
    [to_new_call] = cfg.route_calls("new_call")
    [to_trunk_rate] = cfg.route_calls("trunk_rate")
    before_new_call = cfg.code[main[0] : to_new_call]

    # route[new_call] is reached from the main route only, after in-dialog requests, CANCEL,
    # retransmissions and every method but INVITE have left it.
    assert main[0] < to_new_call < main[1]
    for gate in ("has_totag()", 'is_method("CANCEL")', "t_check_trans()", '!is_method("INVITE")'):
        assert gate in before_new_call, gate
    # ... and only the TRUNK flag of route[trusted] leads into the trunk's pipe, before any AI node is picked.
    assert new_call[0] < to_trunk_rate < cfg.calls_in("ds_select_dst", new_call)[0]
    assert re.search(r"if\s*\(\s*isflagset\(TRUNK\)\s*\)\s*route\(trunk_rate\)", cfg.code[new_call[0] : new_call[1]])
    [trunk_check] = [o for o in cfg.calls("rl_check") if cfg.code.startswith('rl_check("trunk_', o)]
    assert trunk_rate[0] < trunk_check < trunk_rate[1]
    assert re.search(r"\{param\.value,cps\}", cfg.code[trunk_rate[0] : trunk_rate[1]])


def test_edge_answers_calls_over_a_rate_with_503_and_retry_after() -> None:
    cfg = load_cfg(EDGE_CFG)
    refusals = re.findall(
        r'if\s*\(!rl_check\("(?P<pipe>\w+)[^"]*"[^{]*\{[^}]*?append_to_reply\("Retry-After: (?P<secs>\d+)\\r\\n"\);'
        r'\s*(?P<reply>sl_send_reply|send_reply)\(503, "Service Unavailable"\);\s*exit;',
        cfg.code,
    )

    assert sorted(pipe for pipe, _, _ in refusals) == ["new_calls", "trunk_"]
    assert all(int(secs) > 0 for _, secs, _ in refusals)
    # The trunk refusal is stateless: no transaction is kept for a call we turn away.
    assert [reply for pipe, _, reply in refusals if pipe == "trunk_"] == ["sl_send_reply"]


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
    assert edge_check[0] < cfg.code.index('is_method("OPTIONS")')
    assert re.search(r'send_reply\(405, "Method Not Allowed"\)', cfg.code)


_LIVENESS_FETCH = re.compile(r'if\s*\(!cache_fetch\("local", "avc_alive", \$var\(alive\)\)\)\s*\{')


def test_ai_node_answers_the_edges_probe_with_503_while_the_liveness_key_is_missing() -> None:
    cfg = load_cfg(AI_NODE_CFG)
    options = cfg.block_after(cfg.code.index('is_method("OPTIONS")'))
    body = cfg.code[options[0] : options[1]]
    missing = _LIVENESS_FETCH.search(body)

    assert missing is not None
    refusal = body[missing.end() : body.index("}", missing.end())]
    assert re.fullmatch(r'\s*send_reply\(503, "Service Unavailable"\);\s*exit;\s*', refusal)
    assert body.index('send_reply(200, "OK")') > missing.end()


def test_ai_node_refuses_new_invites_without_the_liveness_key_before_creating_a_session() -> None:
    # A session the app rejected is still listed 45 s later (capture 14): refuse before one exists.
    cfg = load_cfg(AI_NODE_CFG)
    main = cfg.route_block("route")
    [init] = cfg.calls("ua_session_server_init")
    invite_only = cfg.code.index('!is_method("INVITE")')
    invite_checks = [m for m in _LIVENESS_FETCH.finditer(cfg.code) if m.start() > invite_only]

    assert len(invite_checks) == 1
    check = invite_checks[0]
    refusal = cfg.code[check.end() : cfg.block_after(check.start())[1]]
    assert main[0] < cfg.calls_in("t_check_trans", main)[0] < check.start() < init
    assert re.search(
        r'append_to_reply\("Retry-After: \d+\\r\\n"\);\s*send_reply\(503, "Service Unavailable"\);\s*exit;', refusal
    )


def test_ai_node_liveness_key_is_the_one_avc_stores_over_mi() -> None:
    cfg = load_cfg(AI_NODE_CFG)
    fetched = set(re.findall(r'cache_fetch\("([^"]+)", "([^"]+)"', cfg.code))
    system = inspect.signature(OpenSIPSMI.cache_store).parameters["system"].default

    assert fetched == {(system, LIVENESS_KEY)} == {("local", "avc_alive")}
    # MI "system" / script storage id = URL scheme[:group]; the URL names the collection. A URL without a
    # group is the one "local" reaches, and its collection must be declared.
    url = re.fullmatch(r"local:///(?P<collection>\w+)", cfg.param("cachedb_local", "cachedb_url"))
    assert url is not None
    declared = {c.split("=")[0].strip() for c in cfg.param("cachedb_local", "cache_collections").split(";")}
    assert url["collection"] in declared


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


# --- sql/0005_opensips_permissions.sql ------------------------------------------------------------------

# (column, data_type, character_maximum_length, is_nullable) of OpenSIPS 3.5's address table, version 5
# (scripts/postgres/permissions-create.sql). grp, ip, mask, port, proto, pattern and context_info are the
# permissions module's default *_col names, which edge.cfg leaves alone.
EXPECTED_ADDRESS_COLUMNS: list[tuple[str, str, int | None, str]] = [
    ("id", "integer", None, "NO"),
    ("grp", "smallint", None, "NO"),
    ("ip", "character varying", 50, "NO"),
    ("mask", "smallint", None, "NO"),
    ("port", "smallint", None, "NO"),
    ("proto", "character varying", 4, "NO"),
    ("pattern", "character varying", 64, "YES"),
    ("context_info", "character varying", 32, "YES"),
]


def documented_address_row() -> str:
    """The example INSERT in the migration's header comment, without its comment markers."""
    lines = PERMISSIONS_SQL.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("--   INSERT INTO address"))
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith(";"))
    return "\n".join(line.removeprefix("--") for line in lines[start : end + 1])


async def _address_columns(conn: Any) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT column_name, data_type, character_maximum_length, is_nullable FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'address' ORDER BY ordinal_position"
    )
    return [tuple(row) for row in rows]


async def test_permissions_migration_applies_twice_and_creates_the_opensips_35_address_table(
    schema_conn: Any,
) -> None:
    for _ in range(2):
        await schema_conn.execute(PERMISSIONS_SQL.read_text(encoding="utf-8"))

    versions = await schema_conn.fetch("SELECT table_name, table_version FROM version")

    assert await _address_columns(schema_conn) == EXPECTED_ADDRESS_COLUMNS
    assert [tuple(row) for row in versions] == [("address", 5)]


async def test_permissions_migration_follows_the_dialog_one_and_keeps_its_version_row(schema_conn: Any) -> None:
    await _apply_dialog_migration(schema_conn)
    await schema_conn.execute("UPDATE version SET table_version = 4 WHERE table_name = 'dialog'")
    await schema_conn.execute("INSERT INTO version VALUES ('address', 4)")

    await schema_conn.execute(PERMISSIONS_SQL.read_text(encoding="utf-8"))

    # An older address table is not silently relabelled: OpenSIPS refuses to start on the mismatch.
    versions = dict(await schema_conn.fetch("SELECT table_name, table_version FROM version"))
    assert versions == {"dialog": 4, "address": 4}


async def test_documented_trunk_row_inserts_once_and_carries_what_edge_cfg_reads(schema_conn: Any) -> None:
    await schema_conn.execute(PERMISSIONS_SQL.read_text(encoding="utf-8"))
    for _ in range(2):
        await schema_conn.execute(documented_address_row())

    rows = await schema_conn.fetch("SELECT grp, ip, mask, port, proto, context_info FROM address")
    assert len(rows) == 1
    row = rows[0]
    assert (row["grp"], row["mask"], row["port"], row["proto"]) == (1, 32, 0, "any")
    assert row["ip"].startswith("192.0.2.")  # documentation range (RFC 5737), never a real carrier
    context = dict(item.split("=", 1) for item in row["context_info"].split(";"))
    read_by_edge = set(re.findall(r"\{param\.value,(\w+)\}", load_cfg(EDGE_CFG).code))
    assert read_by_edge == set(context) == {"trunk", "cps"}
    assert context["trunk"] and int(context["cps"]) > 0


def test_postgres_failure_message_names_what_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 1: the migration tests must fail loudly, never skip.
    monkeypatch.setattr(sys.modules[__name__], "PG_DSN", "postgresql://postgres@127.0.0.1:1/test")

    with pytest.raises(pytest.fail.Exception, match="Start the local PostgreSQL server"):
        asyncio.run(_connect())
