"""`make demo`: the whole chain on generated data, from raw clips to a retrieval report.

    synth -> clean -> subset -> shard -> pretrain (tiny-synthetic) -> zero-shot eval -> report

Every stage is a function of (work folder, :class:`DemoConfig`, earlier results), prints a
header and shows the tools' own progress bars. ``build_demo_data`` runs the data stages
alone and is what other commands (``vtp experiment``) reuse; it skips work it has already
done for the same data settings. Writes ``OUT/report.md``, ``OUT/metrics.json``,
``OUT/loss_curves.png``, ``OUT/reconstruction.png`` and ``OUT/retrieval.md``.

    python -m commands.demo --out reports/demo         # the full demo
    python -m commands.demo --out /tmp/d --size small  # CI: every stage + a learning check

How long each takes on 2 cores, and what the demo measured: recipes/README.md, "Tiny demo".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["DemoConfig", "DemoData", "SIZES", "build_demo_data", "synth_stage", "clean_stage",
           "subset_stage", "shard_stage", "pretrain_stage", "eval_stage", "held_out_check",
           "run_demo", "main"]

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-synthetic.yaml"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and settings of one demo run.

    Args:
        num_clips: training rows generated (before cleaning drops the bad ones).
        num_test: held-out test clips (unseen (colour, shape) pairs).
        data_seed: seeds the synthetic dataset.
        preset: the `vtp synth` preset (tools/synth/presets.py): what the clips show.
        defect_rate: share of training rows with WebVid-like caption mess; half as many
            get a broken video file (the clean and shard stages must catch both).
        fps: rendered frame rate (the sampler takes 8 frames of each clip, so fewer frames
            only save rendering and transcoding time; motion per second is the same).
        width, height: rendered frame size; square, because the model sees square crops of
            the shards (objects and their paths scale with the height).
        short_side: short side of the sharded clips; None takes
            ``pipeline.config.short_side_for`` of the recipe's input size, which is also what
            the evaluation shards the test json at.
        codec: a CPU-decodable codec (vp9 or mjpeg).
        fraction: the `vtp subset` fraction that is sharded and trained on.
        steps: optimizer steps of the pretraining run (None: the recipe's).
        seed: the pretraining seed (model initialisation, data order, masks).
        overrides: extra ``section.key=value`` recipe overrides.
        recipe: the training recipe.
        workers: processes for rendering and sharding.
        torch_threads: torch's CPU threads for training. 1 (the recipe's) is safe on a
            machine shared with other jobs; more are faster on free cores but far slower
            when another job holds one (OpenMP threads wait for a core; measured in
            recipes/README.md).
        recon_clips: held-out clips shown in the reconstruction figure.
    """

    num_clips: int = 1500
    num_test: int = 200
    data_seed: int = 0
    preset: str = "demo"
    defect_rate: float = 0.1
    fps: int = 8
    width: int = 72
    height: int = 72
    short_side: int | None = None
    codec: str = "vp9"
    fraction: float = 1.0
    steps: int | None = None
    seed: int = 17
    overrides: tuple[str, ...] = ()
    recipe: str = str(RECIPE)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    torch_threads: int = 1
    recon_clips: int = 4

    def __post_init__(self) -> None:
        if self.short_side is None:
            from pipeline.config import short_side_for
            from recipes.config import load_recipe

            size = load_recipe(self.recipe, list(self.overrides)).model.image_size
            object.__setattr__(self, "short_side", short_side_for(size))

    def data_key(self) -> dict:
        """The settings the data stages depend on (a match means the data can be reused)."""
        keys = ("num_clips", "num_test", "data_seed", "preset", "defect_rate", "fps", "width",
                "height", "short_side", "codec", "fraction")
        return {k: getattr(self, k) for k in keys}


