"""The report of ``python -m benchmarks.pretrain_throughput``: end-to-end rows compared, the goal, the printed tables.

Kept apart from the measurements so that the script reads as what it times; nothing here runs a model.
"""

from __future__ import annotations


def compare_end_to_end(rows: list[dict], model_only: dict[str, dict], plain_model: str) -> None:
    """Add ``time_ratio_vs_plain`` (plain images/s over the row's, same workers) and ``fraction_of_model_only``
    (how much of the model-only speed survives end to end) to each end-to-end row, in place."""
    plain = {r["num_workers"]: r["images_per_s"] for r in rows if r["model"] == plain_model}
    for row in rows:
        if row["num_workers"] in plain:
            row["time_ratio_vs_plain"] = round(plain[row["num_workers"]] / row["images_per_s"], 3)
        if row["model"] in model_only:
            row["fraction_of_model_only"] = round(row["images_per_s"] / model_only[row["model"]]["images_per_s"], 3)
        else:
            row["fraction_of_model_only"] = None


def goal_of(rows: list[dict], default_model: str, goal: float) -> dict | None:
    """Whether augmentation is not the bottleneck with 2 workers (``data_share <= goal``); ``None`` without that
    row."""
    row = next((r for r in rows if r["model"] == default_model and r["num_workers"] == 2), None)
    if row is None:
        return None
    return {
        "text": f"augmentation not the bottleneck with 2 workers: data_share <= {goal}",
        "data_share": row["data_share"],
        "data_share_excl_epoch_start": row["data_share_excl_epoch_start"],
        "met": row["data_share"] <= goal,
        "met_excl_epoch_start": (row["data_share_excl_epoch_start"] or 0.0) <= goal,
    }


def print_tables(report: dict) -> None:
    if "augmentation" in report:
        print_augmentation(report)
    if "model" in report:
        print_model(report)
    if "end_to_end" in report:
        print_end_to_end(report)
    if "goal" in report:
        goal = report["goal"]
        print(f"\ngoal ({goal['text']}): {'met' if goal['met'] else 'NOT met'} (data_share {goal['data_share']:.3f}, "
              f"{goal['data_share_excl_epoch_start']} without epoch starts)")


def print_augmentation(report: dict) -> None:
    print("\n(a) augmentation only (no model)")
    print(f"{'workers':>8}{'threads':>8}{'views/s':>10}{'steady':>10}{'epoch start s':>22}")
    for row in report["augmentation"]["rows"]:
        starts = ", ".join(f"{t:.2f}" for t in row["epoch_start_s"])
        print(f"{row['num_workers']:>8}{row['main_threads']:>8}{row['views_per_s']:>10.0f}"
              f"{row['steady_views_per_s'] or 0:>10.0f}{starts:>22}")


def print_model(report: dict) -> None:
    print("\n(b) model only (pre-made batches)")
    print(f"{'model':<22}{'params M':>10}{'step s':>9}{'img/s':>8}{'views/s':>9}{'vs plain':>10}")
    for name, row in report["model"]["rows"].items():
        print(f"{name:<22}{row['params'] / 1e6:>10.2f}{row['median_step_s']:>9.3f}{row['images_per_s']:>8.1f}"
              f"{row['views_per_s']:>9.1f}{row['time_ratio_vs_plain']:>9.2f}x")


def print_end_to_end(report: dict) -> None:
    print("\n(c) end to end (vision.pretrain.main)")
    print(f"{'model':<22}{'workers':>8}{'img/s':>8}{'data share':>12}{'excl ep.':>10}{'max wait s':>11}"
          f"{'vs plain':>10}{'vs model':>10}")
    for row in report["end_to_end"]["rows"]:
        excl = row["data_share_excl_epoch_start"]
        ratio = row.get("time_ratio_vs_plain")
        fraction = row.get("fraction_of_model_only")
        print(f"{row['model']:<22}{row['num_workers']:>8}{row['images_per_s']:>8.1f}{row['data_share']:>12.3f}"
              f"{excl if excl is not None else float('nan'):>10.3f}{row['max_data_time_s']:>11.2f}"
              f"{(f'{ratio:.2f}x' if ratio else '-'):>10}{fraction if fraction is not None else '-':>10}")
