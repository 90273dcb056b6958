"""One set of request limits for the CLI, render sheets and the daemon (issue 26 item 12):
what one refuses the others refuse, with the same range in the message, before any model loads."""

from __future__ import annotations

import textwrap

import pytest
import soundfile as sf

from bridge import protocol as P
from sa3core import limits
from tests.conftest import run_sa3

# (flag, value, sheet/daemon field): each just outside its range.
OUT_OF_RANGE = [
    ("--seed", "-5", "seed"),
    ("--seed", str(limits.MAX_SEED + 1), "seed"),
    ("--variations", str(limits.MAX_VARIATIONS + 1), "variations"),
    ("--variations", "0", "variations"),
    ("--steps", str(limits.MAX_STEPS + 100), "steps"),
    ("--cfg", "25", "cfg"),
]


def daemon_error(field: str, value: str) -> str:
    """The daemon's message for a generate request with ``field`` = ``value`` (bad_field, or '')."""
    number = float(value) if field == "cfg" else int(value)
    try:
        P.parse_job({"type": "generate", "prompt": "x", "seconds": 1.0, field: number}, [], P.Limits())
    except P.ProtocolError as err:
        assert err.code == "bad_field"
        return err.message
    return ""


@pytest.mark.parametrize(("flag", "value", "field"), OUT_OF_RANGE)
def test_cli_refuses_what_the_daemon_refuses(flag, value, field, tmp_path):
    """On the shipped model: -5 is no longer seed 4294967291, 9 takes and 200 steps no longer pass."""
    out = tmp_path / "take.wav"
    result = run_sa3("generate", "kick", "--seconds", "0.1", "--steps", "1", flag, value, "-o", out, "--quiet")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sa3: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    message = daemon_error(field, value)
    assert message, f"the daemon takes {field}={value}"
    # The same words after the field's name: "<name> is -5; use 0 to 4294967295".
    assert lines[0] == f"sa3: error: {flag}{message.split(repr(field), 1)[1]}"
    assert not out.exists() and not list(tmp_path.iterdir())


def test_the_daemon_announces_the_shared_limits():
    announced = P.Limits()
    assert (announced.max_variations, announced.max_steps) == (limits.MAX_VARIATIONS, limits.MAX_STEPS)
    assert (announced.max_regions, announced.max_prompt_chars) == (limits.MAX_REGIONS, limits.MAX_PROMPT_CHARS)
    assert (P.MAX_SEED, P.MAX_CFG, P.MAX_SCALE_LOCK_DB) == (limits.MAX_SEED, limits.MAX_CFG, limits.MAX_SCALE_LOCK_DB)


def test_the_edges_of_the_ranges_render(tiny_model_dir, tmp_path):
    """The largest seed with the most takes is a request both take (the takes' seeds go past it)."""
    assert daemon_error("seed", str(limits.MAX_SEED)) == ""
    assert daemon_error("variations", str(limits.MAX_VARIATIONS)) == ""
    out = tmp_path / "edge.wav"
    args = ["--seed", str(limits.MAX_SEED), "--variations", str(limits.MAX_VARIATIONS), "--steps", "1"]
    result = run_sa3("generate", "kick", "--seconds", "0.1", *args, "--model", tiny_model_dir, "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert all(sf.info(str(tmp_path / f"edge-{k}.wav")).frames == 4410 for k in range(1, limits.MAX_VARIATIONS + 1))


def test_render_sheets_use_the_same_limits(tmp_path):
    sheet = tmp_path / "pack.yaml"
    sheet.write_text(
        textwrap.dedent(
            f"""
            jobs:
              - {{name: a, prompt: x, seconds: 1, seed: -5}}
              - {{name: b, prompt: x, seconds: 1, seed: [1, {limits.MAX_SEED + 1}]}}
              - {{name: c, prompt: x, seconds: 1, variations: {limits.MAX_VARIATIONS + 1}}}
              - {{name: d, prompt: x, seconds: 1, steps: {limits.MAX_STEPS + 100}}}
              - {{name: e, prompt: x, seconds: 1, cfg: 25}}
              - {{name: f, prompt: x, seconds: 1, seed: {limits.MAX_SEED}, variations: {limits.MAX_VARIATIONS}}}
            """
        )
    )
    result = run_sa3("render", sheet, "-o", tmp_path / "out", "--quiet")
    assert result.returncode == 2, result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("sa3: error:") and ": job " in line]
    expected = {
        "job 1 (a): seed: seed is -5; use 0 to 4294967295",
        "job 2 (b): seed: seed is 4294967296; use 0 to 4294967295",
        f"job 3 (c): variations: variations is 9; use 1 to {limits.MAX_VARIATIONS}",
        f"job 4 (d): steps: steps is 200; use 1 to {limits.MAX_STEPS}",
        "job 5 (e): cfg: cfg is 25; use 0 to 20",
    }
    assert len(problems) == len(expected), result.stderr
    for line, text in zip(problems, sorted(expected)):
        assert line.endswith(text), (line, text)
    assert not (tmp_path / "out").exists()
