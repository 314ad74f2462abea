"""The invariance benchmark's claims table: every comparison labelled by a seed-paired test, Holm-corrected.

A row of the table is one comparison on one task: a score difference A - B between two columns (a recipe and
its readout), paired by seed, or a learned descriptor coordinate against its starting value 0.5. The rows come
from a table of ``(comparison, recipe A, recipe B)`` (:data:`COMPARISONS`), so every comparison the report prints
is tested and labelled the same way, and recipes outside that table get a row against the amortised model.

The rule, for one table (one modality):

- per row with n >= 2 seeds: the two-sided paired t-test of "mean difference = 0" (the one-sample t-test on the
  per-seed differences, the same p as :func:`scipy.stats.ttest_rel`), and the two one-sided tests (TOST [1]) of
  "|mean difference| >= m" for the row's margin m;
- Holm's step-down adjustment [0] within each family of rows (:data:`FAMILIES`: the paper's claims, the controls,
  each lever beyond the paper, other recipes), once over the difference p-values and once over the TOST p-values,
  so each kind of statement ("differs", "equivalent") holds its family-wise error rate at alpha within a family;
- the label: ``better`` / ``worse`` when the Holm-adjusted difference p < alpha (by the sign of the mean);
  otherwise ``equivalent within ±m`` when the Holm-adjusted TOST p < alpha (the 1 - 2 alpha interval lies
  inside [-m, +m], Holm-adjusted); otherwise ``not shown different``. A row with fewer than 2 seeds is
  ``not enough seeds``, has no test and is not counted in the family;
- the interval stored and printed with a row is the unadjusted 95 % t-interval, for size only: the label follows
  the Holm decision, so an interval that excludes 0 can still read ``not shown different``.

Margins (:data:`MARGINS`) are per metric kind. Top-1 accuracy and R²: 0.02, about one standard error of a single
score on the benchmark's test split (a binomial accuracy over 500 test inputs has a standard error of 0.013 at
0.9 and 0.022 at 0.5), so a smaller gap is below what one test draw resolves. Descriptor coordinates: 0.05, a
twentieth of their [0, 1] range.

- [0] Holm, A simple sequentially rejective multiple test procedure, Scandinavian Journal of Statistics 6, 1979
- [1] Schuirmann, A comparison of the two one-sided tests procedure and the power approach for assessing the
  equivalence of average bioavailability, Journal of Pharmacokinetics and Biopharmaceutics 15, 1987
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from benchmarks.invariance.tasks import EXPECTED

#: Equivalence margin per metric kind (``descriptor``: a learned coordinate against 0.5).
MARGINS: dict[str, float] = {"top1": 0.02, "mean_per_class": 0.02, "r2": 0.02, "descriptor": 0.05}
ALPHA = 0.05
#: Rows of the claims table per task: (family, comparison, recipe A, recipe B). ``BEST`` stands for the specialised
#: baseline (role ``baseline``, not ``plain_default``) with the highest mean score on that task; picking it on
#: the test means favours the baselines. A row is left out when one of its recipes is missing.
BEST = "<best specialist>"
COMPARISONS: tuple[tuple[str, str, str, str], ...] = (
    ("paper", "vs plain default", "amortised", "plain_default"),
    ("paper", "vs best specialist", "amortised", BEST),
    ("controls", "capacity control", "amortised", "plain_wide"),
    ("controls", "mix control", "amortised", "plain_mix"),
    ("controls", "budget control", "amortised_steps", "amortised"),
    ("controls", "budget vs best specialist", "amortised_steps", BEST),
    ("lever: mixed", "mixed vs amortised", "amortised_mixed", "amortised"),
    ("lever: mixed", "mixed vs plain default", "amortised_mixed", "plain_default"),
    ("lever: mixed", "mixed vs best specialist", "amortised_mixed", BEST),
    ("lever: from plain", "from plain vs amortised", "amortised_from_plain", "amortised"),
    ("lever: from plain", "from plain vs plain 2x steps", "amortised_from_plain", "plain_default_2x"),
    ("lever: from plain", "from plain vs best specialist", "amortised_from_plain", BEST),
)
#: The families Holm's correction runs over, one at a time: the paper's claims (the amortised model against the
#: plain default and the best specialist, and its learned descriptors), the controls, each of the two levers
#: beyond the paper (one hypothesis each), and any other recipe against the amortised model.
FAMILIES = ("paper", "controls", "lever: mixed", "lever: from plain", "other")
NOT_ENOUGH = "not enough seeds"
#: Encoders whose learned descriptor is a row of the table (the paper's claim is about the amortised model; the
#: controls' descriptors are in the report's descriptor table, untested, so they do not dilute the correction).
DESCRIPTOR_ENCODERS = ("amortised",)


def paired_test(differences: Sequence[float], margin: float) -> dict[str, Any]:
    """Mean, 95 % t-interval, two-sided t-test p and TOST p of per-seed paired differences.

    Args:
        differences: One value per seed (A - B at that seed).
        margin: Equivalence margin m of the TOST ("|mean| >= m" rejected means equivalent within ±m).

    Returns:
        ``n``, ``mean``, ``ci`` (None below 2 seeds), ``p`` and ``p_equivalence`` (None below 2 seeds).
    """
    x = np.asarray(differences, dtype=float)
    n = int(x.size)
    if n < 2:
        return {"n": n, "mean": float(x.mean()) if n else None, "ci": None, "p": None, "p_equivalence": None}
    mean, df = float(x.mean()), n - 1
    se = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(0.975, df)) * se
    if se == 0.0:  # identical differences: the limits of the tests as the spread goes to 0
        p, p_eq = (0.0 if mean != 0.0 else 1.0), (0.0 if abs(mean) < margin else 1.0)
    else:
        p = float(2.0 * stats.t.sf(abs(mean) / se, df))
        p_eq = float(max(stats.t.sf((mean + margin) / se, df), stats.t.cdf((mean - margin) / se, df)))
    return {"n": n, "mean": mean, "ci": [mean - half, mean + half], "p": p, "p_equivalence": p_eq}


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values: the i-th smallest of k times (k - i) (i from 0), made monotone, capped at 1.

    ``None`` entries (rows without a test) stay ``None`` and do not count in k.
    """
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    k = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (k - rank) * p))
        out[i] = running
    return out