SIZES: dict[str, DemoConfig] = {
    "full": DemoConfig(),
    # CI: every stage and report file, and a learning check, in a few minutes on two idle
    # cores. The easy preset (4 colours x 3 shapes, one size and background, straight
    # motion) and the recipe for 200 steps, at masks 0.5 / 0.3: at SimVTP's 0.9 / 0.75 200
    # steps read motion only at 0.30 (a random clip 0.24); tests/test_demo.py asserts a margin
    # above chance (recipes/README.md, "CI's learning check").
    "small": DemoConfig(num_clips=300, num_test=40, preset="easy", fps=8, width=48, height=48,
                        steps=200, recon_clips=2,
                        overrides=("model.video_mask_ratio=0.5", "model.text_mask_ratio=0.3")),
}


@dataclass
class DemoData:
    """Where the data stages put things, and what each of them reported."""

    synth_dir: Path
    test_json: Path
    ground_truth: Path
    captions: Path
    subset: Path
    train_shards: Path
    summaries: dict[str, Any]
    seconds: dict[str, float]
    reused: bool = False  # loaded from an earlier run's data.json, not built now

    def to_json(self) -> dict:
        raw = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        raw.pop("reused")
        return raw

    @classmethod
    def from_json(cls, raw: dict) -> DemoData:
        paths = {k: Path(v) for k, v in raw.items() if k not in ("summaries", "seconds")}
        return cls(**paths, summaries=raw["summaries"], seconds=raw["seconds"], reused=True)


def _stage(name: str, number: int, total: int) -> None:
    print(f"\n==> [{number}/{total}] {name}", flush=True)


def _timed(fn: Callable, *args) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, round(time.perf_counter() - start, 1)


# -- data stages -------------------------------------------------------------------------
def synth_stage(work: Path, cfg: DemoConfig) -> dict:
    """Renders the WebVid-format training set and the held-out test split (`vtp synth`)."""
    from tools.synth import SynthConfig, generate

    config = SynthConfig(num_clips=cfg.num_clips, num_test=cfg.num_test, seed=cfg.data_seed,
                         defect_rate=cfg.defect_rate, width=cfg.width, height=cfg.height,
                         workers=cfg.workers, preset=cfg.preset, fps=cfg.fps)
    return generate(config, work / "synth")


def clean_stage(work: Path, cfg: DemoConfig) -> dict:
    """Cleans the captions of results.csv and drops the unusable ones (`vtp clean`)."""
    from tools.clean import CleanConfig, clean_file

    return clean_file(work / "synth" / "results.csv", work / "clean",
                      CleanConfig(workers=min(cfg.workers, 2)))


def subset_stage(work: Path, cfg: DemoConfig) -> dict:
    """Draws the nested hash subsets of the clean rows (`vtp subset`); returns the summary
    with ``path``, the parquet of ``cfg.fraction``."""
    from tools.subset import subset_file, subset_name

    fractions = sorted({0.1, 0.3, 1.0, cfg.fraction})
    summary = subset_file(work / "clean" / "captions.parquet", work / "subsets", fractions)
    return {**summary, "path": str(work / "subsets" / subset_name(cfg.fraction))}


def shard_stage(work: Path, cfg: DemoConfig, subset: Path) -> dict:
    """Transcodes the subset's clips to ``cfg.codec`` MDS shards, each clip probed and
    decoded before it is written (`vtp shard`)."""
    from tools.shard import shard_manifest

    return shard_manifest(subset, work / "synth" / "videos", work / "shards", cfg.codec,
                          cfg.short_side, cfg.workers)


