"""The model card's Targets table judges adherence on every seed it is given, not one."""

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
        "| tempo accuracy (within 4 %) | >= 70 % | 62 % (15/24) at seed 0; 71 % (51/72) over seeds 0, 100, 200 | yes |"
        in together
    )
    assert "| key accuracy | >= 70 % | 44 % (8/18) at seed 0; 46 % (25/54) over seeds 0, 100, 200 | no |" in together
