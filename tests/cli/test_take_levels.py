"""Levels and metadata of what `sa3 generate|inpaint|continue` write, on the shipped default model
and the README's own commands: new audio under the -1 dBTP ceiling at every rate, matched to the
audio around it; kept audio the input's own samples at the input's own rate; near-silent takes
named; a take's comment enough to make it again."""

from __future__ import annotations

import re
import shlex

import numpy as np
import pytest
import soundfile as sf

from sa3.render.loudness import true_peak_db
from tests.conftest import REPO, run_sa3

CEILING_DBTP = -1.0
NEAR_SILENT_DBTP = -50.0


def readme_command(output: str) -> list[str]:
    """The README's example command that writes ``output``, as arguments after ``sa3``."""
    for line in (REPO / "README.md").read_text().splitlines():
        if f"-o {output}" in line and "sa3 " in line:
            words = shlex.split(line[line.index("sa3 ") :], comments=True)
            return words[1:]
    raise AssertionError(f"README.md has no example command writing {output}")


def ints(path) -> tuple[np.ndarray, int]:
    """A file's samples as the integers it holds (left-aligned in int32) and its rate."""
    data, rate = sf.read(str(path), dtype="int32", always_2d=True)
    return data.T, rate


def rms_db(audio: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.asarray(audio, dtype=np.float64) ** 2) + 1e-30)