def build_demo_data(work: Path, cfg: DemoConfig,
                    progress: Callable[[str], None] | None = None) -> DemoData:
    """Runs synth, clean, subset and shard into ``work``; reuses an earlier run's output
    when it was built with the same data settings (``cfg.data_key()``).

    Args:
        work: the work folder (``synth/``, ``clean/``, ``subsets/``, ``shards/`` inside).
        cfg: the demo configuration.
        progress: called with each stage's name before it runs (default: print a header).

    Returns:
        The paths and each stage's summary and seconds.
    """
    record = work / "data.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        if saved.get("key") == cfg.data_key():
            print(f"data: reusing {work} (same data settings)", flush=True)
            return DemoData.from_json(saved["data"])
    for name in ("synth", "clean", "subsets", "shards"):
        shutil.rmtree(work / name, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda name: print(f"\n==> {name}", flush=True))
    summaries, seconds = {}, {}
    say("synth: render the training set and the held-out test split")
    summaries["synth"], seconds["synth"] = _timed(synth_stage, work, cfg)
    say("clean: clean captions, drop empty, too short and non-English ones")
    summaries["clean"], seconds["clean"] = _timed(clean_stage, work, cfg)
    say(f"subset: nested hash subsets; training on the {cfg.fraction:.0%} subset")
    summaries["subset"], seconds["subset"] = _timed(subset_stage, work, cfg)
    subset = Path(summaries["subset"]["path"])
    say(f"shard: transcode to {cfg.codec}, short side {cfg.short_side}, check, write MDS")
    summaries["shard"], seconds["shard"] = _timed(shard_stage, work, cfg, subset)
    synth = work / "synth"
    data = DemoData(synth_dir=synth, test_json=synth / "test.json",
                    ground_truth=synth / "ground_truth.parquet",
                    captions=work / "clean" / "captions.parquet", subset=subset,
                    train_shards=work / "shards", summaries=summaries, seconds=seconds)
    record.write_text(json.dumps({"key": cfg.data_key(), "data": data.to_json()}, indent=1) + "\n")
    return data


def held_out_check(data: DemoData, gallery_size: int | None = None) -> dict:
    """Verifies from the data that the test scenes are unseen in training.

    Compares the (colour, shape) pairs and the exact captions of the test split with those
    of the training clips that were actually sharded.

    Args:
        data: the built demo data.
        gallery_size: the evaluation ranks each query within a gallery of about this many
            clips (`evaluation.retrieval.galleries`); None: among every test clip.

    Returns:
        test pairs, the pairs shared with training (must be empty), the test captions also
        found among training captions, and the expected R@1 of a model that knows only the
        (colour, shape) pair (1 / the clips of its gallery that share it, averaged).
    """
    import pyarrow.parquet as pq

    from evaluation.retrieval import galleries

    truth = pq.read_table(data.ground_truth).to_pandas()
    manifest = pq.read_table(data.train_shards / "manifest.parquet").to_pandas()
    trained = set(manifest.loc[manifest["status"] == "ok", "key"].astype(str))
    train = truth[truth["videoid"].astype(str).isin(trained)]
    test = truth[truth["split"] == "test"]
    def pairs(frame) -> set:
        return set(zip(frame["colour"], frame["shape"], strict=True))

    test_pairs = sorted(pairs(test))
    test = test.reset_index(drop=True)
    for number, members in enumerate(galleries(list(test["videoid"].astype(str)), gallery_size)):
        test.loc[members, "gallery"] = number
    pair_size = test.groupby(["gallery", "colour", "shape"])["videoid"].transform("size")
    pair_only = float((1.0 / pair_size).mean())
    captions = set(train["caption_clean"].dropna().str.lower())
    return {
        "train_clips": len(train),
        "test_clips": len(test),
        "test_pairs": [list(p) for p in test_pairs],
        "train_pairs": len(pairs(train)),
        "shared_pairs": [list(p) for p in sorted(pairs(test) & pairs(train))],
        "test_captions_in_train": int(test["caption_clean"].str.lower().isin(captions).sum()),
        "pair_only_r1": round(100 * pair_only, 2),
    }


