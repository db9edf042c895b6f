"""The experiment's data, built once through the real chain: synth -> clean -> subset -> shard.

The training shards of every fraction come from nested `vtp subset` subsets of the cleaned
captions (10% ⊂ 30% ⊂ 100%); the held-out test json is sharded once with
`recipes.evaluate.prepare_test_shards` so every run evaluates on the same shard folder.
Every stage is resumable: a finished stage (its output and a stamp of its settings) is kept.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DataPlan:
    """How big the synthetic dataset is and how its clips are sharded.

    Args:
        num_clips: training rows generated (defects included; clean and shard drop some).
        num_test: held-out test clips (unseen caption/scene combinations).
        seed: the generator's seed.
        defect_rate: share of rows with a caption defect (half as many broken files).
        width, height: rendered frame size (the tiny model sees 32x32 crops; bigger frames
            only slow rendering and sharding). Same as `make demo`.
        codec: shard codec; vp9 decodes on the CPU.
        short_side: shard short side in pixels; 36 is 8/7 of the tiny model's 32, the size
            `vtp eval` and `make demo` use, so the crops match the demo's.
        workers: processes for synth, clean and shard.
    """

    num_clips: int = 800
    num_test: int = 200
    seed: int = 0
    defect_rate: float = 0.1
    width: int = 160
    height: int = 120
    codec: str = "vp9"
    short_side: int = 36
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)

    def stamp(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "workers"}


@dataclass
class DataPaths:
    """Where the built data is: one shard folder per fraction and the test shards."""

    train: dict[float, Path]
    test: Path
    train_clips: dict[float, int]
    test_clips: int

    def to_json(self) -> dict:
        return {"train": {str(k): str(v) for k, v in self.train.items()}, "test": str(self.test),
                "train_clips": {str(k): v for k, v in self.train_clips.items()},
                "test_clips": self.test_clips}

    @classmethod
    def from_json(cls, raw: dict) -> DataPaths:
        return cls(train={float(k): Path(v) for k, v in raw["train"].items()}, test=Path(raw["test"]),
                   train_clips={float(k): int(v) for k, v in raw["train_clips"].items()},
                   test_clips=int(raw["test_clips"]))


def build_data(work: Path, plan: DataPlan, fractions: tuple[float, ...],
               progress: bool = True) -> DataPaths:
    """Builds (or reuses) the dataset under ``work``; returns where its shards are.

    Args:
        work: folder for synth/, clean/, subsets/, shards/ and test-shards/.
        plan: dataset size and shard format.
        fractions: training-set shares, each in (0, 1].
        progress: show each stage's tqdm bar.

    Raises:
        RuntimeError: sharding left no clip of a fraction or of the test split.
    """
    stamp_path = work / "data.json"
    wanted = {"plan": plan.stamp(), "fractions": sorted(fractions)}
    if stamp_path.is_file():
        saved = json.loads(stamp_path.read_text())
        if {k: saved.get(k) for k in wanted} == wanted:
            return DataPaths.from_json(saved["paths"])
    work.mkdir(parents=True, exist_ok=True)
    synth = _synth(work / "synth", plan, progress)
    captions = _clean(synth / "results.csv", work / "clean", plan, progress)
    subsets = _subsets(captions, work / "subsets", fractions)
    train, counts = {}, {}
    for fraction, manifest in subsets.items():
        train[fraction], counts[fraction] = _shard(manifest, synth / "videos",
                                                   work / "shards" / f"f{fraction:g}", plan, progress)
    test, test_clips = _test_shards(synth / "test.json", work / "test-shards", plan)
    paths = DataPaths(train, test, counts, test_clips)
    stamp_path.write_text(json.dumps({**wanted, "paths": paths.to_json()}, indent=1) + "\n")
    return paths


def _synth(out: Path, plan: DataPlan, progress: bool) -> Path:
    from tools.synth import SynthConfig, generate

    done = out / ".done.json"
    if done.is_file() and json.loads(done.read_text()) == plan.stamp():
        return out
    print(f"experiment data: synth {plan.num_clips} + {plan.num_test} test clips -> {out}", flush=True)
    config = SynthConfig(num_clips=plan.num_clips, num_test=plan.num_test, seed=plan.seed,
                         defect_rate=plan.defect_rate, width=plan.width, height=plan.height,
                         workers=plan.workers)
    generate(config, out, progress=progress)
    done.write_text(json.dumps(plan.stamp()))
    return out


def _clean(source: Path, out: Path, plan: DataPlan, progress: bool) -> Path:
    from tools.clean import CleanConfig, clean_file

    captions = out / "captions.parquet"
    if captions.is_file() and captions.stat().st_mtime >= source.stat().st_mtime:
        return captions
    print(f"experiment data: clean {source} -> {out}", flush=True)
    clean_file(source, out, CleanConfig(workers=plan.workers, progress=progress))
    return captions


def _subsets(captions: Path, out: Path, fractions: tuple[float, ...]) -> dict[float, Path]:
    from tools.subset import subset_file, subset_name

    # membership is a pure function of the ids, so rewriting them is cheap and always right
    subset_file(captions, out, fractions)
    return {p: out / subset_name(p) for p in sorted(fractions)}


def _shard(manifest: Path, video_root: Path, out: Path, plan: DataPlan,
           progress: bool) -> tuple[Path, int]:
    from tools.shard import ShardConfig, TranscodeOptions, load_items, shard

    items, _ = load_items(manifest, video_root, None)
    print(f"experiment data: shard {manifest.name} ({len(items)} clips) -> {out}", flush=True)
    options = TranscodeOptions(codec=plan.codec, short_side=plan.short_side)
    summary = shard(items, ShardConfig(out=out, format="mds", transcode=options,
                                       workers=plan.workers, progress=progress))
    if not summary["ok"]:
        raise RuntimeError(f"sharding {manifest} left no clip; see {out / 'manifest.parquet'}")
    return out, int(summary["ok"])


def _test_shards(test_json: Path, out: Path, plan: DataPlan) -> tuple[Path, int]:
    from recipes.evaluate import prepare_test_shards

    print(f"experiment data: shard the held-out split {test_json} -> {out}", flush=True)
    folder, summary = prepare_test_shards(test_json, out, plan.codec, plan.short_side, plan.workers)
    if not summary["ok"]:
        raise RuntimeError(f"no test clip could be sharded; see {out / 'manifest.parquet'}")
    return folder, int(summary["ok"])