def label(row: Mapping[str, Any], alpha: float = ALPHA, reference: float | None = None) -> str:
    """The label of a tested row (see the module docstring); ``reference`` names the value a descriptor is
    compared with (0.5), which changes the words, not the rule."""
    if row["n"] < 2:
        return NOT_ENOUGH
    margin = f"±{row['margin']:g}"
    if row["p_holm"] < alpha:
        if reference is None:
            return "better" if row["mean"] > 0 else "worse"
        return f"above {reference:g}" if row["mean"] > 0 else f"below {reference:g}"
    if row["p_equivalence_holm"] < alpha:
        return f"equivalent within {margin}" if reference is None else f"within {margin} of {reference:g}"
    return "not shown different" if reference is None else f"not shown different from {reference:g}"


def main_readout(results: Mapping[str, Mapping[Any, dict]], name: str, task: str) -> str:
    """``learned`` (the gradient route) for a conditioned encoder, else ``fixed``."""
    return "learned" if "learned" in next(iter(results[name].values()))["scores"][task] else "fixed"


def _score(result: Mapping[str, Any], task: str, readout: str) -> float:
    return float(result["scores"][task][readout]["score"])


def comparisons(task: str, results: Mapping[str, Mapping[Any, dict]],
                roles: Mapping[str, str]) -> list[tuple[str, str, tuple[str, str], tuple[str, str]]]:
    """The score rows of one task: ``(family, comparison, (recipe A, readout), (recipe B, readout))``.

    :data:`COMPARISONS` first (with ``BEST`` resolved), then ``amortised`` against every recipe they leave out
    (the specialists count as covered by the best one).
    """
    specialists = [n for n in results if roles.get(n) == "baseline" and n != "plain_default"]
    best = max(specialists, default=None, key=lambda n: np.mean(
        [_score(r, task, main_readout(results, n, task)) for r in results[n].values()]))
    out, used = [], {"amortised", *specialists}
    for family, name, a, b in COMPARISONS:
        b = best if b == BEST else b
        if a in results and b in results:
            out.append((family, name, (a, main_readout(results, a, task)), (b, main_readout(results, b, task))))
            used |= {a, b}
    if "amortised" in results:
        amortised = ("amortised", main_readout(results, "amortised", task))
        out += [("other", f"vs {n}", amortised, (n, main_readout(results, n, task))) for n in results
                if n not in used]
    return out


