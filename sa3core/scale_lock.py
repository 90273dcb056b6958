"""Scale lock: keep generated notes in the key the prompt names, through the latents' semitone channels.

The shipped autoencoder's last 60 latent channels are measured, not learned: each is the log
energy of one semitone from A1 up in its latent frame (``pitch_channels`` in
:mod:`sa3core.models.same`), normalised with the other channels. So the DiT's clean estimate
``x0_hat = x - t v`` says, frame by frame, how loud every note below 2 kHz will be, and the
decoder renders what those channels say. Where a prompt names a key with a scale ("D minor",
"F# dorian"), every sampler step turns the semitones outside the scale down in ``x0_hat`` by
``cut_db`` and the tonic up by :data:`TONIC_SHARE` of that, and the step goes on from the velocity
of the edited estimate (``v = (x - x0_hat) / t``). The DiT then builds the rest of the latent
(its learned channels, the next steps) around notes in the key.

Why: on its own the DiT falls short on keys (read off its semitone channels, its latents name
the asked key 25 times in 54; its decoded takes 44 in 90 over five seeds of ``sa3 eval``), and
more flow training on two CPU cores bought little each time; the channels are a direct handle
on the notes. On the corpus's ``valid`` split (22 keyed
prompts, seeds 0, 100 and 200) the key estimator read the asked key in 27 of 66 takes without
the lock, 42 with out-of-scale notes cut by 12 dB per step, 50 with the tonic also raised by
3.5 dB (``runs/diag/scale.py``; the model card has the test split's figures).

The nudge is per step, so it compounds where the DiT keeps putting a note back; it is not the
final level of out-of-scale notes. Passing notes and blue notes outside the scale are turned
down with the rest: a prompt that names no key is left alone, and ``--scale-lock 0`` turns it off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import Sa3Error
from .musical import SCALES, MusicAttributes

RAW_PER_DB = 0.125 * math.log(10.0) / 10.0  # the channels hold 0.125 ln(power): one dB of power in their units
TONIC_SHARE = 0.29  # the tonic is raised by this share of the cut (3.5 dB for the shipped 12 dB)


@dataclass(frozen=True)
class SemitoneLayout:
    """Where a model's latents hold measured semitone energies: the last ``len(mean)`` channels,
    the first of them at MIDI note ``low_note``, normalised as ``(raw - mean) / std``."""

    low_note: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.mean or len(self.mean) != len(self.std):
            raise Sa3Error("a semitone layout needs one mean and one standard deviation per channel")
        if min(self.std) <= 0:
            raise Sa3Error("a semitone layout's standard deviations must be above zero")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict:
        return {"low_note": self.low_note, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict | None) -> SemitoneLayout | None:
        """The export manifest's ``semitones`` entry; None for an empty one (a model without them)."""
        if not data:
            return None
        try:
            return cls(int(data["low_note"]), tuple(map(float, data["mean"])), tuple(map(float, data["std"])))
        except (KeyError, TypeError, ValueError) as err:
            raise Sa3Error(f"the export's semitone layout is malformed ({err}); export the model again") from None


def layout_of(autoencoder) -> SemitoneLayout | None:
    """The layout of a :class:`~sa3core.models.same.SAME` with measured semitone channels, else None."""
    from .models.same import PITCH_LOW_NOTE

    channels = autoencoder.config.pitch_channels
    if not channels:
        return None
    norm = autoencoder.latent_norm
    std = torch.sqrt(norm.var[-channels:].float() + norm.eps)
    return SemitoneLayout(PITCH_LOW_NOTE, tuple(norm.mean[-channels:].float().tolist()), tuple(std.tolist()))


def check_cut(cut_db: float, what: str = "scale lock") -> float:
    if not math.isfinite(cut_db) or cut_db < 0:
        raise Sa3Error(f"{what} must be 0 dB (off) or more, got {cut_db!r}")
    return float(cut_db)


def scale_offsets(layout: SemitoneLayout, music: MusicAttributes, cut_db: float) -> torch.Tensor | None:
    """Per semitone channel, the step's change to the normalised clean estimate [channels]:
    ``-cut_db`` outside the scale ``music`` names, ``+TONIC_SHARE * cut_db`` on its tonic, 0
    elsewhere. None when there is nothing to lock to (no key, a note without a scale, cut 0)."""
    if not cut_db or music.tonic is None or music.mode not in SCALES:
        return None
    scale = {(music.tonic + step) % 12 for step in SCALES[music.mode]}
    offsets = []
    for channel in range(layout.channels):
        pitch_class = (layout.low_note + channel) % 12
        if pitch_class not in scale:
            offsets.append(-cut_db)
        elif pitch_class == music.tonic:
            offsets.append(TONIC_SHARE * cut_db)
        else:
            offsets.append(0.0)
    raw = torch.tensor(offsets, dtype=torch.float64) * RAW_PER_DB
    return (raw / torch.tensor(layout.std, dtype=torch.float64)).float()


def lock_velocity(
    v: torch.Tensor, x: torch.Tensor, t: torch.Tensor, offsets: torch.Tensor, where: torch.Tensor | None = None
) -> torch.Tensor:
    """The velocity whose clean estimate is ``x - t v`` with ``offsets`` [C] added to its last C
    channels (x, v [B, 256, T]; t [B]), in the frames where ``where`` [B, 1, T] is 1 (None: all;
    inpainting leaves the frames it keeps alone). At t = 0 there is no step left: ``v`` is returned."""
    channels = offsets.numel()
    shift = torch.zeros(x.shape[1], dtype=v.dtype, device=v.device)
    shift[-channels:] = offsets.to(v.device, v.dtype)
    shift = shift[None, :, None] if where is None else shift[None, :, None] * where.to(v.device, v.dtype)
    t = t.to(v.dtype).reshape(-1, 1, 1)
    # x0' = x0 + shift, so v' = (x - x0') / t = v - shift / t.
    return torch.where(t > 0, v - shift / t.clamp_min(1e-6), v)
