"""The experiment's markdown document: setup, table, verdicts, caveats and plots."""

from __future__ import annotations

import math
import statistics

from commands.experiment.report import (
    MEASURES,
    PAPER_DATA_RATIO,
    RESOLVED_CHANGE,
    CellStats,
    claims,
    data_variance,
    difference,
    results_table,
)

CAVEATS = [
    "Scale: SimVTP's numbers are ViT-B pretrained on WebVid-2M and fine-tuned on MSR-VTT; here "
    "a tiny model (see Setup) is pretrained for a few hundred "
    "steps on procedurally generated clips and evaluated zero-shot. Only the direction of an "
    "effect can carry over, never its size.",
    "Data axes: on (a) every run takes the same number of steps, so a smaller subset is seen "
    "for more epochs (same compute, less data); on (a') a subset trains the baseline's steps "
    "times its share of the clips (same epochs, less compute). How SimVTP's 10% run was "
    "scheduled is not in our reference.",
    "The data-efficiency claim compares gains over chance (R@1 - chance R@1, or chance mean "
    "rank - mean rank): gain(10%) / gain(100%) against SimVTP's 43.8 / 53.6 = "
    f"{PAPER_DATA_RATIO:.0%}: it holds when the "
    "miniature keeps at least that share, does not hold when it keeps less and all the data "
    "is clearly better than 10%, and is inconclusive otherwise.",
    "Spread is the sample standard deviation over seeds (seed = model initialisation, data "
    "order and masks; the dataset is the same, except on axis (e)). Settings are compared seed "
    "by seed: a value is \"clearly\" above another when the mean of the per-seed differences "
    "exceeds sqrt(2) times their standard deviation (the sum of the two standard deviations "
    "when seeds are independent and equally spread; that sum where fewer than two seeds are "
    "shared); otherwise it is a tie within seed noise. With few seeds this rule is coarse, so "
    "a tie is never read in the paper's favour: on the mask claims it counts against the claim "
    "(\"does not hold\") where the grid could have seen the claimed advantage, i.e. the two "
    "settings' noise margin is below a 20% change of the claimed setting's value, and is "
    "inconclusive where the noise is wider than that.",
]


def render(rows: list[CellStats], chance_r1: float, chance_r5: float, setup: dict,
           plots: list[str], command: str, recipe_copy: str = "recipe.yaml") -> str:
    """The whole document.

    Args:
        rows: the aggregated cells.
        chance_r1, chance_r5: chance levels in percent.
        setup: recipe, steps, batch, seeds, data sizes, timing (see ``main.setup_info``).
        plots: image paths relative to the document.
        command: the command that regenerates the document.
        recipe_copy: where the copy of the recipe the runs read is, relative to the document.
    """
    verdicts = claims(rows, chance_r1)
    lines = [
        "# SimVTP's claims in miniature (`vtp experiment`)", "",
        f"Regenerate with `{command}` (finished runs are reused; delete `{setup['out']}/runs/` "
        "to train everything again)."
        + (" `make experiments` runs the same grid into `reports/experiments/`."
           if setup.get("default_grid") else ""), "",
        "## Setup", "",
        f"- Recipe `{setup['recipe']}` (the runs read a copy: `{recipe_copy}`; settings "
        f"digest {setup['recipe_sha']}; {setup['model']}), "
        f"{setup['max_duration']} per run (equal-epochs runs: their share) at batch "
        f"{setup['batch_size']}, seeds "
        f"{', '.join(map(str, setup['seeds']))}; every other setting as in the recipe.",
        f"- Baseline: the recipe's own setting: all data, video mask "
        f"{setup['baseline']['video_mask_ratio']:g}, text mask "
        f"{setup['baseline']['text_mask_ratio']:g}, all four losses. The mask axes hold SimVTP's "
        "values plus the recipe's (tuned for `make demo`). Each axis changes one factor; cells "
        "equal to the baseline share its runs.",
        f"- Data: `vtp synth --preset {setup.get('preset', '?')}` (dataset seed "
        f"{setup.get('data_seed', 0)}"
        + (f"; axis (e) also trains on dataset seed {setup['data_seeds'][1]}"
           if len(setup.get("data_seeds", [])) > 1 else "") + ") "
        f"{setup['num_clips']} training rows + {setup['test_clips']} held-out "
        f"test clips (unseen combinations), `vtp clean`, nested `vtp subset` fractions, "
        f"`vtp shard` {setup['codec']} short side {setup['short_side']} (rendered at "
        f"{setup['render']}), the data stages of `make demo`. Training clips per "
        f"fraction: {setup['train_clips']}. The test split's {setup.get('test_pairs', '?')} "
        f"(colour, shape) pairs: {setup.get('shared_pairs', '?')} seen in training; a model "
        f"that knew only the pair would reach R@1 {setup.get('pair_only_r1', math.nan):.1f}%.",
        f"- Evaluation: zero-shot text-to-video and video-to-text retrieval on the "
        f"{setup['test_clips']} held-out clips{_gallery_text(setup)} (`evaluation.evaluate`, "
        "mean-pooled video-only and text-only encoder features, ties counted against the "
        f"model). Chance: R@1 {chance_r1:.2f}%, R@5 {chance_r5:.2f}%.",
        f"- Compute: {setup['runs_done']} of {setup['runs_total']} distinct runs finished, "
        + (f"{_minutes(setup['run_seconds'])} of run time in all "
           f"({setup['seconds_per_run']:.0f} s per run: train + eval + process start), "
           if setup["runs_done"] else "")
        + f"{setup['cores']} CPU cores, {setup['date']}.", "",
        "## Results (held-out zero-shot retrieval, mean ± sd over seeds)", "",
        "Recall in %, higher is better; mean rank of the true match among "
        f"{_ranked_among(setup)}, lower is better.", "",
        results_table(rows, chance_r1, chance_r5), "",
        *_baseline_line(rows, chance_r1, setup),
        *([line, ""] if (line := data_variance(rows)) else []),
        "## SimVTP's claims: which the miniature reproduces", "",
        *(_claims_table(verdicts) if verdicts else
          ["No claim is tested on these axes (data, video_mask, text_mask and losses test "
           "them).", ""]),
        "## Caveats", "",
    ]
    lines += [f"- Mask grid: {setup['visible_cells']} (ViT-B's 14x14 grid leaves 49 / 20 / 10)."]
    if setup.get("recipe_max_duration") not in (None, setup["max_duration"]):
        lines += [f"- Run length: the runs stop at {setup['max_duration']}, the recipe trains "
                  f"{setup['recipe_max_duration']}; what the model learns only late is not in "
                  "these verdicts. For the tiny recipe that is motion (recipes/README.md), and at "
                  "its full length the baseline's seeds split too widely for three of them to "
                  "resolve a 20% change (benchmarks/experiments-1200/EXPERIMENTS.md)."]
    lines += [f"- {c}" for c in CAVEATS]
    lines += ["", "## Plots", ""]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _claims_table(verdicts: list) -> list[str]:
    """The verdict table and a count per measure."""
    lines = ["| claim | verdict on t2v R@1 | verdict on t2v mean rank | evidence |",
             "|---|---|---|---|"]
    for claim, by in verdicts:
        cells = [f"**{by[m][0]}**" if m in by else "not measured" for m in MEASURES]
        evidence = "<br>".join(by[m][1] for m in MEASURES if m in by)
        lines.append(f"| {claim} | {' | '.join(cells)} | {evidence} |")
    lines.append("")
    for metric, (name, _) in MEASURES.items():
        found = [by[metric][0] for _, by in verdicts if metric in by]
        lines += [f"On {name}: {found.count('holds')} of {len(found)} claims hold in the "
                  f"miniature, {found.count('does not hold')} do not, "
                  f"{len(found) - found.count('holds') - found.count('does not hold')} are "
                  "partial or inconclusive at this scale and seed count.", ""]
    return lines