# -- model stages ------------------------------------------------------------------------
def pretrain_stage(work: Path, cfg: DemoConfig, shards: Path) -> dict:
    """Pretrains the recipe on ``shards`` with Composer from scratch; returns the checkpoint,
    the file log and the run summary.

    Training runs in a process of its own, as `vtp train` and `vtp experiment` runs do, so
    Composer's, Streaming's and torch's process-wide settings (threads, shared memory, seeds)
    start clean and end with it; the report stages read only the checkpoint and the log."""
    run = work / f"run-seed{cfg.seed}"
    shutil.rmtree(run, ignore_errors=True)  # a fresh run: no autoresume from an older demo
    overrides = [
        f"data.path={shards}", f"seed={cfg.seed}", "run_name=demo",
        f"trainer.save_folder={run / 'checkpoints'}", f"loggers.file={run / 'log.txt'}",
        "loggers.tensorboard=null", "loggers.progress_bar=true", "loggers.console=false",
        f"trainer.torch_threads={cfg.torch_threads}",
        *([f"trainer.max_duration={cfg.steps}ba"] if cfg.steps else []), *cfg.overrides,
    ]
    result = _in_child(_train, cfg.recipe, overrides)
    print(result["summary"], flush=True)
    return {"checkpoint": str(run / "checkpoints" / "latest-rank0.pt"), "log": str(run / "log.txt"),
            "overrides": overrides, **result}


def _in_child(fn: Callable, *args) -> Any:
    """``fn(*args)`` in a spawned process; its exception is raised here. The child dies with
    this process, and is killed when this one stops waiting (an exception, Ctrl-C, a timeout)."""
    from multiprocessing import get_context

    context = get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(send, os.getpid(), fn, args))
    child.start()
    send.close()  # the child holds the only writer: its death ends recv() with EOFError
    try:
        ok, value = receive.recv()
    except EOFError:
        raise RuntimeError(f"the {fn.__name__} process ended without a result "
                           f"(exit code {child.join() or child.exitcode})") from None
    finally:
        if child.is_alive():
            child.terminate()  # its handler ends the child's own children first
            child.join(10)
        if child.is_alive():
            child.kill()
        child.join()
    if not ok:
        raise value
    return value


def _child_main(send, parent: int, fn: Callable, args: tuple) -> None:
    from tools.shard.lifeline import die_with_parent

    die_with_parent(parent)
    try:
        send.send((True, fn(*args)))
    except Exception as err:  # noqa: BLE001  (handed to the parent, which raises it)
        send.send((False, err))


def _train(recipe: str, overrides: list[str]) -> dict:
    """One Composer run of ``recipe``; what the report needs of its state."""
    from recipes.train import summary, train_from_yaml

    trainer = train_from_yaml(recipe, overrides)
    state = trainer.state
    result = {
        "steps": int(state.timestamp.batch),
        "samples": int(state.timestamp.sample),
        "epochs": int(state.timestamp.epoch),
        "batch_size": int(state.train_dataloader.batch_size or 0) if state.train_dataloader else 0,
        "summary": summary(trainer),
        "train_seconds": round(state.timestamp.total_wct.total_seconds(), 1),
    }
    trainer.close()
    return result


def eval_stage(work: Path, cfg: DemoConfig, checkpoint: str, test_json: Path) -> dict:
    """Zero-shot text-video retrieval of the checkpoint on the held-out test json."""
    from evaluation.evaluate import EvalConfig, evaluate_checkpoint

    eval_cfg = EvalConfig(data=str(test_json), out=str(work / "eval"), mode="zero-shot",
                          device="cpu", codec=cfg.codec, short_side=cfg.short_side,
                          workers=cfg.workers)
    return evaluate_checkpoint(checkpoint, eval_cfg)


