"""Where the codec's error is: decoded against true magnitudes and phases, per clip and in all.

    .venv/bin/python scripts/diag/codec_split.py [--model DIR] [--corpus data/corpus] [--items 37]

Renders each held-out clip (first 10 s, as `sa3 eval`) through the autoencoder's head six ways
and prints the log-mel L1 of each against the clip: the decode as shipped (``dec``) and with the
Griffin-Lim refinement the model asks for (``dec_gl``); the clip's own magnitudes with the head's
phases (``trueM_predP``, and refined); the decoded magnitudes with the clip's own phases
(``decM_trueP``); and the clip's own magnitudes and phases (``true_true``, ~0: checks the
alignment). Low ``trueM_*`` and high ``decM_trueP`` mean the magnitudes hold the codec back.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sa3.eval import metrics
from sa3.eval.runner import EvalContext, EvalSettings
from sa3core.models.same import pad_to_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--items", type=int, default=37)
    parser.add_argument("--iterations", type=int, default=8, help="Griffin-Lim iterations for the refined rows")
    args = parser.parse_args()
    torch.set_num_threads(2)
    settings = EvalSettings(model=args.model, corpus=args.corpus, split="test", items=args.items)
    ctx = EvalContext(settings, progress=False)
    same = ctx.pipeline.backend.autoencoder

    def render(magnitude: torch.Tensor, phase: torch.Tensor, iterations: int = 0) -> torch.Tensor:
        return same.refine_phase(magnitude, phase, iterations)  # 0 iterations: the plain overlap-add

    results: dict[str, list[float]] = {}
    for clip in ctx.clips:
        audio = torch.from_numpy(clip.audio)[None]
        samples = audio.shape[-1]
        with torch.inference_mode():
            padded = pad_to_frames(audio)
            latents = same.encode(audio)
            log_magnitude, phase = same.head_spectra(same.decoder_outputs(latents), latents=latents)
            magnitude = torch.exp(log_magnitude)
            true_phase = same.head_analysis(padded).angle()
            true_magnitude = torch.exp(same.head_target(padded))
            renders = {
                "dec": render(magnitude, phase),
                "dec_gl": render(magnitude, phase, args.iterations),
                "trueM_predP": render(true_magnitude, phase),
                "trueM_predP_gl": render(true_magnitude, phase, args.iterations),
                "decM_trueP": render(magnitude, true_phase),
                "true_true": render(true_magnitude, true_phase),
            }
        row = []
        for name, rendered in renders.items():
            value = metrics.log_mel_l1(clip.audio, rendered[0, :, :samples].numpy().astype(np.float32))
            results.setdefault(name, []).append(value)
            row.append(f"{name} {value:.3f}")
        print(clip.name, " ".join(row), flush=True)
    print("mean:", " ".join(f"{name} {np.mean(values):.4f}" for name, values in results.items()))


if __name__ == "__main__":
    main()
