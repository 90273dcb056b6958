"""Effect chains: pedalboard introspection, parameter checks, and the three tail policies."""

from __future__ import annotations

import numpy as np
import pedalboard
import pytest

from sa3.render.chain import EffectError, build_chain, build_effect, effect_parameters, effects
from sa3.render.loops import apply_with_tail

RATE = 44_100


def test_registry_holds_pedalboard_effects_and_no_containers():
    names = effects().names()
    for name in ("HighpassFilter", "Compressor", "Reverb", "Delay", "Limiter", "Gain"):
        assert name in names
    for name in ("Pedalboard", "Chain", "Mix", "Plugin", "VST3Plugin", "ExternalPlugin"):
        assert name not in names
    assert all(issubclass(effects().get(n), pedalboard.Plugin) for n in names)
    assert effect_parameters(pedalboard.Reverb)[:2] == ("room_size", "damping")
    assert effect_parameters(pedalboard.Compressor) == ("threshold_db", "ratio", "attack_ms", "release_ms")


def test_effects_are_built_with_their_keyword_arguments():
    reverb = build_effect({"type": "Reverb", "room_size": 0.25, "wet_level": 0.5})
    assert isinstance(reverb, pedalboard.Reverb)
    assert reverb.room_size == pytest.approx(0.25) and reverb.wet_level == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("item", "key", "words"),
    [
        ({"type": "Reverbb"}, "type", "did you mean 'Reverb'"),
        ({"type": "Reverb", "size": 0.2}, "size", "did you mean"),
        ({"type": "Reverb", "room_size": 3.0}, "room_size", "between 0.0 and 1.0"),
        ({"type": "Delay", "feedback": "lots"}, "feedback", "refused"),
        ({"room_size": 0.2}, "type", "needs 'type'"),
        ({"vst3": "/no/such/plugin.vst3"}, "vst3", "does not exist"),
        ({"vst3": "x.vst3", "parms": {}}, "parms", "did you mean 'params'"),
    ],
)
def test_bad_effects_name_the_key(item, key, words):
    with pytest.raises(EffectError) as caught:
        build_effect(item)
    assert caught.value.key == key and words in str(caught.value)


def test_enum_parameters_by_member_name():
    ladder = build_effect({"type": "LadderFilter", "mode": "HPF24", "cutoff_hz": 900})
    assert ladder.mode == pedalboard.LadderFilter.Mode.HPF24
    with pytest.raises(EffectError) as caught:
        build_effect({"type": "LadderFilter", "mode": "LPF25"})
    assert caught.value.key == "mode" and "did you mean 'LPF24'" in str(caught.value)


def test_wrong_types_show_the_signature():
    with pytest.raises(EffectError) as caught:
        build_effect({"type": "Convolution"})
    assert "impulse_response_filename" in str(caught.value)


def impulse(n: int, at: int = 0) -> np.ndarray:
    audio = np.zeros((2, n), dtype=np.float32)
    audio[:, at] = 0.5
    return audio


def test_cut_keeps_the_length_and_keep_lets_the_tail_ring_out():
    board = build_chain([{"type": "Reverb", "room_size": 0.6, "wet_level": 0.5, "dry_level": 0.5}])
    audio = impulse(RATE // 2, at=RATE // 4)
    cut = apply_with_tail(board, audio, "cut", 4.0)
    kept = apply_with_tail(board, audio, "keep", 4.0)
    assert cut.shape == audio.shape
    assert RATE // 2 < kept.shape[1] < RATE // 2 + 4 * RATE
    np.testing.assert_allclose(kept[:, : RATE // 2], cut, atol=1e-6)
    # It stopped because the tail decayed: the last 10 ms lie below -60 dB of the peak...
    peak = np.abs(kept).max()
    assert np.abs(kept[:, -441:]).max() < peak * 10 ** (-55 / 20)
    # ...and what was cut off after it is quieter still.
    longer = board.process(np.pad(audio, ((0, 0), (0, 4 * RATE))), RATE, reset=True)
    assert np.abs(longer[:, kept.shape[1] :]).max() <= peak * 10 ** (-60 / 20)


def test_keep_stops_at_the_maximum_and_fades_instead_of_clicking():
    board = build_chain([{"type": "Delay", "delay_seconds": 0.05, "feedback": 0.95, "mix": 0.5}])
    t = np.arange(RATE // 10) / RATE
    audio = np.stack([0.5 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)  # echoes overlap: no gaps
    kept = apply_with_tail(board, audio, "keep", 0.5)
    assert kept.shape[1] == RATE // 10 + RATE // 2
    assert np.abs(kept[:, -1]).max() < 1e-3


def test_fold_puts_the_tail_on_the_loop_start_at_exact_length():
    # An impulse near the loop's end through a 100 ms delay: its echoes must come round to the start.
    n = RATE // 2
    at = n - 2205  # 50 ms before the end
    board = build_chain([{"type": "Delay", "delay_seconds": 0.1, "feedback": 0.0, "mix": 0.5}])
    folded = apply_with_tail(board, impulse(n, at), "fold", 2.0)
    assert folded.shape == (2, n)
    echo_at = at + 4410 - n  # 100 ms after the impulse, wrapped: 50 ms into the loop
    assert np.argmax(np.abs(folded[0])) in (at, echo_at)
    assert np.abs(folded[0, echo_at]) > 0.2
    cut = apply_with_tail(board, impulse(n, at), "cut", 2.0)
    assert np.abs(cut[0, echo_at]) < 1e-6  # without folding the echo is simply lost