def figures_stage(out: Path, cfg: DemoConfig, train: dict, test_shards: Path,
                  test_json: Path) -> dict:
    """The loss curves (from Composer's file log) and the reconstruction figure."""
    from commands.figures import plot_losses, plot_reconstructions, read_file_log

    curves = read_file_log(Path(train["log"]))
    chance = {"vtc": 2 * math.log(_vtc_candidates(cfg)), "vtm": math.log(2)}
    losses = plot_losses(curves, out / "loss_curves.png", chance,
                         f"tiny-synthetic pretraining, seed {cfg.seed}")
    masked, recon, target, captions = _held_out_reconstructions(
        train["checkpoint"], test_shards, test_json, cfg.recon_clips)
    recon_png = plot_reconstructions(masked, recon, target, out / "reconstruction.png", captions)
    from commands.retrieval_grid import retrieval_grid

    grid = retrieval_grid(train["checkpoint"], test_shards, test_json, out / "retrieval_grid.png",
                          seed=cfg.seed)
    grid["reads"] = attribute_reading(test_json, grid.pop("keys"), grid.pop("top1"))
    firsts = {k: sum(v for _, v in vals[:10]) / len(vals[:10]) for k, vals in curves.items()}
    lasts = {k: sum(v for _, v in vals[-25:]) / len(vals[-25:]) for k, vals in curves.items()}
    return {"loss_curves": str(losses), "reconstruction": str(recon_png), "grid": grid,
            "loss_first10": firsts, "loss_last25": lasts, "chance": chance}


def attribute_reading(test_json: Path, keys: list[str], top1: list[int]) -> dict:
    """Per attribute, how often the first-ranked clip shares the query clip's value, next to
    a random clip's rate (tools.synth.oracle.top1_agreement), from the test split's ground
    truth beside ``test_json``."""
    import pyarrow.parquet as pq

    from tools.synth.oracle import top1_agreement

    truth = pq.read_table(Path(test_json).parent / "ground_truth.parquet").to_pylist()
    by_id = {r["videoid"]: r for r in truth if r["split"] == "test"}
    return top1_agreement([by_id[k] for k in keys], top1)


def _vtc_candidates(cfg: DemoConfig) -> int:
    """What VTC scores each query against in this run's recipe: the samples of one forward
    pass, plus a full queue."""
    from recipes.config import load_recipe

    recipe = load_recipe(cfg.recipe, ["data.path=unused", *cfg.overrides])
    micro = recipe.trainer.device_train_microbatch_size
    batch = micro if isinstance(micro, int) else recipe.trainer.global_batch_size
    return batch + recipe.model.vtc_queue


def _held_out_reconstructions(checkpoint: str, shards: Path, test_json: Path, count: int):
    """MVM on ``count`` held-out clips (centre view, the training mask ratio)."""
    import torch

    from commands.figures import reconstruct
    from evaluation.evaluate import EvalConfig, eval_data_config
    from pipeline import BatchBuilder
    from pipeline.loader import build_source
    from recipes.checkpoint import load_data_settings, load_trained_model

    model = load_trained_model(checkpoint).eval()
    settings = load_data_settings(checkpoint)
    data = eval_data_config(model, shards, EvalConfig(data=str(shards), out="", batch_size=count),
                            settings)
    data = replace(data, shuffle=False, drop_last=False, view=0,
                   video_mask_ratio=model.config.video_mask_ratio,
                   text_mask_ratio=model.config.text_mask_ratio)
    loader = torch.utils.data.DataLoader(build_source(data), batch_size=count,
                                         collate_fn=BatchBuilder(data))
    batch = next(iter(loader))
    captions = _captions(test_json, batch["keys"])
    return (*reconstruct(model, batch), captions)


def _captions(test_json: Path, keys: list[str]) -> list[str]:
    """Captions of ``keys`` from the test json (its ``video_id`` is the shard key)."""
    entries = json.loads(Path(test_json).read_text())
    by_key = {str(e.get("video_id") or Path(e["video"]).stem): e["caption"] for e in entries}
    return [by_key.get(k, "") for k in keys]


# -- report ------------------------------------------------------------------------------
ORACLE_NAMES = {
    "pair_only": "the (colour, shape) pair only",
    "appearance_only": "appearance only (colour, shape, size, count, background, distractor)",
    "motion_only": "motion only (direction(s) and speed)",
    "pair_and_motion": "the pair and the motion",
    "all_attributes": "every attribute a caption names (the ceiling)",
}


