"""install_default and the model card: Targets judge every seed given, the shipped card is what the
template and the kept eval reports render, students install with the sampler asked."""

from pathlib import Path

from training.install_default import metrics_markdown, pooled


def _report(seed: int, key: tuple[int, int], tempo: tuple[int, int]) -> dict:
    def rate(count, judged):
        return {"rate": count / judged, "count": count, "judged": judged}

    return {
        "settings": {"split": "test", "items": 37, "inpaint_items": 4, "seeds": 4, "max_seconds": 10.0, "seed": seed},
        "clips": [{}] * 37,
        "sections": {"adherence": {"summary": {"key": rate(*key), "tempo": rate(*tempo)}}},
    }


def test_targets_pool_the_seeds():
    first, others = _report(0, (8, 18), (15, 24)), [_report(100, (9, 18), (13, 24)), _report(200, (8, 18), (23, 24))]
    assert pooled([first, *others], "adherence", "tempo") == {"rate": 51 / 72, "count": 51, "judged": 72}
    alone = metrics_markdown(first)
    assert "| tempo accuracy (within 4 %) | >= 70 % | 62 % (15/24) | no |" in alone
    together = metrics_markdown(first, others)
    assert (
        "| tempo accuracy (within 4 %) | >= 70 % | 71 % (51/72) over seeds 0, 100, 200 | yes |" in together
    )  # seed 0's own rate is in the adherence table
    assert "| key accuracy | >= 70 % | 46 % (25/54) over seeds 0, 100, 200 | no |" in together
    many = [_report(seed, (9, 18), (13, 24)) for seed in range(100, 1000, 100)]
    assert "| key accuracy | >= 70 % | 49 % (89/180) over 10 seeds (0, 100, ..., 900) | no |" in metrics_markdown(
        first, many
    )


def _real_report() -> dict:
    def scores(mel, stft):
        return {"log_mel_l1": mel, "mrstft": stft, "si_sdr_db": -30.0}

    return {
        "settings": {"items": 3, "max_seconds": 10.0},
        "clips": [{}] * 3,
        "sections": {
            "autoencoder": {
                "summary": scores(0.5, 2.9),
                "by_kind": {"loop": {**scores(0.7, 3.5), "clips": 1}, "music": {**scores(0.4, 2.6), "clips": 2}},
            },
            "opus": {
                "summary": {"24kbps": scores(0.28, 1.4)},
                "by_kind": {"loop": {"24kbps": scores(0.4, 1.6)}, "music": {"24kbps": scores(0.22, 1.3)}},
            },
        },
    }


def test_real_recordings_get_their_table_and_target_row():
    card = metrics_markdown(_report(0, (13, 18), (15, 24)), real=_real_report())
    assert "| all | 3 | 0.5 | 0.28 | 2.9 | 1.4 |" in card
    assert "| loop | 1 | 0.7 | 0.4 | 3.5 | 1.6 |" in card and "| music | 2 | 0.4 | 0.22 | 2.6 | 1.3 |" in card
    assert "| the same on the real recordings | <= 0.28 | 0.5 | no |" in card
    assert "real recordings" not in metrics_markdown(_report(0, (13, 18), (15, 24)))


def test_install_metrics_keeps_seeds_speed_and_real_set_it_is_not_given_again(tmp_path):
    import json

    from training.install_default import install_metrics

    dest = tmp_path / "model"
    dest.mkdir()
    seeds = [_report(100, (9, 18), (13, 24))]
    (dest / "eval-seeds.json").write_text(json.dumps(seeds))
    speed = "\n### Speed (measured)\n\n| 4 bars | 3.42 s |\n"
    (dest / "MODEL_CARD.md").write_text("# card\n\nrecipe\n\n## Metrics\nold numbers\n" + speed)
    report, real = tmp_path / "eval.json", tmp_path / "real.json"
    report.write_text(json.dumps(_report(0, (13, 18), (15, 24))))
    real.write_text(json.dumps(_real_report()))
    install_metrics(report, dest, real_path=real)
    card = (dest / "MODEL_CARD.md").read_text()
    assert card.startswith("# card\n\nrecipe\n\n## Metrics\n") and "old numbers" not in card
    assert card.endswith(speed) and "over seeds 0, 100" in card and "| all | 3 | 0.5 | 0.28 |" in card
    assert json.loads((dest / "eval-real.json").read_text()) == _real_report()
    install_metrics(dest / "eval.json", dest)  # from what is kept next to the weights alone
    assert (dest / "MODEL_CARD.md").read_text() == card