@pytest.fixture(scope="module")
def readme_loop(tmp_path_factory):
    """The quick start's four bars of drums, made by the README's command on the shipped model."""
    folder = tmp_path_factory.mktemp("readme")
    result = run_sa3(*readme_command("loop.wav"), "--quiet", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "loop.wav"


def test_continuing_the_readme_loop_stays_under_the_ceiling_at_the_loops_level(readme_loop):
    """`sa3 continue intro.wav "the groove goes on" --bars 4 --bpm 120` on the quick start's loop
    (it had peaked at +10 to +22 dBFS and clipped in the 24-bit file)."""
    folder = readme_loop.parent
    args = [readme_loop if word == "intro.wav" else word for word in readme_command("longer.wav")]
    result = run_sa3(*args, "--variations", "2", "--quiet", cwd=folder)
    assert result.returncode == 0, result.stderr
    loop, rate = ints(readme_loop)
    given = loop.shape[1]
    reference = sf.read(str(readme_loop), dtype="float64", always_2d=True)[0].T[:, -4 * rate :]
    for k in (1, 2):
        take, take_rate = ints(folder / f"longer-{k}.wav")
        assert take_rate == rate and take.shape[1] == 2 * given
        np.testing.assert_array_equal(take[:, :given], loop)  # the input, integer for integer
        new = sf.read(str(folder / f"longer-{k}.wav"), dtype="float64", always_2d=True)[0].T[:, given:]
        assert true_peak_db(new) <= CEILING_DBTP + 1e-3, f"take {k}"
        assert abs(rms_db(new) - rms_db(reference)) < 6.0, f"take {k} is not at the loop's level"


@pytest.mark.slow  # over 10 s; .ci/run runs the slow tests
def test_inpainting_the_readme_song_stays_under_the_ceiling_and_keeps_the_rest(readme_loop, tmp_path):
    """`sa3 inpaint song.wav "snare fill" --region 5.1:9.1 --bpm 120` on a song of the loop played
    twice (it had peaked at +8 to +16 dBFS)."""
    loop, rate = sf.read(str(readme_loop), dtype="float64", always_2d=True)
    song = tmp_path / "song.wav"
    sf.write(str(song), np.concatenate([loop, loop]), rate, subtype="PCM_24")
    result = run_sa3(*readme_command("song-fill.wav"), "--variations", "2", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    kept, _ = ints(song)
    start, end = 8 * rate, 16 * rate  # bars 5-8 at 120 bpm
    reference = loop.T[:, -4 * rate :]  # the four seconds before the region
    for k in (1, 2):
        take, take_rate = ints(tmp_path / f"song-fill-{k}.wav")
        assert take_rate == rate and take.shape == kept.shape
        np.testing.assert_array_equal(take[:, :start], kept[:, :start])
        region = sf.read(str(tmp_path / f"song-fill-{k}.wav"), dtype="float64", always_2d=True)[0].T[:, start:end]
        assert true_peak_db(region) <= CEILING_DBTP + 1e-3, f"take {k}"
        assert abs(rms_db(region) - rms_db(reference)) < 6.0, f"take {k} is not at the song's level"


def test_a_48_khz_take_stays_under_the_ceiling(tmp_path):
    """The quick start's command at 48 kHz: the ceiling holds at the rate written (it peaked at
    -0.97 dBFS when the ceiling came before resampling)."""
    result = run_sa3(
        *readme_command("loop.wav"), "--sample-rate", "48000", "--bit-depth", "float", "--quiet", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(str(tmp_path / "loop.wav"), dtype="float64", always_2d=True)
    assert (rate, audio.shape[0]) == (48_000, 384_000)
    assert true_peak_db(audio.T) <= CEILING_DBTP + 1e-3


def host_rate_file(path, rate: int, seconds: float) -> np.ndarray:
    """A 24-bit stereo file at ``rate`` whose every low bit matters: returns its integers."""
    rng = np.random.default_rng(rate)
    t = np.arange(int(seconds * rate)) / rate
    music = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.25 * np.sin(2 * np.pi * 330 * t + 1.0)])
    codes = np.round((music + 0.01 * rng.standard_normal(music.shape)) * 2**23).astype(np.int64)
    sf.write(str(path), (codes / 2**23).T, rate, subtype="PCM_24")
    return ints(path)[0]


@pytest.mark.parametrize("rate", [48_000, 96_000])
def test_inpainting_a_host_rate_file_keeps_its_rate_and_its_samples(tmp_path, rate):
    """Without --sample-rate the take comes back at the input's rate, and outside the region it
    is the input's own 24-bit integers (at 48/96 kHz half of them had moved by an LSB)."""
    source = tmp_path / "take.wav"
    codes = host_rate_file(source, rate, 2.0)
    out = tmp_path / "fixed.wav"
    result = run_sa3("inpaint", source, "snare fill", "--region", "0.5:1.25", "--steps", "2", "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    take, take_rate = ints(out)
    assert take_rate == rate and sf.info(str(out)).subtype == "PCM_24" and take.shape == codes.shape
    start, end = int(0.5 * rate), int(1.25 * rate)
    np.testing.assert_array_equal(take[:, :start], codes[:, :start])
    np.testing.assert_array_equal(take[:, end:], codes[:, end:])
    assert np.abs(take[:, start:end] - codes[:, start:end]).max() > 2**16  # the region is new
    region = sf.read(str(out), dtype="float64", always_2d=True)[0].T[:, start:end]
    assert true_peak_db(region) <= CEILING_DBTP + 1e-3


def test_continuing_a_48_khz_file_keeps_its_rate_and_its_samples(tmp_path):
    source = tmp_path / "intro.wav"
    codes = host_rate_file(source, 48_000, 1.5)
    out = tmp_path / "longer.wav"
    result = run_sa3("continue", source, "more of the same", "--seconds", "1", "--steps", "2", "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    take, rate = ints(out)
    assert rate == 48_000 and take.shape == (2, codes.shape[1] + 48_000)
    np.testing.assert_array_equal(take[:, : codes.shape[1]], codes)
    new = sf.read(str(out), dtype="float64", always_2d=True)[0].T[:, codes.shape[1] :]
    assert true_peak_db(new) <= CEILING_DBTP + 1e-3


WARNING = re.compile(r"sa3: warning: (\S+) is near-silent \(true peak (-?[\d.]+|-inf) dBTP")


def near_silence(folder, stem: str, takes: int) -> dict[str, float]:
    """Takes of ``stem`` whose true peak is under the near-silence threshold: name -> dBTP."""
    peaks = {}
    for k in range(1, takes + 1):
        path = folder / f"{stem}-{k}.wav"
        peaks[str(path)] = true_peak_db(sf.read(str(path), dtype="float64", always_2d=True)[0].T)
    return {name: peak for name, peak in peaks.items() if peak < NEAR_SILENT_DBTP}


def test_the_readme_click_command_makes_eight_audible_clicks(tmp_path):
    """The README's UI click command (it gave 4 of 8 takes under -55 dBFS)."""
    result = run_sa3(*readme_command("click.wav"), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert near_silence(tmp_path, "click", 8) == {}
    assert "near-silent" not in result.stderr


def test_near_silent_takes_are_named_with_their_peak(tmp_path):
    """On the shipped model this prompt makes near-silent takes at seeds 2, 3, 5 and 7: each gets
    one warning line that names its file and its true peak; the audible takes get none."""
    out = tmp_path / "click.wav"
    result = run_sa3(
        "generate", "UI click, short and bright", "--seconds", "0.25", "--variations", "8", "-o", out, "--quiet"
    )
    assert result.returncode == 0, result.stderr
    quiet = near_silence(tmp_path, "click", 8)
    assert quiet, "the shipped model made no near-silent click: pick another prompt for this test"
    warned = {name: float(peak) for name, peak in WARNING.findall(result.stderr)}
    assert sorted(warned) == sorted(quiet)
    for name, peak in quiet.items():
        assert warned[name] == pytest.approx(peak, abs=0.051)
    assert len([line for line in result.stderr.splitlines() if "near-silent" in line]) == len(quiet)


def comment_fields(path) -> dict[str, str]:
    with sf.SoundFile(str(path)) as handle:
        comment = handle.comment
    return dict(re.findall(r"(\w+)=(\S+)", comment))


def test_a_takes_comment_has_what_makes_it_again(tmp_path):
    """The comment names the model, sampler, steps, guidance, the take's own seed and the batch it
    came from, with the model's defaults filled in (it said steps=None cfg=None); its values,
    given as flags, make the same samples."""
    result = run_sa3(
        "generate", "short bright tick", "--seconds", "0.25", "--seed", "4", "--variations", "2",
        "-o", tmp_path / "tick.wav", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    fields = comment_fields(tmp_path / "tick-2.wav")
    assert fields["model"] == "sa3-default-tiny" and fields["sampler"] == "dpmpp"
    assert (fields["seed"], fields["batch_seed"], fields["batch_size"]) == ("5", "4", "2")
    assert (fields["steps"], fields["cfg"], fields["scale_lock_db"], fields["phase_iterations"]) == (
        "15",
        "3",
        "12",
        "8",
    )
    assert "None" not in fields.values()
    flags = {"batch_seed": "--seed", "batch_size": "--variations", "steps": "--steps", "cfg": "--cfg"}
    flags.update({"scale_lock_db": "--scale-lock", "phase_iterations": "--phase-iterations", "tail_seconds": "--tail"})
    again = [word for key, flag in {**flags, "sample_rate": "--sample-rate"}.items() for word in (flag, fields[key])]
    again.append("--warp" if fields["warp"] == "on" else "--no-warp")
    result = run_sa3(
        "generate", "short bright tick", "--seconds", "0.25", *again, "-o", tmp_path / "again.wav", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(ints(tmp_path / "again-2.wav")[0], ints(tmp_path / "tick-2.wav")[0])
