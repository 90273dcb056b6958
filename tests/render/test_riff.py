"""WAV acid and LIST/INFO chunks, read back with a RIFF parser written here (struct), not ours."""

from __future__ import annotations

import struct
import textwrap

import numpy as np
import pytest
import soundfile as sf

from sa3.render.riff import parse_root_note
from sa3.render.runner import write_take
from sa3.render.sheet import load_sheet
from sa3core.errors import Sa3Error


def chunks_of(path) -> tuple[int, dict[bytes, bytes]]:
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    riff_size = struct.unpack("<I", data[4:8])[0]
    found, pos = {}, 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        found[chunk_id] = data[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)
    assert pos == len(data), "chunks do not tile the file"
    return riff_size, found


def info_fields(body: bytes) -> dict[str, str]:
    assert body[:4] == b"INFO"
    fields, pos = {}, 4
    while pos < len(body):
        key, size = body[pos : pos + 4].decode(), struct.unpack("<I", body[pos + 4 : pos + 8])[0]
        fields[key] = body[pos + 8 : pos + 8 + size].rstrip(b"\0").decode()
        pos += 8 + size + (size & 1)
    return fields


def job(tmp_path, body: str):
    path = tmp_path / "sheet.yaml"
    path.write_text("jobs:\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "  "))
    return load_sheet(path).jobs[0]


def test_loop_gets_acid_tempo_meter_beats_and_root_note(tmp_path):
    loop = job(
        tmp_path, "- {prompt: 'dusty breakbeat, 96 bpm', bars: 4, bpm: 96, meter: 6/8, loop: true, root_note: F#2}"
    )
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, loop.samples)).astype(np.float32)
    out = tmp_path / "loop.wav"
    write_take(loop, audio, out, seed=7, identity="model-x", digest="ab" * 32)
    riff_size, chunks = chunks_of(out)
    assert riff_size == out.stat().st_size - 8
    flags, root, _, _, beats, denominator, numerator, tempo = struct.unpack("<IhhfIHHf", chunks[b"acid"])
    assert flags & 0x01 == 0  # not one-shot: a loop
    assert flags & 0x02 and root == 42  # F#2 = MIDI 42
    assert (numerator, denominator) == (6, 8)
    assert beats == 12  # 4 bars of 6/8 = 12 quarter notes, the unit bpm counts
    assert tempo == pytest.approx(96.0)
    info = info_fields(chunks[b"LIST"])
    assert info["INAM"] == "dusty breakbeat, 96 bpm"
    assert "seed=7" in info["ICMT"] and "model=model-x" in info["ICMT"]
    # The audio is intact and libsndfile still reads the file.
    back, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == 44_100 and back.shape == (loop.samples, 2)
    np.testing.assert_allclose(back.T, audio, atol=2**-22)
    assert not list(tmp_path.glob(".loop-*")), "temporary file left behind"


def test_one_shot_flag_and_no_acid_without_tempo(tmp_path):
    hit = job(tmp_path, "- {prompt: hit, seconds: 1, bpm: 120}")
    write_take(hit, np.zeros((2, hit.samples), np.float32), tmp_path / "hit.wav", 0, "m", "0" * 64)
    flags = struct.unpack("<I", chunks_of(tmp_path / "hit.wav")[1][b"acid"][:4])[0]
    assert flags & 0x01 and not flags & 0x02
    plain = job(tmp_path, "- {prompt: pad, seconds: 1, output: pad.wav}")
    write_take(plain, np.zeros((2, plain.samples), np.float32), tmp_path / "pad.wav", 0, "m", "0" * 64)
    assert b"acid" not in chunks_of(tmp_path / "pad.wav")[1]


def test_flac_carries_prompt_seed_and_model_in_vorbis_comments(tmp_path):
    take = job(tmp_path, "- {prompt: soft click, seconds: 0.2, output: click.flac}")
    write_take(take, np.zeros((2, take.samples), np.float32), tmp_path / "click.flac", 3, "model-y", "1" * 64)
    with sf.SoundFile(tmp_path / "click.flac") as f:
        assert f.title == "soft click"
        assert "seed=3" in f.comment and "model=model-y" in f.comment


@pytest.mark.parametrize(("text", "note"), [(60, 60), ("C4", 60), ("A3", 57), ("Bb2", 46), ("C-1", 0)])
def test_root_note_names(text, note):
    assert parse_root_note(text) == note


@pytest.mark.parametrize("text", ["H2", 128, "C9x", True])
def test_bad_root_notes(text):
    with pytest.raises(Sa3Error):
        parse_root_note(text)
