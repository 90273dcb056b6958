"""Model families: the pipeline asks the loaded family for a plan and knows none of its features;
a steering option the family lacks is a one-line error, not a silent no-op."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from sa3core.errors import Sa3Error
from sa3core.families import family_named
from sa3core.families.sa3 import SA3Family
from sa3core.pipeline import Pipeline, Region

PIPELINE = Path(__file__).resolve().parents[1] / "sa3core" / "pipeline.py"
SA3_FEATURES = {"musical", "warp", "scale_lock", "families.sa3"}


class PlainFamily(SA3Family):
    """sa3's folder format without any steering option (as a released checkpoint's family has none)."""

    name = "plain"
    hooks = frozenset()


def test_the_pipeline_imports_no_family_feature():
    tree = ast.parse(PIPELINE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported |= {node.module or ""} | {f"{node.module}.{a.name}" if node.module else a.name for a in node.names}
    assert not {name for name in imported for feature in SA3_FEATURES if name.endswith(feature)}


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("scale_lock_db", 12.0, "no scale lock db"),
        ("tempo_grid", True, "no tempo grid"),
        ("tail_seconds", 0.1, "no tail"),
    ],
)
def test_a_steering_option_the_family_lacks_is_a_one_line_error(tiny_pipeline, option, value, words):
    plain = Pipeline(tiny_pipeline.backend, tiny_pipeline.settings, PlainFamily())
    with pytest.raises(Sa3Error, match=words) as caught:
        plain.generate("pad in A minor", 8192, steps=1, **{option: value})
    assert "\n" not in str(caught.value) and "plain family" in str(caught.value)
    # the model's defaults (None) are no request: the plain family generates
    assert plain.generate("pad", 8192, steps=1, **{option: None}).shape == (1, 2, 8192)


def test_sa3_steering_that_only_generate_has_is_refused_for_edits(tiny_pipeline):
    audio = np.zeros((2, 3 * 4096), dtype=np.float32)
    with pytest.raises(Sa3Error, match="tail_seconds applies to generate only, not to inpaint"):
        tiny_pipeline.inpaint(audio, "x", [Region(4096, 8192)], steps=1, tail_seconds=0.1)
    with pytest.raises(Sa3Error, match="tempo_grid applies to generate only, not to continue"):
        tiny_pipeline.continue_(audio, "x", 4096, steps=1, tempo_grid=True)


def test_the_default_family_is_sa3s_and_loads_its_folders(tiny_model_dir):
    loaded = Pipeline.load(tiny_model_dir)
    assert loaded.family.name == "sa3" and family_named("sa3").hooks == loaded.family.hooks
    with pytest.raises(Sa3Error, match="unknown model family 'nope'"):
        family_named("nope")