def _baseline_line(rows: list[CellStats], chance_r1: float, setup: dict) -> list[str]:
    """How far the baseline got, against chance, at this run length."""
    base = next((r for r in rows if r.cell.baseline and r.stats["t2v_r1"].values), None)
    if base is None or not chance_r1 > 0:
        return []
    r1, rank = base.stats["t2v_r1"].mean, base.stats["t2v_meanr"].mean
    chance_rank = (100.0 / chance_r1 + 1) / 2
    lines = [f"At {setup['max_duration']} per run the baseline reaches t2v R@1 {r1:.1f}% "
             f"({r1 / chance_r1:.1f}x chance) and a mean rank of {rank:.1f} (chance "
             f"{chance_rank:.1f}); the recipe's own length is "
             f"{setup.get('recipe_max_duration', '?')}.", ""]
    sd = base.stats["t2v_r1"].sd
    if not math.isnan(sd):
        each = ", ".join(f"{v:.1f}" for v in base.stats["t2v_r1"].values)
        change = RESOLVED_CHANGE * r1
        line = (f"Seed noise: the baseline's t2v R@1 spreads by sd {sd:.1f} over "
                f"{len(base.seeds)} seeds ({each}): between unmatched seeds a setting would have "
                f"to differ by about {2 * sd:.1f} points to count as clearly better or worse.")
        margins = sorted(m for row in rows if not row.cell.baseline
                         if not math.isnan(m := difference(row.stats["t2v_r1"],
                                                           base.stats["t2v_r1"])[1]))
        if margins:
            line += (f" Compared seed by seed (same initialisation, data order and mask draws), "
                     f"the other settings' noise margins against the baseline are "
                     f"{margins[0]:.1f}-{margins[-1]:.1f} points (median "
                     f"{statistics.median(margins):.1f}); a 20% relative change of the baseline "
                     f"is {change:.1f} points: **outside** the noise for "
                     f"{sum(m < change for m in margins)} of {len(margins)} settings.")
        lines += [line, ""]
    return lines


def _gallery_text(setup: dict) -> str:
    size, clips = setup.get("gallery_size"), setup["test_clips"]
    if not size or size >= clips:
        return ""
    return (f", each query ranked within its own gallery of about {size} (the clips are cut "
            f"into {round(clips / size)} disjoint galleries by a hash of their key, so R@1 is as "
            f"hard as on {size} clips and counts all {clips} queries)")


def _ranked_among(setup: dict) -> str:
    size, clips = setup.get("gallery_size"), setup["test_clips"]
    if not size or size >= clips:
        return f"the {clips} test clips"
    return f"the {size} or so clips of the query's gallery"


def _minutes(seconds: float) -> str:
    if math.isnan(seconds):
        return "unknown"
    return f"{seconds / 60:.1f} min"
