"""Prompt sheets: parsing, defaults, and errors that name the sheet line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sa3.render.sheet import SheetError, load_sheet
from sa3core import timebase
from sa3core.audio import save_audio


def write(tmp_path: Path, text: str, name: str = "sheet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def issues_of(path: Path, **kwargs) -> list[str]:
    with pytest.raises(SheetError) as caught:
        load_sheet(path, **kwargs)
    return caught.value.issues


def test_defaults_merge_and_lengths_resolve(tmp_path):
    path = write(
        tmp_path,
        """
        defaults:
          bpm: 128
          loudness: -14
        jobs:
          - name: drums
            prompt: house drums
            bars: 4
          - name: waltz
            prompt: waltz
            bars: 2
            meter: 3/4
            bpm: 96
            loop: true
          - name: click
            prompt: click
            seconds: 0.2
            seed: [4, 9]
        """,
    )
    sheet = load_sheet(path)
    drums, waltz, click = sheet.jobs
    assert drums.samples == timebase.bars_to_samples(4, 128, "4/4") == 330_750
    assert drums.spec.loudness == -14 and drums.tail == "cut" and drums.beats == 16
    assert waltz.samples == timebase.bars_to_samples(2, 96, "3/4") and waltz.tail == "fold"
    assert waltz.beats == 6 and waltz.overhang == timebase.seconds_to_samples(0.05)
    assert click.samples == 8820
    assert [(t.seed, t.output) for t in click.takes] == [(4, "click-1.wav"), (9, "click-2.wav")]


def test_every_problem_is_reported_with_its_line_and_field(tmp_path):
    path = write(
        tmp_path,
        """
        defaults:
          bpm: 128
        jobs:
          - name: one
            prompt: riser
            bars: 4
            bmp: 120
          - name: two
            prompt: pad
            seconds: fast
          - name: three
            prompt: hit
            seconds: 0
          - name: four
            prompt: loop
            bars: 2
            bpm: null
          - name: five
            prompt: fx
            seconds: 1
            chain:
              - type: HighpassFilter
                cutoff_frequency_hz: 100
              - type: Reverbb
              - type: Reverb
                room_sise: 0.4
              - type: Compressor
                ratio: loud
          - name: six
            prompt: long
            seconds: 9999
        """,
    )
    issues = issues_of(path)
    text = "\n".join(issues)
    expected = [
        (":7: job 1 (one): bmp:", "did you mean 'bpm'?"),
        (":10: job 2 (two): seconds:", "must be a number"),
        (":13: job 3 (three): seconds:", "longer than zero"),
        (":16: job 4 (four): bars:", "need a tempo"),
        (":24: job 5 (five): chain[1].type:", "did you mean 'Reverb'?"),
        (":26: job 5 (five): chain[2].room_sise:", "did you mean 'room_size'?"),
        (":28: job 5 (five): chain[3].ratio:", "refused"),
        (":31: job 6 (six): seconds:", "limit"),
    ]
    for where, what in expected:
        assert any(where in issue and what in issue for issue in issues), f"{where} {what} not in\n{text}"
    assert len(issues) == len(expected), text


def test_source_regions_and_modes_are_checked(tmp_path):
    audio = np.zeros((44_100 * 4, 2), dtype=np.float32)
    sf.write(tmp_path / "src.wav", audio, 44_100)
    path = write(
        tmp_path,
        """
        jobs:
          - name: fill
            prompt: fill
            mode: inpaint
            source: src.wav
            bpm: 120
            regions: ["2.1:3.1", "3.1:9.1"]
          - name: gone
            prompt: more
            mode: continue
            source: missing.wav
            seconds: 2
          - name: weird
            prompt: x
            mode: remix
            seconds: 1
          - name: spill
            prompt: x
            mode: inpaint
            source: src.wav
            regions: [3:5]
        """,
    )
    issues = issues_of(path)
    text = "\n".join(issues)
    assert any(":7: job 1 (fill): regions[1]:" in i and "past the source's end" in i for i in issues), text
    assert any(":11: job 2 (gone): source:" in i and "does not exist" in i for i in issues), text
    assert any(":15: job 3 (weird): mode:" in i for i in issues), text
    # 3:5 unquoted is YAML's sexagesimal number 185; the sheet reads it as written.
    assert any(":21: job 4 (spill): regions[0]:" in i and "'3:5'" in i for i in issues), text
    assert len(issues) == 4, text


def test_loop_tail_output_and_cross_job_rules(tmp_path):
    path = write(
        tmp_path,
        """
        jobs:
          - name: a
            prompt: x
            seconds: 1
            loop: true
            tail: keep
          - name: a
            prompt: y
            seconds: 1
            output: a.mp4
          - name: c
            prompt: z
            seconds: 1
            output: a.wav
          - name: d
            prompt: z
            seconds: 1
            crossfade: 0.9
            loop: true
            root_note: H2
        """,
    )
    issues = issues_of(path)
    text = "\n".join(issues)
    assert any(":6: job 1 (a): tail:" in i for i in issues), text
    assert any(":10: job 2 (a): output:" in i and "extension" in i for i in issues), text
    assert any(":18: job 4 (d): crossfade:" in i for i in issues), text
    assert any(":20: job 4 (d): root_note:" in i for i in issues), text
    # Jobs with problems of their own still clash: job 2 takes job 1's name, job 3 its a.wav.
    assert any(":7: job 2: name: 'a' is also job 1's name" in i for i in issues), text
    assert any(":11: job 3 (c): output: 'a.wav' is also written by job 1" in i for i in issues), text
    assert len(issues) == 6, text


def test_duplicate_names_and_outputs_across_jobs(tmp_path):
    path = write(
        tmp_path,
        """
        jobs:
          - {name: a, prompt: x, seconds: 1}
          - {name: a, prompt: y, seconds: 1, output: other.wav}
          - {name: c, prompt: z, seconds: 1, output: a.wav}
        """,
    )
    issues = issues_of(path)
    assert any(":3: job 2: name:" in i and "unique" in i for i in issues), issues
    assert any(":4: job 3 (c): output:" in i and "also written by job 1" in i for i in issues), issues
    assert len(issues) == 2, issues


def test_vst3_that_does_not_load_is_a_sheet_error(tmp_path):
    (tmp_path / "Fake.vst3").write_bytes(b"not a plugin")
    path = write(
        tmp_path,
        """
        jobs:
          - name: a
            prompt: x
            seconds: 1
            chain:
              - vst3: Fake.vst3
                params: {mix: 0.5}
              - vst3: Nowhere.vst3
        """,
    )
    issues = issues_of(path)
    assert any(":6: job 1 (a): chain[0].vst3:" in i and "did not load" in i for i in issues), issues
    assert any(":8: job 1 (a): chain[1].vst3:" in i and "does not exist" in i for i in issues), issues


def test_csv_rows_and_errors_name_the_row_line(tmp_path):
    path = write(
        tmp_path,
        """
        name,prompt,seconds,bars,bpm,meter,seed,loop,chain
        pad,warm pad,6,,,,0,,
        beat,drums,,2,90,7/8,3,true,"[{type: Reverb, room_size: 0.3}]"
        bad,oops,,2,,,x,,"[{type: Nope}]"
        """,
        name="sheet.csv",
    )
    issues = issues_of(path)
    assert any(":4: job 3 (bad): bars:" in i for i in issues), issues
    assert any(":4: job 3 (bad): seed:" in i for i in issues), issues
    assert any(":4: job 3 (bad): chain[0]" in i and "unknown effect" in i for i in issues), issues
    path.write_text(
        path.read_text().splitlines(keepends=True)[0] + "".join(path.read_text().splitlines(keepends=True)[1:3])
    )
    pad, beat = load_sheet(path).jobs
    assert pad.samples == 6 * 44_100
    assert beat.samples == timebase.bars_to_samples(2, 90, "7/8") and beat.spec.loop and beat.meter.numerator == 7


def test_non_finite_numbers_are_refused(tmp_path):
    path = write(
        tmp_path,
        """
        jobs:
          - {name: a, prompt: x, seconds: .nan}
          - {name: b, prompt: x, bars: 2, bpm: .inf}
          - {name: c, prompt: x, seconds: 1, loop: true, crossfade: .inf, loudness: .nan}
        """,
    )
    issues = issues_of(path)
    assert any(":2: job 1 (a): seconds: must be a finite number" in i for i in issues), issues
    assert any(":3: job 2 (b): bpm: must be a finite number" in i for i in issues), issues
    assert any(":4: job 3 (c): crossfade:" in i for i in issues) and any(
        ":4: job 3 (c): loudness:" in i for i in issues
    )
    assert len(issues) == 4, issues


def test_bad_defaults_are_reported_once_at_their_line(tmp_path):
    path = write(
        tmp_path,
        """
        defaults:
          bpm: fast
          chain: [{type: Reverb, wet: 1}]
        jobs:
          - {name: a, prompt: x, seconds: 1}
          - {name: b, prompt: y, seconds: 2}
        """,
    )
    issues = issues_of(path)
    assert len(issues) == 2, issues
    assert ":2: defaults: bpm: must be a number" in issues[0]
    assert ":3: defaults: chain[0].wet:" in issues[1] and "wet_level" in issues[1]


def test_jobs_keep_their_sheet_numbers_and_bit_depth_may_be_a_number(tmp_path):
    path = write(
        tmp_path, "jobs:\n  - 7\n  - {name: b, prompt: y}\n  - {name: c, prompt: z, seconds: 1, bit_depth: 16}\n"
    )
    issues = issues_of(path)
    assert any(":2: job 1: must be a mapping" in i for i in issues), issues
    assert any(":3: job 2 (b): seconds:" in i for i in issues), issues
    assert len(issues) == 2, issues
    path.write_text("jobs:\n  - {name: c, prompt: z, seconds: 1, bit_depth: 16}\n")
    assert load_sheet(path).jobs[0].spec.bit_depth == "16"


def test_jobs_only_filters_and_rejects_unknown_names(tmp_path):
    path = write(tmp_path, "jobs:\n  - {name: a, prompt: x, seconds: 1}\n  - {name: b, prompt: y, seconds: 1}\n")
    assert [j.name for j in load_sheet(path, only=["b"]).jobs] == ["b"]
    assert any("'c'" in i for i in issues_of(path, only=["c"]))


@pytest.mark.parametrize("name", ["pack.yaml", "simple.csv"])
def test_example_sheets_are_valid(name):
    sheet = load_sheet(Path(__file__).resolve().parents[2] / "examples" / name)
    assert sheet.jobs and all(job.takes for job in sheet.jobs)
    for job in sheet.jobs:
        if job.spec.loop:
            assert job.samples == timebase.bars_to_samples(job.spec.bars, job.spec.bpm, job.meter)


def test_seconds_and_bars_together_is_one_problem(tmp_path):
    """Not also "shorter than one sample" (issue 26 item 15), nor for an inpaint job given a length."""
    save_audio(tmp_path / "song.wav", np.zeros((2, 44_100), dtype=np.float32))
    path = write(
        tmp_path,
        """
        jobs:
          - name: both
            prompt: riser
            seconds: 2
            bars: 4
            bpm: 120
          - name: fix
            mode: inpaint
            prompt: fill
            source: song.wav
            regions: ["0.2:0.4"]
            seconds: 1
        """,
    )
    issues = issues_of(path)
    assert len(issues) == 2, issues
    assert ":5: job 1 (both): bars: give seconds or bars, not both" in issues[0]
    assert ":12: job 2 (fix): seconds: inpaint keeps the source's length" in issues[1]


def test_a_clashing_job_with_problems_of_its_own_reports_the_clash(tmp_path):
    """A duplicate name is reported even when that job also has a bad output (issue 26 item 15)."""
    path = write(
        tmp_path,
        """
        jobs:
          - {name: one, prompt: x, seconds: 1}
          - {name: one, prompt: y, seconds: 1, output: one.mp3}
        """,
    )
    issues = issues_of(path)
    assert len(issues) == 2, issues
    assert ":3: job 2 (one): output: 'one.mp3' has an unknown extension" in issues[0]
    assert ":3: job 2: name: 'one' is also job 1's name" in issues[1]


def test_a_mistyped_field_brings_no_follow_on_problems(tmp_path):
    """A wrong-typed bpm or mode is reported once, not again as a missing tempo or a wrong mode."""
    save_audio(tmp_path / "song.wav", np.zeros((2, 44_100), dtype=np.float32))
    path = write(
        tmp_path,
        """
        jobs:
          - {name: acid, prompt: x, seconds: 1, bpm: fast, root_note: C4}
          - {name: bars, prompt: x, mode: inpaint, bpm: fast, source: song.wav, regions: ["1.1:1.2"]}
          - {name: fix, prompt: x, mode: 3, source: song.wav, regions: ["0.2:0.4"]}
        """,
    )
    issues = issues_of(path)
    assert len(issues) == 3, issues
    assert "job 1 (acid): bpm: must be a number" in issues[0]
    assert "job 2 (bars): bpm: must be a number" in issues[1]
    assert "job 3 (fix): mode: must be text" in issues[2]