def claims(modality: str, results: Mapping[str, Mapping[Any, dict]], roles: Mapping[str, str],
           metrics: Mapping[str, str], tasks: Sequence[str], margins: Mapping[str, float] | None = None,
           alpha: float = ALPHA) -> dict[str, Any]:
    """The claims table of one modality, every row tested and labelled (rule in the module docstring).

    Args:
        modality: ``vision`` or ``audio`` (which descriptor coordinate each task should move).
        results: Per recipe, per seed, the evaluation (``scores[task][readout]["score"]``; conditioned encoders
            also ``scores[task]["learned"]["invariance_by_name"]``).
        roles: Recipe name -> ``amortised``, ``baseline`` or ``control``.
        metrics: Task -> metric kind (the key of the margin).
        tasks: The tasks of the table, in order.
        margins: Equivalence margins per metric kind; :data:`MARGINS` where not given.
        alpha: Family-wise error rate of each kind of statement.

    Returns:
        ``alpha``, ``correction``, ``margins``, ``family_size``, ``seeds`` and ``rows``: per row ``task``,
        ``comparison``, ``a``, ``b``, ``metric``, ``seeds``, ``values``, ``n``, ``mean``, ``ci``, ``p``, ``p_holm``,
        ``p_equivalence``, ``p_equivalence_holm``, ``margin`` and ``label`` (descriptor rows also ``encoder``,
        ``coordinate``, ``expected`` and ``as_expected``).
    """
    margins = {**MARGINS, **(margins or {})}
    rows: list[dict[str, Any]] = []
    for task in tasks:
        expected = EXPECTED[modality].get(task)
        for name, seeds in results.items():
            first = next(iter(seeds.values()))["scores"].get(task, {})
            if expected is None or name not in DESCRIPTOR_ENCODERS or "learned" not in first:
                continue
            coordinate, side = expected
            by_seed = {s: float(r["scores"][task]["learned"]["invariance_by_name"][coordinate]) for s, r in
                       seeds.items()}
            rows.append({"task": task, "family": "paper", "comparison": f"descriptor {coordinate} ({side} expected)",
                         "a": f"{name}:learned {coordinate}", "b": "0.5", "metric": "descriptor", "encoder": name,
                         "coordinate": coordinate, "expected": side, "seeds": sorted(by_seed),
                         "values": [v - 0.5 for _, v in sorted(by_seed.items())], "margin": margins["descriptor"]})
        for family, name, (recipe_a, readout_a), (recipe_b, readout_b) in comparisons(task, results, roles):
            seeds = sorted(set(results[recipe_a]) & set(results[recipe_b]))
            values = [_score(results[recipe_a][s], task, readout_a) - _score(results[recipe_b][s], task, readout_b)
                      for s in seeds]
            rows.append({"task": task, "family": family, "comparison": name, "a": f"{recipe_a}:{readout_a}",
                         "b": f"{recipe_b}:{readout_b}", "metric": metrics[task], "seeds": seeds, "values": values,
                         "margin": margins[metrics[task]]})
    for row in rows:
        row |= paired_test(row["values"], row["margin"])
    for family in FAMILIES:
        members = [r for r in rows if r["family"] == family]
        for key in ("p", "p_equivalence"):
            for row, adjusted in zip(members, holm([r[key] for r in members]), strict=True):
                row[f"{key}_holm"] = adjusted
    for row in rows:
        descriptor = row["metric"] == "descriptor"
        row["label"] = label(row, alpha, reference=0.5 if descriptor else None)
        if descriptor:
            row["as_expected"] = row["label"] == ("below 0.5" if row["expected"] == "low" else "above 0.5")
    sizes = {f: sum(r["p"] is not None for r in rows if r["family"] == f) for f in FAMILIES}
    sizes = {f: k for f, k in sizes.items() if k}
    return {"alpha": alpha, "correction": "Holm within each family of this table (" + ", ".join(
                f"{f}: {k} tested rows" for f, k in sizes.items()) + "), separately for the difference and the "
            "equivalence (TOST) p-values", "margins": margins, "family_size": sizes,
            "seeds": sorted({s for r in rows for s in r["seeds"]}, key=str), "rows": rows}


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def markdown_verdict(modality: str, table: Mapping[str, Any]) -> str:
    """The claims at a glance: one row per comparison, one column per task, each cell the computed label with
    the mean difference (descriptor rows: the learned coordinate's mean)."""
    tasks = list(dict.fromkeys(r["task"] for r in table["rows"]))
    keys = list(dict.fromkeys((r["family"], r["comparison"] if r["metric"] != "descriptor" else "learned descriptor")
                              for r in table["rows"]))
    cells: dict[tuple[str, str, str], str] = {}
    for r in table["rows"]:
        comparison = r["comparison"] if r["metric"] != "descriptor" else "learned descriptor"
        if r["mean"] is None:
            text = r["label"]
        elif r["metric"] == "descriptor":
            text = f"{r['coordinate']} {r['mean'] + 0.5:.2f}: {r['label']} ({r['expected']} expected)"
        else:
            text = f"{r['label']} ({r['mean']:+.3f})"
        cells[r["family"], comparison, r["task"]] = text
    lines = [f"### {modality}: the claims at a glance", "",
             f"Labels from the claims table below (n = {len(table['seeds'])} seeds; {table['correction']}).", "",
             "| family | comparison | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for family, comparison in keys:
        lines.append(f"| {family} | {comparison} | "
                     + " | ".join(cells.get((family, comparison, t), "–") for t in tasks) + " |")
    return "\n".join(lines) + "\n"


def markdown_claims(modality: str, table: Mapping[str, Any]) -> str:
    """The claims table with its rule: margins, correction, alpha and seeds stated above the rows."""
    kinds = dict.fromkeys(r["metric"] for r in table["rows"])
    margins = ", ".join(f"{k} ±{table['margins'][k]:g}" for k in kinds)
    alpha = table["alpha"]
    lines = [f"### {modality}: claims (every comparison tested; labels follow Holm-corrected paired tests)", "",
             f"Seeds: {', '.join(str(s) for s in table['seeds'])} (n per row: the seeds both sides have). Each row is "
             "A - B paired by seed (a descriptor row: the learned coordinate - 0.5): mean [95 % t-interval, "
             "unadjusted, for size], p of the two-sided paired t-test, and p of the equivalence test (TOST) within "
             f"±m. Correction: {table['correction']} (Holm 1979), at alpha = {alpha:g}. Label: `better` / `worse` "
             f"when the Holm-adjusted p < {alpha:g}, by the sign of the mean; else `equivalent within ±m` when the "
             f"Holm-adjusted TOST p < {alpha:g}; else `not shown different`; fewer than 2 seeds: `not enough seeds`. "
             f"The label follows the Holm decision, not the unadjusted interval. Margins m: {margins} (about one "
             "standard error of a single score on the test split; a twentieth of the descriptor's [0, 1] range).",
             "", "| family | task | comparison | A | B | n | mean [95 % interval] | p | Holm p | TOST p (Holm) | m "
             "| label |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        ci = f" [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]" if r["ci"] else ""
        mean = "–" if r["mean"] is None else f"{r['mean']:+.3f}{ci}"
        lines.append(f"| {r.get('family', '')} | {r['task']} "
                     f"| {r['comparison']} | {r['a']} | {r['b']} | {r['n']} | {mean} | {_p(r['p'])} | "
                     f"{_p(r['p_holm'])} | {_p(r['p_equivalence_holm'])} | ±{r['margin']:g} | {r['label']} |")
    return "\n".join(lines) + "\n"


__all__ = ["ALPHA", "BEST", "COMPARISONS", "DESCRIPTOR_ENCODERS", "FAMILIES", "MARGINS", "NOT_ENOUGH", "claims",
           "comparisons", "holm", "label", "main_readout", "markdown_claims", "markdown_verdict", "paired_test"]
