"""The claims table: paired tests, Holm's adjustment, labels and the rows of a results dict, against hand-computed
values and scipy's own tests."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from benchmarks.invariance import claims as c

LABELS = {"better", "worse", "not shown different", "not enough seeds", "equivalent within ±0.02"}


def _alone(values: list[float], margin: float = 0.02) -> str:
    """The label of one row that is its own family (Holm over one test leaves p as it is)."""
    row = c.paired_test(values, margin) | {"margin": margin}
    row["p_holm"], row["p_equivalence_holm"] = row["p"], row["p_equivalence"]
    return c.label(row)


def test_labels_of_hand_made_differences() -> None:
    assert _alone([0.10, 0.12, 0.11, 0.13, 0.12]) == "better"  # mean 0.116, sd 0.011: t = 23
    assert _alone([-0.10, -0.12, -0.11, -0.13, -0.12]) == "worse"
    assert _alone([0.001, -0.001, 0.0, 0.002, -0.002]) == "equivalent within ±0.02"  # 90 % interval ±0.0015
    assert _alone([0.3, -0.2, 0.1]) == "not shown different"  # mean 0.067, 95 % interval ±0.62
    assert _alone([0.5]) == "not enough seeds" and _alone([]) == "not enough seeds"
    # mean 0 but 3 seeds with sd 0.02: the 90 % interval (±2.92 x 0.0115 = ±0.034) is not inside ±0.02
    assert _alone([0.0, 0.02, -0.02]) == "not shown different"
    assert _alone([0.0, 0.01, -0.01]) == "equivalent within ±0.02"  # sd 0.01: ±0.017, inside
    # identical differences: the limits of the tests
    assert _alone([0.05, 0.05, 0.05]) == "better" and _alone([0.0, 0.0]) == "equivalent within ±0.02"


def test_paired_test_matches_scipy() -> None:
    a, b = np.array([0.61, 0.72, 0.80, 0.66]), np.array([0.55, 0.70, 0.71, 0.68])
    out = c.paired_test(a - b, margin=0.05)
    assert out["n"] == 4 and out["mean"] == pytest.approx(np.mean(a - b))
    assert out["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    tost = max(stats.ttest_1samp(a - b, -0.05, alternative="greater").pvalue,
               stats.ttest_1samp(a - b, 0.05, alternative="less").pvalue)
    assert out["p_equivalence"] == pytest.approx(tost)
    half = stats.t.ppf(0.975, 3) * np.std(a - b, ddof=1) / 2.0
    np.testing.assert_allclose(out["ci"], [np.mean(a - b) - half, np.mean(a - b) + half])


def test_holm_against_a_hand_computed_example() -> None:
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (kept monotone)
    np.testing.assert_allclose(c.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert c.holm([0.01, None, 0.02]) == [pytest.approx(0.02), None, pytest.approx(0.02)]  # k = 2: None not counted
    assert c.holm([0.6, 0.5]) == [1.0, 1.0]  # capped at 1
    assert c.holm([]) == []


def _evaluation(scores: dict[str, float], invariance: dict[str, float] | None = None) -> dict:
    if invariance is None:
        return {"scores": {t: {"fixed": {"score": v}} for t, v in scores.items()}}
    routes = ("learned", "grid_refine")
    return {"scores": {t: {r: {"score": v, "invariance_by_name": invariance} for r in routes}
                       for t, v in scores.items()}}


def _results() -> dict:
    """Audio-like results: the amortised model gains 0.10-0.14 on timbre over every plain encoder, 3 seeds;
    amortised_steps has one seed; amortised_g2 is a recipe outside the comparison table."""
    def plain(level: float) -> dict:
        return {s: _evaluation({"timbre": level + 0.01 * s, "pitch": 0.8 + 0.1 * (-1) ** s}) for s in range(3)}

    return {
        "amortised": {s: _evaluation({"timbre": 0.6 + 0.02 * s, "pitch": 0.85}, {"pitch_shift": 0.2 + 0.01 * s})
                      for s in range(3)},
        "plain_default": plain(0.48), "plain_spectral": plain(0.45), "plain_temporal": plain(0.50),
        "plain_wide": plain(0.47), "plain_mix": plain(0.46),
        "amortised_steps": {0: _evaluation({"timbre": 0.7, "pitch": 0.9}, {"pitch_shift": 0.1})},
        "amortised_g2": {s: _evaluation({"timbre": (0.58, 0.59, 0.605)[s], "pitch": 0.84}, {"pitch_shift": 0.3})
                         for s in range(3)},
    }


def _table(results: dict) -> dict:
    roles = {"amortised": "amortised", "plain_default": "baseline", "plain_spectral": "baseline",
             "plain_temporal": "baseline", "plain_wide": "control", "plain_mix": "control",
             "amortised_steps": "control", "amortised_g2": "control"}
    return c.claims("audio", results, roles, {"timbre": "top1", "pitch": "r2"}, ["timbre", "pitch"])


def test_every_comparison_of_a_results_dict_gets_a_label() -> None:
    table = _table(_results())
    rows = {(r["task"], r["comparison"]): r for r in table["rows"]}
    expected = ["descriptor pitch_shift (high expected)", "vs plain default", "vs best specialist",
                "capacity control", "mix control", "budget control", "budget vs best specialist", "vs amortised_g2"]
    assert [r["comparison"] for r in table["rows"] if r["task"] == "timbre"] == expected
    assert rows["timbre", "vs best specialist"]["b"] == "plain_temporal:fixed"  # highest timbre mean
    assert rows["timbre", "budget control"]["a"] == "amortised_steps:learned"
    for row in table["rows"]:
        for key in ("n", "mean", "ci", "p", "p_holm", "p_equivalence_holm", "margin", "label", "seeds"):
            assert key in row
        assert row["label"] in LABELS or row["metric"] == "descriptor"
        assert "at_least_as_good" not in row
    # one seed: no test, not counted in the family
    budget = rows["timbre", "budget control"]
    assert budget["label"] == "not enough seeds" and budget["p"] is None and budget["p_holm"] is None
    assert table["family_size"] == {"paper": 6, "controls": 4, "other": 2}
    assert sum(table["family_size"].values()) == sum(r["n"] >= 2 for r in table["rows"])
    assert rows["pitch", "descriptor pitch_shift (low expected)"]["margin"] == 0.05
    assert rows["pitch", "vs plain default"]["margin"] == 0.02 and table["alpha"] == 0.05


def test_holm_decides_the_label() -> None:
    table = _table(_results())
    rows = {(r["task"], r["comparison"]): r for r in table["rows"]}
    gain = rows["timbre", "vs plain default"]  # differences 0.12, 0.13, 0.14: p = 0.002 alone
    assert gain["p"] == pytest.approx(stats.ttest_1samp([0.12, 0.13, 0.14], 0.0).pvalue)
    assert gain["p"] < gain["p_holm"] < 0.05 and gain["label"] == "better"
    for family in c.FAMILIES:  # Holm runs within each family, never across families
        tested = [r for r in table["rows"] if r["p"] is not None and r["family"] == family]
        assert [r["p_holm"] for r in tested] == pytest.approx(c.holm([r["p"] for r in tested]))
    # differences 0.02, 0.03, 0.035 (p = 0.023): better alone; in its family of 2 beside a p = 0 row, Holm
    # multiplies it by 1 and it stays better
    g2 = rows["timbre", "vs amortised_g2"]
    np.testing.assert_allclose(g2["values"], [0.02, 0.03, 0.035])
    assert g2["family"] == "other" and _alone(g2["values"]) == "better"
    assert g2["p_holm"] == pytest.approx(g2["p"]) and g2["label"] == "better"
    assert rows["pitch", "vs amortised_g2"]["label"] == "better"  # 0.01 at every seed: no spread, p = 0
    # the same differences among 12 rows of one family: no longer better
    assert c.holm([g2["p"]] + [0.0] * 11)[0] == pytest.approx(g2["p"]) and c.holm([g2["p"]] * 12)[0] >= 0.05
    assert rows["pitch", "descriptor pitch_shift (low expected)"]["label"] == "below 0.5"
    assert rows["pitch", "descriptor pitch_shift (low expected)"]["as_expected"]
    assert rows["timbre", "descriptor pitch_shift (high expected)"]["label"] == "below 0.5"
    assert not rows["timbre", "descriptor pitch_shift (high expected)"]["as_expected"]


def test_markdown_states_margin_correction_and_seeds() -> None:
    table = _table(_results())
    text = c.markdown_claims("audio", table)
    assert "top1 ±0.02" in text and "r2 ±0.02" in text and "descriptor ±0.05" in text
    assert "Holm within each family of this table (paper: 6 tested rows, controls: 4 tested rows, other: 2" in text
    assert "alpha = 0.05" in text and "Seeds: 0, 1, 2" in text
    assert "| paper | timbre | vs plain default | amortised:learned | plain_default:fixed | 3 | +0.130 [" in text
    assert text.count("| timbre |") == 8 and "not enough seeds" in text


def test_report_from_a_results_json_alone(tmp_path: Path) -> None:
    from benchmarks.invariance import benchmark as invariance_benchmark

    stored = tmp_path / "stored" / "invariance_audio.json"
    stored.parent.mkdir()
    stored.write_text(json.dumps({"modality": "audio", "results": _results()}))  # seeds become strings
    with pytest.raises(SystemExit):  # never into the stored JSON's own folder
        invariance_benchmark.main(["--from-json", str(stored), "--output-dir", str(stored.parent)])
    out = invariance_benchmark.main(["--from-json", str(stored), "--output-dir", str(tmp_path / "out")])
    written = json.loads((tmp_path / "out" / "invariance_audio.json").read_text())
    assert written["summary"]["claims"]["family_size"] == {"paper": 6, "controls": 4, "other": 2}
    assert out["summary"]["claims"]["family_size"] == written["summary"]["claims"]["family_size"]
    assert written["regenerated"]["from"] == str(stored)
    markdown = (tmp_path / "out" / "invariance_audio.md").read_text()
    assert "| timbre | vs plain default |" in markdown and "better" in markdown
    assert (tmp_path / "out" / "invariance_audio_scores.png").stat().st_size > 0


def test_the_inputs_rule_is_reported_only_when_every_evaluation_recorded_it() -> None:
    from benchmarks.invariance.benchmark import shared_inputs
    from benchmarks.invariance.tasks import input_rule

    rule = input_rule(600, 300, 1200)
    assert rule["test_pool"] == 1200 and rule["test_pool_items"] == "600..1799"
    assert shared_inputs({"a": {0: {"inputs": rule}, 1: {"inputs": rule}}}) == rule
    assert shared_inputs({"a": {0: {"inputs": rule}}, "b": {0: {}}}) is None  # an evaluation from before the draws