def test_a_student_is_installed_with_the_sampler_steps_and_guidance_asked(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    import json

    from sa3core.pipeline import Pipeline
    from training.install_default import main

    monkeypatch.chdir(tmp_path)  # the card reads the recipe's logs from here; none are
    dest = tmp_path / "installed"
    assert main([str(tiny_model_dir), str(dest), "--student", "dpmpp", "8", "2", "--cfg-rescale", "0.7"]) == 0
    settings = json.loads((dest / "model.json").read_text())
    assert (settings["sampler"], settings["steps"], settings["cfg"], settings["cfg_rescale"]) == ("dpmpp", 8, 2.0, 0.7)
    assert Pipeline.load(dest).generate("soft pad", 8192, seed=0).shape == (1, 2, 8192)
    assert "Sampling: dpmpp, 8 steps, guidance 2" in (dest / "MODEL_CARD.md").read_text()

    for bad, message in (
        (["--student", "nope", "8", "1"], "unknown sampler 'nope'"),
        (["--student", "dpmpp", "eight", "1"], "invalid literal"),
        (["--student", "dpmpp", "0", "1"], "needs 1 step or more"),
        (["--student", "dpmpp", "8", "1", "--teacher-cfg", "3"], "exclude each other"),
    ):
        assert main([str(tiny_model_dir), str(tmp_path / "refused"), *bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "refused" / "model.json").exists()  # nothing installed


def _install_facts_of(card: str) -> tuple[dict, dict]:
    """What the shipped card recorded of its install (the recipe's logs are not in the repo): the
    training times, the corpus and its licences, the commit, the parameter counts."""
    import re

    times = re.search(r"^Minutes of wall clock .*?: (.*)\.$", card, re.M).group(1)
    data = card.partition("## Data\n")[2].partition("\n## Limits")[0]
    corpus, _, licences = data.partition("\n\n")
    facts = {
        "times": [
            (name, round(float(minutes) * 60)) for name, minutes in (t.rsplit(" ", 1) for t in times.split(", "))
        ],
        "corpus": corpus,
        "licences": licences,
        "commit": re.search(r"^Built from commit `(\w+)`\.$", card, re.M).group(1),
    }
    autoencoder, dit = (float(m) * 1e6 for m in re.findall(r"^\| .* \| ([\d.]+) M \|$", card, re.M))
    return facts, {"autoencoder": autoencoder, "dit": dit}


def test_the_shipped_card_is_what_the_template_and_the_kept_reports_render(tmp_path):
    """Above Metrics: model_card() with the install's own facts; Metrics: install_metrics from the
    eval reports kept next to the weights. The card is for users, so it also stays short."""
    import json
    import shutil

    from training.install_default import install_metrics, model_card

    shipped = Path(__file__).resolve().parents[2] / "sa3core" / "assets" / "default"
    card = (shipped / "MODEL_CARD.md").read_text()
    settings = json.loads((shipped / "model.json").read_text())
    facts, params = _install_facts_of(card)
    assert model_card(settings, params, facts).partition("## Metrics")[0] == card.partition("## Metrics")[0]

    for name in ("MODEL_CARD.md", "eval.json", "eval-seeds.json", "eval-real.json"):
        shutil.copyfile(shipped / name, tmp_path / name)
    install_metrics(tmp_path / "eval.json", tmp_path)
    assert (tmp_path / "MODEL_CARD.md").read_text() == card
    assert len(card.encode()) <= 8_200, "the card says what a user needs; how it came to be goes to docs/notes/"
