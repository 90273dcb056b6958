"""Reading prompt sheets (YAML, CSV) into raw job values that remember their sheet lines.

YAML is composed node by node (``yaml.compose``) so every key and list item keeps the line it
was written on; values are loaded with ``yaml.safe_load``. CSV rows carry their row's line.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TOP_LEVEL_KEYS = ("jobs", "defaults")
RAW_TEXT_FIELDS = ("regions",)  # read as typed: YAML would turn 2:30 into the number 150


@dataclass
class RawJob:
    """One job's values (defaults merged in) and where in the sheet each came from."""

    index: int  # 0-based position in the sheet's job list
    values: dict[str, Any]
    line: int
    origin: dict[str, tuple]  # field -> path of the mapping it came from (the job or defaults)
    lines: dict[tuple, int]  # path -> line, for the whole sheet
    raw: dict[tuple, str]  # path -> scalar text as written

    def line_of(self, name: str, *sub: Any) -> int:
        path = (*self.origin.get(name, ()), name, *sub)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.line


def _walk(node: yaml.Node, prefix: tuple, lines: dict, raw: dict) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, key.value)
            lines[path] = key.start_mark.line + 1
            _walk(value, path, lines, raw)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*prefix, i)] = item.start_mark.line + 1
            _walk(item, (*prefix, i), lines, raw)
    else:
        raw[prefix] = node.value


def _read_yaml(path: Path, issues: list[str], text_fields: set[str]) -> list[RawJob]:
    text = path.read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        issues.append(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML: {getattr(err, 'problem', err)}")
        return []
    if not isinstance(data, dict) or root is None:
        issues.append(f"{path}:1: a sheet is a mapping with a 'jobs:' list (and optionally 'defaults:')")
        return []
    lines: dict[tuple, int] = {}
    raw: dict[tuple, str] = {}
    _walk(root, (), lines, raw)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            issues.append(
                f"{path}:{lines.get((key,), 1)}: unknown top-level key {key!r}{hint(str(key), TOP_LEVEL_KEYS)}"
            )
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        issues.append(f"{path}:{lines.get(('defaults',), 1)}: defaults: must be a mapping of job keys to values")
        defaults = {}
    jobs = data.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        issues.append(f"{path}:{lines.get(('jobs',), 1)}: jobs: the sheet needs a non-empty 'jobs:' list")
        return []
    out = []
    for i, job in enumerate(jobs):
        line = lines.get(("jobs", i), 1)
        if not isinstance(job, dict):
            issues.append(f"{path}:{line}: job {i + 1}: must be a mapping of keys (prompt, seconds, ...), got {job!r}")
            continue
        # Keys as text: YAML allows `1: x`, and messages and lookups work on names.
        defaults_here = {str(k): v for k, v in defaults.items()}
        job = {str(k): v for k, v in job.items()}
        origin = {k: ("defaults",) for k in defaults_here} | {k: ("jobs", i) for k in job}
        values = {**defaults_here, **job}
        for name in RAW_TEXT_FIELDS:
            if isinstance(values.get(name), list):
                values[name] = [raw.get((*origin[name], name, j), item) for j, item in enumerate(values[name])]
        out.append(RawJob(i, values, line, origin, lines, raw))
    return out


def _read_csv(path: Path, issues: list[str], text_fields: set[str]) -> list[RawJob]:
    out = []
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets often write a BOM
        reader = csv.DictReader(f)
        for row in reader:
            line = reader.line_num
            values: dict[str, Any] = {}
            for key, cell in row.items():
                if key is None:
                    issues.append(f"{path}:{line}: row has more cells than the header has columns")
                    continue
                key = key.strip()
                if cell is None or not cell.strip():
                    continue
                cell = cell.strip()
                if key in text_fields:
                    values[key] = cell
                elif key == "regions":
                    values[key] = [part.strip() for part in cell.split(";") if part.strip()]
                else:
                    try:
                        values[key] = yaml.safe_load(cell)  # numbers, true/false, inline [lists] and {maps}
                    except yaml.YAMLError:
                        issues.append(f"{path}:{line}: {key}: cannot read {cell!r}")
            out.append(RawJob(len(out), values, line, {}, {}, {}))
    if not out and not issues:
        issues.append(f"{path}:1: the CSV sheet has a header but no job rows")
    return out


# Each reader: (path, issues, text_fields) -> raw jobs; problems are appended to ``issues``.
READERS = {".yaml": _read_yaml, ".yml": _read_yaml, ".csv": _read_csv}


def close_match(word: str, choices) -> str:
    """``; did you mean 'x'?`` for the closest choice, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def hint(word: str, choices) -> str:
    """Like :func:`close_match`, but lists the choices when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(choices))}"
