"""Two processes under torchrun (gloo on loopback) train the same weights as one process.

Each step's global batch, noise, timesteps, masks and prompt dropout depend only on
(seed, step, item position), and the loss is a mean of per-item means, so one process with
batch 4 and two processes with batch 2 each compute the same gradient up to float summation
order. OT coupling is off here: it pairs noise within each process's micro-batch (as every
per-GPU implementation does), which is a different pairing than over the global batch.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.training.test_flow import SMALL_DIT, corpus, one_thread  # noqa: F401  (module fixtures)

# Adam divides by sqrt(v): float summation-order differences in the gradient (about 1e-7
# relative) stay far below this after a few steps at lr 1e-3.
TOLERANCE = 1e-5


def _settings(folder, batch_size, seed=0, grad_accum=1):
    return {
        "corpus": str(folder),
        "text_encoder": "hash",
        "dit": SMALL_DIT,
        "data": {"max_seconds": 1.5, "min_seconds": 0.3},
        "ot": False,
        "loop": {
            "seed": seed,
            "steps": 4,
            "batch_size": batch_size,
            "grad_accum": grad_accum,
            "lr": 1e-3,
            "warmup_steps": 1,
            "checkpoint_every": 4,
            "progress": False,
            "threads": 1,
        },
    }


def _train(tmp_path, name, settings, processes):
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(settings))
    out = tmp_path / name
    sa3 = ["-m", "sa3", "train", "flow", "--config", str(path), "--out", str(out)]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *sa3]
    else:
        command = [sys.executable, *sa3]
    env = dict(os.environ, PYTHONWARNINGS="ignore", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(str(out / "model" / "dit.safetensors"))


def _max_difference(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(corpus, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    one = _train(tmp_path, "one", _settings(corpus, batch_size=4), processes=1)
    two = _train(tmp_path, "two", _settings(corpus, batch_size=2), processes=2)
    accumulated = _train(tmp_path, "accum", _settings(corpus, batch_size=2, grad_accum=2), processes=1)
    other_seed = _train(tmp_path, "seed1", _settings(corpus, batch_size=4, seed=1), processes=1)
    print(
        f"max |one - two| {_max_difference(one, two):.2e}, |one - accumulated| {_max_difference(one, accumulated):.2e}"
    )
    assert _max_difference(one, two) < TOLERANCE
    assert _max_difference(one, accumulated) < TOLERANCE
    assert _max_difference(one, other_seed) > 100 * TOLERANCE  # the comparison can fail