def _oracle_text(data: DemoData) -> str:
    """What a model that saw only part of each clip would score: the data's headroom."""
    synth = data.summaries["synth"]
    oracle = synth.get("oracle_t2v_r1", {})
    rows = [f"| {ORACLE_NAMES.get(k, k)} | {v:.1f} |" for k, v in oracle.items()]
    return "\n".join([
        f"Data: `vtp synth --preset {synth.get('preset', 'hard')}` (parameters in "
        "`synth.json`). Expected R@1 of a model that told test clips apart by some attributes "
        "only and guessed among the clips that share them:",
        "",
        "| a model that knows | expected t2v R@1 (%) |",
        "|---|---|",
        *rows,
    ])


def _reading_text(reads: dict) -> str:
    """The table of what the model reads (see ``attribute_reading``)."""
    rows = [f"| {attr.replace('_', ' ')} | {v['top1']:.2f} | {v['random']:.2f} |"
            for attr, v in reads.items()]
    return "\n".join([
        "What the model reads: for each attribute a caption names, the share of queries whose "
        "first-ranked clip has the query clip's value, and the share a random other clip has. "
        "An attribute the model ignores sits at the random rate.",
        "",
        "| attribute | first-ranked clip agrees | random clip agrees |",
        "|---|---|---|",
        *rows,
    ])


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def write_report(out: Path, cfg: DemoConfig, data: DemoData, check: dict, train: dict,
                 metrics: dict, figures: dict, seconds: dict[str, float]) -> Path:
    """report.md: what each stage did, the retrieval table against chance, the figures."""
    from evaluation.evaluate import metrics_table

    s = data.summaries
    synth, clean, shard = s["synth"], s["clean"], s["shard"]
    subset_rows = {round(r["fraction"], 4): r for r in s["subset"]["subsets"]}
    chosen = subset_rows.get(round(cfg.fraction, 4), {})
    r1, chance = metrics["t2v_r1"], metrics["chance_r1"]
    total = sum(seconds.values())
    dropped = ", ".join(f"{k} {v}" for k, v in clean["dropped"].items() if v) or "none"
    failures = ", ".join(f"{k} {v}" for k, v in shard.get("failure_reasons", {}).items()) or "none"
    stages = [
        ("synth", f"rendered {synth['train_rows']} training rows ({cfg.width}x{cfg.height}, "
                  f"H.264) with {sum(synth['caption_defects'].values())} caption defects and "
                  f"{sum(synth['file_defects'].values())} broken files, plus {synth['test_clips']} "
                  "held-out test clips", seconds.get("synth", 0)),
        ("clean", f"{clean['rows']} captions in, {clean['kept']} kept; dropped: {dropped}; "
                  f"{clean['duplicate_groups']} duplicate groups kept", seconds.get("clean", 0)),
        ("subset", f"nested hash subsets of {s['subset']['eligible_rows']} rows; trained on the "
                   f"{cfg.fraction:.0%} subset ({chosen.get('rows', '?')} rows)",
         seconds.get("subset", 0)),
        ("shard", f"{shard['inputs']} subset rows -> {shard['ok']} ok clips + "
                  f"{shard['failed']} failed "
                  f"({failures}); {cfg.codec}, short side {cfg.short_side}, "
                  f"{shard['mds_shards']} MDS shard(s), {shard['bytes'] / 1e6:.1f} MB",
         seconds.get("shard", 0)),
        ("pretrain", f"{train['steps']} steps, {train['samples']} samples "
                     f"({train['epochs']} epochs) of the tiny-synthetic recipe",
         seconds.get("pretrain", 0)),
        ("eval", f"zero-shot retrieval on {metrics['n']} held-out clips (sharded like the "
                 f"training set; {metrics.get('failed', 0)} failed)", seconds.get("eval", 0)),
        ("figures", "loss curves and held-out reconstructions", seconds.get("figures", 0)),
    ]
    pair_text = ", ".join(f"{c} {sh}" for c, sh in check["test_pairs"])
    shared = ("none" if not check["shared_pairs"]
              else ", ".join(f"{c} {sh}" for c, sh in check["shared_pairs"]))
    chance_of = {k: f"{v:.3f}" for k, v in figures["chance"].items()}
    losses = "\n".join(
        f"| {k} | {figures['loss_first10'][k]:.3f} | {figures['loss_last25'][k]:.3f} | "
        f"{chance_of.get(k, '-')} |" for k in sorted(figures["loss_first10"]))
    lines = [
        "# vtp demo: SimVTP in miniature on synthetic WebVid-format data",
        "",
        f"The whole chain ran in {_fmt_seconds(total)} on {os.cpu_count()} CPU core(s) "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
        + (" (the data stages' times are those of the earlier run whose data was reused)."
           if data.reused else "."),
        "",
        "## Result",
        "",
        f"Zero-shot **text-to-video R@1 = {r1:.1f}%** on {metrics['n']} held-out clips; "
        f"chance is 100/{metrics['n']} = {chance:.2f}%, so R@1 is "
        f"**{r1 / chance:.1f}x chance** (video-to-text R@1 {metrics['v2t_r1']:.1f}%).",
        "",
        metrics_table(metrics),
        "",
        "Run cards: [training](train_card.md) (command, recipe, code revision, data hashes, "
        "losses, checkpoints) and [evaluation](eval_card.md) (checkpoint hash, split, views, "
        "tie rule).",
        _oracle_text(data),
        "",
        _reading_text(figures["grid"]["reads"]),
        "",
        "## Top-5 retrieved clips",
        "",
        f"{len(figures['grid']['queries'])} held-out captions drawn at random (seeded): each row "
        "shows the five clips the model ranks highest for the caption on its left; the clip the "
        "caption describes is framed green (its rank: "
        f"{', '.join(map(str, figures['grid']['ranks']))}).",
        "",
        "![top-5 retrieved clips](retrieval_grid.png)",
        "",
        "## Held-out split: unseen combinations",
        "",
        f"The test split's {check['test_clips']} clips show the (colour, shape) pairs "
        f"{pair_text}. Checked against the {check['train_clips']} training clips that were "
        f"sharded (ground_truth.parquet): pairs shared with training: **{shared}**; test "
        f"captions that also occur in training: **{check['test_captions_in_train']}**. "
        f"Training covers {check['train_pairs']} other pairs, so every colour and every shape "
        "is seen in training, never together as in the test clips: retrieval on this split "
        "measures composition, not memorisation.",
        "",
        "## Stages",
        "",
        "| stage | what it did | time |",
        "|---|---|---|",
        *[f"| {name} | {what} | {_fmt_seconds(sec)} |" for name, what, sec in stages],
        "",
        "## Pretraining",
        "",
        f"Recipe `{Path(cfg.recipe).name}` with overrides `{' '.join(train['overrides'])}`.",
        "",
        train["summary"],
        "",
        "| loss term | mean of first 10 steps | mean of last 25 steps | chance |",
        "|---|---|---|---|",
        losses,
        "",
        "Chance for VTC is 2 ln B (B in-batch candidates, both directions summed), for VTM ln 2.",
        "",
        "![loss curves](loss_curves.png)",
        "",
        "## Masked video modelling on held-out clips",
        "",
        "Each row is a held-out clip (centre view, the training mask ratio): the input with "
        "masked tubes grey, the decoder's prediction pasted into the masked tubes, and the "
        "target. The decoder predicts each tube's pixels normalised by the tube's own mean "
        "and std (VideoMAE's target), so predictions are shown with the target tube's mean "
        "and std put back.",
        "",
        "![reconstruction](reconstruction.png)",
        "",
        "## Reproduce",
        "",
        "```",
        "make demo                      # python -m commands.demo --out reports/demo",
        f"python -m commands.demo --out reports/demo --seed {cfg.seed}",
        "```",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _copy_cards(train_folder: Path, eval_folder: Path, out: Path) -> None:
    """The run cards of the demo's training and evaluation, next to the report that cites them."""
    for folder, prefix in ((train_folder, "train"), (eval_folder, "eval")):
        for suffix in ("json", "md"):
            shutil.copy(folder / f"run_card.{suffix}", out / f"{prefix}_card.{suffix}")


# -- the whole demo ----------------------------------------------------------------------
def run_demo(out: Path, work: Path, cfg: DemoConfig) -> dict:
    """Runs every stage; writes the report files into ``out``; returns metrics.json's dict."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    total, counter = 7, iter(range(1, 8))
    data = build_demo_data(work, cfg, lambda name: _stage(name, next(counter), total))
    seconds = dict(data.seconds)
    for _ in range(4 - len(seconds)):
        next(counter, None)
    check = held_out_check(data)
    if check["shared_pairs"]:
        raise RuntimeError(f"test pairs seen in training: {check['shared_pairs']}")
    _stage(f"pretrain: {Path(cfg.recipe).name} on {data.summaries['shard']['ok']} clips", 5, total)
    train, seconds["pretrain"] = _timed(pretrain_stage, work, cfg, data.train_shards)
    _stage("eval: zero-shot text-video retrieval on the held-out split", 6, total)
    metrics, seconds["eval"] = _timed(eval_stage, work, cfg, train["checkpoint"], data.test_json)
    metrics["t2v_r1_over_chance"] = round(metrics["t2v_r1"] / metrics["chance_r1"], 2)
    metrics["seed"] = cfg.seed
    _stage("figures and report", 7, total)
    figures, seconds["figures"] = _timed(figures_stage, out, cfg, train,
                                         work / "eval" / "test-shards", data.test_json)
    metrics["attribute_reading"] = figures["grid"]["reads"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.copy(work / "eval" / "retrieval.md", out / "retrieval.md")
    _copy_cards(Path(train["checkpoint"]).parent, work / "eval", out)
    seconds["report"] = 0.0
    report = write_report(out, cfg, data, check, train, metrics, figures, seconds)
    elapsed = time.perf_counter() - start
    print(f"\ndemo: text-to-video R@1 {metrics['t2v_r1']:.1f}% vs chance "
          f"{metrics['chance_r1']:.2f}% "
          f"({metrics['t2v_r1_over_chance']:.1f}x) on {metrics['n']} held-out clips; "
          f"{_fmt_seconds(elapsed)} in all; report: {report}", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports/demo"), help="report folder")
    parser.add_argument("--work", type=Path, default=None,
                        help="data and run folder (default: data/demo, or data/demo-SIZE)")
    parser.add_argument("--size", choices=sorted(SIZES), default="full",
                        help="full (the demo) or small (CI: every stage and a learning check)")
    parser.add_argument("--seed", type=int, default=None, help="pretraining seed")
    parser.add_argument("--steps", type=int, default=None, help="pretraining steps")
    parser.add_argument("--workers", type=int, default=None, help="processes for synth and shard")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch CPU threads for training (default 1; 2 is faster on an idle "
                             "2-core machine, much slower on a busy one)")
    parser.add_argument("overrides", nargs="*", help="extra recipe overrides, section.key=value")
    args = parser.parse_args(argv)
    cfg = SIZES[args.size]
    changes = {k: v for k, v in (("seed", args.seed), ("steps", args.steps),
                                 ("workers", args.workers),
                                 ("torch_threads", args.torch_threads)) if v is not None}
    if args.overrides:
        changes["overrides"] = (*cfg.overrides, *args.overrides)
    cfg = replace(cfg, **changes)
    work = args.work or Path("data") / ("demo" if args.size == "full" else f"demo-{args.size}")
    run_demo(args.out, work, cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
