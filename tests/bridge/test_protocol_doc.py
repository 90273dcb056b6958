"""docs/protocol.md is the truth: its version, message types and error codes must match the code
(and the C++ shim's SA3_PROTOCOL_VERSION once plugin_shim/include/sa3/protocol.h exists)."""

from __future__ import annotations

import re

from bridge import protocol as P
from tests.conftest import REPO

DOC = REPO / "docs" / "protocol.md"
SHIM_HEADER = REPO / "plugin_shim" / "include" / "sa3" / "protocol.h"


def _section(title_start: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(title_start)}.*?$(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"docs/protocol.md has no section '## {title_start}'"
    return match.group(1)


def _first_table(section: str) -> list[list[str]]:
    """Rows (lists of cells) of the section's first table, header and rule rows left out."""
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break  # the first table ended
    return rows[2:]


def _first_column(section: str) -> list[str]:
    return [re.fullmatch(r"`([a-z_]+)`", row[0]).group(1) for row in _first_table(section)]


def test_doc_version_equals_code_constant():
    versions = re.findall(r"\*\*Protocol version: (\d+\.\d+)\*\*", DOC.read_text())
    assert versions == [P.PROTOCOL_VERSION]
    assert re.fullmatch(r"\d+\.\d+", P.PROTOCOL_VERSION)
    # The doc tells the C++ engineer the exact define to write.
    assert f'#define SA3_PROTOCOL_VERSION "{P.PROTOCOL_VERSION}"' in DOC.read_text()


def test_cpp_shim_version_matches_when_present():
    if not SHIM_HEADER.exists():
        return  # the shim is built separately; this check starts biting as soon as its header lands
    match = re.search(r'#define\s+SA3_PROTOCOL_VERSION\s+"([^"]+)"', SHIM_HEADER.read_text())
    assert match, f"{SHIM_HEADER} has no SA3_PROTOCOL_VERSION string define"
    assert match.group(1) == P.PROTOCOL_VERSION


def test_every_message_type_in_doc_is_in_code_and_back():
    documented = _first_column(_section("4. Message types"))
    assert documented == list(P.MESSAGE_TYPES), "message types differ between docs/protocol.md and bridge/protocol.py"
    directions = {"client → daemon": "client", "daemon → client": "daemon", "both": "both"}
    for name, direction, _ in _first_table(_section("4. Message types")):
        assert directions[direction] == P.MESSAGE_TYPES[name.strip("`")], name


def test_every_error_code_in_doc_is_in_code_and_back():
    documented = _first_column(_section("5. Error codes"))
    assert documented == list(P.ERROR_CODES)


def test_daemon_handles_exactly_the_request_types():
    source = (REPO / "bridge" / "daemon.py").read_text()
    handled = set(re.findall(r'"([a-z_]+)": self\._on_', source))
    assert handled == set(P.REQUEST_TYPES)
    assert set(P.REQUEST_TYPES) == {
        "hello",
        "generate",
        "inpaint",
        "continue",
        "transform",
        "cancel",
        "fetch",
        "status",
        "heartbeat",
    }


def test_error_codes_raised_by_code_are_documented():
    """Every ProtocolError code literal in bridge/ appears in the doc's table."""
    documented = set(_first_column(_section("5. Error codes")))
    used = set()
    for path in (REPO / "bridge").glob("*.py"):
        used |= set(re.findall(r'ProtocolError\(\s*"([a-z_]+)"', path.read_text()))
        used |= set(re.findall(r'"code":\s*"([a-z_]+)"', path.read_text()))
        used |= set(re.findall(r'error = \("([a-z_]+)"', path.read_text()))
    assert used, "found no error codes in bridge/"
    assert used <= documented, used - documented


def test_liveness_numbers_and_daemon_id_in_doc_equal_the_code():
    """Section 4.9 states the heartbeat interval and the abandon timeout the code uses (protocol
    1.3), and section 3 the daemon_id's length."""
    liveness = _section("4. Message types")
    assert f"at least every **{P.HEARTBEAT_SECONDS:g} s**" in liveness
    assert f"for **{P.ABANDON_SECONDS:g} s** (`bridge.protocol.ABANDON_SECONDS`" in liveness
    assert f"**`daemon_id`** (string, {P.DAEMON_ID_HEX} lowercase hex" in _section("3. Frames")
    assert "`abandoned`, added in 1.3" in liveness
