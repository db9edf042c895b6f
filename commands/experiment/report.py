"""The experiment's table, verdicts on SimVTP's claims, and plots, from the per-run results.

Spread is the sample standard deviation over seeds. Settings are compared seed by seed: a
seed is the same initialisation, data order and mask draws in every setting, so what one seed
adds to all of them cancels in the per-seed differences. One setting "clearly" beats another
when the mean per-seed difference exceeds the noise margin, sqrt(2) times the standard
deviation of those differences (which is the sum of the two settings' standard deviations
when seeds are independent and equally spread); with fewer than two seeds in common the
margin is the sum of the standard deviations, and with one seed on a side there is no margin
and every comparison is a tie. The rule is applied the same way whichever way the result
points. A tie counts against a claim only where the grid could have seen the claimed effect:
its noise margin is below a 20% change. Verdicts are read twice: on t2v R@1 (SimVTP's
headline metric) and on t2v mean rank (uses the rank of every query; chance is (n + 1) / 2).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from commands.experiment.grid import AXES, Cell

METRICS = {"t2v_r1": "t2v R@1", "t2v_r5": "t2v R@5", "v2t_r1": "v2t R@1"}  # plotted (recall, %)
TABLE_METRICS = {**METRICS, "t2v_meanr": "t2v mean rank"}
# the measures verdicts are read on: name, +1 when higher is better, -1 when lower is
MEASURES = {"t2v_r1": ("t2v R@1", 1), "t2v_meanr": ("t2v mean rank", -1)}
PAPER_DATA_RATIO = 43.8 / 53.6  # SimVTP MSR-VTT R@1 with 10% of WebVid-2M over all of it
# the smallest relative change the grid is built to resolve (issue 15: 20% of t2v R@1)
RESOLVED_CHANGE = 0.2


@dataclass
class Stat:
    """A metric over seeds."""

    values: list[float]
    seeds: list[int] = field(default_factory=list)  # each value's training seed, when known

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else math.nan

    def text(self) -> str:
        if not self.values:
            return "not run"
        sd = self.sd
        return f"{self.mean:.1f} ± {sd:.1f}" if not math.isnan(sd) else f"{self.mean:.1f} (1 seed)"


@dataclass
class CellStats:
    """One table row: its cell and each metric over the seeds that finished."""

    cell: Cell
    stats: dict[str, Stat]
    seeds: list[int] = field(default_factory=list)
    train_clips: int | None = None


def aggregate(cells: list[Cell], seeds: tuple[int, ...], results: dict[str, dict],
              clips: dict[float, int] | None = None) -> list[CellStats]:
    """Per cell, the metrics of its finished runs (a missing run is left out, not zeroed).

    Args:
        cells: the table's cells.
        seeds: the seeds each cell is trained with.
        results: ``{run_id: result}`` of the finished runs.
        clips: training clips per fraction (shown for cells whose runs have not finished).
    """
    from commands.experiment.grid import runs_of

    rows = []
    for cell in cells:
        found = [(run.seed, results[run.run_id]) for run in runs_of(cell, seeds)
                 if run.run_id in results]
        stats = {m: Stat([r["metrics"][m] for _, r in found if m in r["metrics"]],
                         [seed for seed, r in found if m in r["metrics"]])
                 for m in TABLE_METRICS}
        count = (found[0][1].get("train_clips") if found
                 else (clips or {}).get(cell.setting.fraction))
        rows.append(CellStats(cell, stats, [s for s, _ in found], count))
    return rows


def chance(results: dict[str, dict], test_clips: int = 0) -> tuple[float, float, int]:
    """(chance R@1 %, chance R@5 %, test clips) of the held-out split the runs share; with
    galleries, a query's chance within its own gallery. ``test_clips``: the clips one query
    is ranked among, used when no run has finished."""
    found = {(r["metrics"]["n"], r["metrics"].get("chance_r1", 100.0 / r["metrics"]["n"]))
             for r in results.values()}
    if len(found) > 1:
        raise ValueError(f"runs were evaluated on different test sets or galleries (clips, "
                         f"chance R@1): {sorted(found)}")
    n, r1 = found.pop() if found else (test_clips, 100.0 / test_clips if test_clips else 0.0)
    return (r1, min(100.0, 5 * r1), n) if n else (math.nan, math.nan, 0)


def results_table(rows: list[CellStats], chance_r1: float, chance_r5: float) -> str:
    """The markdown table: one row per cell, the chance level first."""
    chance_rank = (100.0 / chance_r1 + 1) / 2 if chance_r1 > 0 else math.nan
    lines = ["| axis | setting | t2v R@1 | t2v R@5 | v2t R@1 | t2v mean rank | seeds "
             "| train clips |",
             "|---|---|---:|---:|---:|---:|---:|---:|",
             f"| chance | - | {chance_r1:.2f} | {chance_r5:.2f} | {chance_r1:.2f} "
             f"| {chance_rank:.1f} | - | - |"]
    for row in rows:
        name = AXES[row.cell.axis][1].split(" (share")[0]
        setting = row.cell.label + (" (baseline)" if row.cell.baseline else "")
        values = " | ".join(row.stats[m].text() for m in TABLE_METRICS)
        lines.append(f"| {name} | {setting} | {values} | {len(row.seeds)} "
                     f"| {row.train_clips or '-'} |")
    return "\n".join(lines)


def difference(a: Stat, b: Stat) -> tuple[float, float]:
    """(mean difference a - b, the noise margin it must exceed) under the rule in the module
    docstring; the margin is NaN when a side has one seed and no seed pair to go by."""
    common = sorted(set(a.seeds) & set(b.seeds))
    if len(common) >= 2:
        by_a, by_b = dict(zip(a.seeds, a.values, strict=True)), dict(zip(b.seeds, b.values,
                                                                          strict=True))
        diffs = [by_a[seed] - by_b[seed] for seed in common]
        return statistics.fmean(diffs), math.sqrt(2) * statistics.stdev(diffs)
    if len(a.values) < 2 or len(b.values) < 2:
        return a.mean - b.mean, math.nan
    return a.mean - b.mean, a.sd + b.sd


def compare(a: Stat, b: Stat) -> str:
    """``higher``, ``lower`` or ``tie``: a against b under the rule in the module docstring."""
    if not a.values or not b.values:
        return "missing"
    diff, margin = difference(a, b)
    if math.isnan(margin):
        return "tie"  # one seed has no spread to measure a difference against
    return "higher" if diff > margin else "lower" if diff < -margin else "tie"


def _axis(rows: list[CellStats], axis: str, metric: str) -> dict[str, Stat]:
    return {row.cell.label: row.stats[metric] for row in rows if row.cell.axis == axis}


def _score(stats: dict[str, Stat], sign: int, chance_value: float) -> dict[str, Stat]:
    """Each value as its improvement over chance (higher is better whatever the metric)."""
    return {k: Stat([sign * (v - chance_value) for v in s.values], s.seeds)
            for k, s in stats.items()}


def _values(name: str, stats: dict[str, Stat]) -> str:
    return f"{name} " + ", ".join(f"{k}: {v.text()}" for k, v in stats.items())


def _best_claim(raw: dict[str, Stat], score: dict[str, Stat], paper: str,
                name: str) -> tuple[str, str]:
    """Verdict on "``paper`` is the best value, better than lower ones": holds when it scores
    best and clearly above every lower value; does not hold when some value is clearly above
    it, or when it ties some lower value although the noise margin of that comparison is
    below a 20% change of ``paper``'s value (an advantage of that size would have shown);
    inconclusive otherwise (the noise is too wide to tell)."""
    if paper not in raw or any(not v.values for v in raw.values()):
        return "not measured", f"{_values(name, raw)}; not every value was run"
    best = max(score, key=lambda k: score[k].mean)
    lower = [k for k in score if float(k) < float(paper)]
    beaten_by = [k for k in score if k != paper and compare(score[k], score[paper]) == "higher"]
    beats = [k for k in lower if compare(score[paper], score[k]) == "higher"]
    evidence = f"{_values(name, raw)}; best: {best}"
    if beaten_by:
        return "does not hold", evidence + f"; {', '.join(beaten_by)} clearly better than {paper}"
    if best == paper and len(beats) == len(lower):
        return "holds", evidence + f"; {paper} clearly better than {', '.join(lower)}"
    ties = [k for k in score if k != paper and k not in beats]
    change = RESOLVED_CHANGE * abs(raw[paper].mean)
    margins = {k: difference(score[paper], score[k])[1] for k in lower if k not in beats}
    resolved = [k for k, m in margins.items() if m < change]  # NaN (one seed) never counts
    if resolved:
        widest = max(margins[k] for k in resolved)
        return "does not hold", evidence + (
            f"; {paper} within seed noise of {', '.join(ties)}; no advantage over "
            f"{', '.join(resolved)} although the grid resolves {change:.1f} there (a 20% "
            f"change; noise margin at most {widest:.1f})")
    known = [m for m in margins.values() if not math.isnan(m)]
    wide = (f"; noise margin {min(known):.1f} or more, not below a 20% change ({change:.1f})"
            if known else "")
    return "inconclusive", evidence + f"; {paper} within seed noise of {', '.join(ties)}" + wide


def _data_claim(raw: dict[str, Stat], score: dict[str, Stat], name: str) -> tuple[str, str]:
    small, full = score["10%"], score["100%"]
    more = compare(full, small)
    if full.mean <= 0:
        ratio, verdict = math.nan, "inconclusive"
    else:
        ratio = small.mean / full.mean
        verdict = ("holds" if ratio >= PAPER_DATA_RATIO else
                   "does not hold" if more == "higher" else "inconclusive")
    kept = "n/a (full-data runs at chance)" if math.isnan(ratio) else f"{ratio:.0%}"
    more_text = {"higher": "clearly better", "lower": "clearly worse",
                 "tie": "within seed noise"}.get(more, more)
    return verdict, (f"{_values(name, raw)}; 10% keeps {kept} of the full-data gain over chance "
                     f"(paper: {PAPER_DATA_RATIO:.0%}); 100% vs 10%: {more_text}")


def _losses_claim(raw: dict[str, Stat], score: dict[str, Stat], name: str) -> tuple[str, str]:
    vtc = compare(score["+VTC"], score["MVM+MLM"])
    vtm = compare(score["+VTC+VTM"], score["+VTC"])
    verdict = ("holds" if vtc == "higher" and vtm == "higher" else
               "does not hold" if vtc == "lower" or vtm == "lower" else
               "partly holds" if vtc == "higher" else "inconclusive")
    words = {"higher": "better", "lower": "worse", "tie": "tie"}
    return verdict, (f"{_values(name, raw)}; adding VTC: {words.get(vtc, vtc)}; adding VTM on "
                     f"top: {words.get(vtm, vtm)}")


CLAIMS = {
    "video_mask": "A high video mask ratio, 90%, is best (SimVTP abstract; VideoMAE: 90-95% "
                  "still works well).",
    "text_mask": "A high text mask ratio, 75%, is best, far above BERT's 15% (SimVTP abstract).",
    "data": "Data efficiency: 10% of the pretraining data keeps most of the retrieval accuracy "
            "(MSR-VTT R@1 43.8 with 10% of WebVid-2M vs 53.6 with all of it); here at equal "
            "compute (every share trains as many steps).",
    "data_epochs": "Data efficiency at equal epochs: the same claim when a share trains that "
                   "share of the steps (how SimVTP scheduled its 10% run is not in our "
                   "reference).",
    "losses": "Every loss term helps: SimVTP trains MVM + MLM + VTC + VTM together, each with "
              "weight 1, as released (the paper's loss ablation numbers are not quoted here).",
}


def claims(rows: list[CellStats], chance_r1: float) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """Each claim the grid can test, with ``{measure: (verdict, evidence)}`` per measure of
    :data:`MEASURES` (chance R@1 ``chance_r1`` %, chance mean rank (n + 1) / 2)."""
    n = 100.0 / chance_r1 if chance_r1 > 0 else math.nan
    chances = {"t2v_r1": chance_r1, "t2v_meanr": (n + 1) / 2}
    out = []
    for axis, claim in CLAIMS.items():
        verdicts = {}
        for metric, (name, sign) in MEASURES.items():
            raw = _axis(rows, axis, metric)
            score = _score(raw, sign, chances[metric])
            if not raw:
                continue
            if axis == "video_mask":
                verdicts[metric] = _best_claim(raw, score, "0.9", name)
            elif axis == "text_mask":
                verdicts[metric] = _best_claim(raw, score, "0.75", name)
            elif axis in ("data", "data_epochs") and all(raw.get(k) and raw[k].values
                                                         for k in ("10%", "100%")):
                verdicts[metric] = _data_claim(raw, score, name)
            elif axis == "losses" and all(raw.get(k) and raw[k].values
                                          for k in ("MVM+MLM", "+VTC", "+VTC+VTM")):
                verdicts[metric] = _losses_claim(raw, score, name)
        if verdicts:
            out.append((claim, verdicts))
    return out


def data_variance(rows: list[CellStats]) -> str | None:
    """One sentence on the baseline trained on two synthetic datasets (the data-seed axis):
    is the dataset's effect outside the training seeds' spread?"""
    cells = [r for r in rows if r.cell.axis == "data_seed" and r.stats["t2v_r1"].values]
    if len(cells) < 2:
        return None
    parts = []
    for metric, (name, _) in MEASURES.items():
        values = "; ".join(f"{r.cell.label}: {r.stats[metric].text()}" for r in cells)
        if min(len(r.stats[metric].values) for r in cells) < 2:
            verdict = "one training seed: no spread to compare with"
        else:
            differ = compare(cells[1].stats[metric], cells[0].stats[metric])
            verdict = f"{'within' if differ == 'tie' else 'outside'} seed noise"
        parts.append(f"{name} {values} ({verdict})")
    return ("Data variance: the baseline on a second synthetic dataset (a new draw of training "
            "and held-out clips from the same preset): " + "; ".join(parts) + ".")


def plot_axes(rows: list[CellStats], chance_r1: float, chance_r5: float, out: Path) -> list[Path]:
    """One PNG per axis: each metric's mean ± sd, every seed as a dot, chance as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for axis, (_, title) in AXES.items():
        axis_rows = [r for r in rows if r.cell.axis == axis]
        if not axis_rows:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        xs = list(range(len(axis_rows)))
        for (metric, name), color in zip(METRICS.items(), ("C0", "C1", "C2"), strict=True):
            means = [r.stats[metric].mean for r in axis_rows]
            sds = [0.0 if math.isnan(r.stats[metric].sd) else r.stats[metric].sd for r in axis_rows]
            ax.errorbar(xs, means, yerr=sds, marker="o", capsize=4, color=color, label=name)
            for x, r in zip(xs, axis_rows, strict=True):
                ax.scatter([x] * len(r.stats[metric].values), r.stats[metric].values, color=color,
                           s=10, alpha=0.5)
        ax.axhline(chance_r1, color="grey", linestyle="--", linewidth=1, label="chance R@1")
        ax.axhline(chance_r5, color="grey", linestyle=":", linewidth=1, label="chance R@5")
        ax.set_xticks(xs, [r.cell.label + ("*" if r.cell.baseline else "") for r in axis_rows])
        ax.set_ylabel("held-out zero-shot recall (%)")
        ax.set_title(title.split(" (share")[0] + "  (* baseline)", fontsize=9)  # fits the plot
        ax.set_ylim(bottom=0)
        ax.set_xlim(-0.4, len(xs) - 0.6)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{axis}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
