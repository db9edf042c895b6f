"""The experiment's data, built once through the real chain: synth -> clean -> subset -> shard.

The data stages are `make demo`'s (`commands.demo.build_demo_data`, same settings as the demo:
render size, codec, short side), which shard the 100% subset. The other fractions are the
nested `vtp subset` subsets of the same cleaned captions (10% ⊂ 30% ⊂ 100%), sharded here
with the demo's transcode settings, and the held-out test json is sharded once with
`evaluation.evaluate.prepare_test_shards`, so every run evaluates on the same shard folder.
Every stage is resumable: the demo's data record, `vtp shard`'s completion markers, and
this module's own record (``WORK/experiment-data.json``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

RECORD = "experiment-data.json"  # the demo's own record is data.json in the same folder


@dataclass(frozen=True)
class DataPlan:
    """How big the synthetic dataset is; everything else is the demo's (`commands.demo.DemoConfig`).

    Args:
        num_clips: training rows generated (defects included; clean and shard drop some).
        num_test: held-out test clips (unseen caption/scene combinations).
        seed: the generator's seed.
        preset: the generator's preset (what the clips show).
        workers: processes for synth, clean and shard.
    """

    num_clips: int = 800
    num_test: int = 200
    seed: int = 0
    preset: str = "demo"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)

    def demo_config(self):
        """The `commands.demo.DemoConfig` whose data stages build this dataset (100% subset)."""
        from commands.demo import DemoConfig

        return DemoConfig(num_clips=self.num_clips, num_test=self.num_test, data_seed=self.seed,
                          preset=self.preset, fraction=1.0, workers=self.workers)


@dataclass
class DataPaths:
    """Where the built data is: one shard folder per fraction and the test shards.

    ``facts`` holds what the report states about the data: render size, codec, short side,
    and the demo's held-out check (shared (colour, shape) pairs, pair-only R@1). ``identity``
    is what the data was built from (sizes, seed, preset, transcode settings, fractions):
    a run's fingerprint includes it, so results on other data count as stale.
    """

    train: dict[float, Path]
    test: Path
    train_clips: dict[float, int]
    test_clips: int
    facts: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"train": {str(k): str(v) for k, v in self.train.items()}, "test": str(self.test),
                "train_clips": {str(k): v for k, v in self.train_clips.items()},
                "test_clips": self.test_clips, "facts": self.facts, "identity": self.identity}

    @classmethod
    def from_json(cls, raw: dict) -> DataPaths:
        return cls(train={float(k): Path(v) for k, v in raw["train"].items()},
                   test=Path(raw["test"]),
                   train_clips={float(k): int(v) for k, v in raw["train_clips"].items()},
                   test_clips=int(raw["test_clips"]), facts=raw.get("facts", {}),
                   identity=raw.get("identity", {}))


def build_data(work: Path, plan: DataPlan, fractions: tuple[float, ...],
               gallery_size: int | None = None) -> DataPaths:
    """Builds (or reuses) the dataset under ``work``; returns where its shards are.

    Args:
        work: folder for the demo's synth/, clean/, subsets/, shards/ (100%), and
            shards-{p}/ per other fraction and test-shards/.
        plan: dataset size.
        fractions: training-set shares, each in (0, 1]; 1.0 among them.
        gallery_size: the evaluation's gallery size (the pair-only R@1 is stated for it).

    Raises:
        RuntimeError: sharding left no clip of a fraction or of the test split.
    """
    from commands.demo import build_demo_data, held_out_check

    cfg = plan.demo_config()
    record = work / RECORD
    # what a run's data is: the fractions are left out because a subset's clips depend only on
    # the data key and its own share (nested `vtp subset`), not on which other shares exist
    wanted = {"key": cfg.data_key(), "gallery_size": gallery_size}
    demo = build_demo_data(work, cfg)
    # the demo rewrites its record only when it rebuilt the data: ours is then out of date
    fresh = record.is_file() and (work / "data.json").stat().st_mtime <= record.stat().st_mtime
    if fresh:
        built = read_record(work)
        if built.identity == wanted:
            if set(fractions) <= set(built.train):
                return built
            fractions = tuple(sorted(set(fractions) | set(built.train)))  # keep the built ones
    else:  # shards of the previous clips would pass `vtp shard`'s resume check: remove them
        for folder in [*work.glob("shards-*"), work / "test-shards"]:
            shutil.rmtree(folder, ignore_errors=True)
    train, counts = {1.0: demo.train_shards}, {1.0: int(demo.summaries["shard"]["ok"])}
    subsets = _subsets(demo.captions, work / "subsets", fractions)
    for fraction in sorted(set(fractions) - {1.0}):
        train[fraction], counts[fraction] = _shard(subsets[fraction], demo.synth_dir / "videos",
                                                   work / f"shards-{fraction:g}", cfg)
    test, test_clips = _test_shards(demo.test_json, work / "test-shards", cfg)
    check = held_out_check(demo, gallery_size)
    facts = {"preset": cfg.preset, "render": f"{cfg.width}x{cfg.height}", "codec": cfg.codec,
             "short_side": cfg.short_side,
             "shared_pairs": len(check["shared_pairs"]), "test_pairs": len(check["test_pairs"]),
             "test_captions_in_train": check["test_captions_in_train"],
             "pair_only_r1": check["pair_only_r1"]}
    paths = DataPaths(train, test, counts, test_clips, facts, identity=wanted)
    record.write_text(json.dumps({**wanted, "fractions": sorted(train), "paths": paths.to_json()},
                                 indent=1) + "\n")
    return paths


def read_record(work: Path) -> DataPaths | None:
    """The data built under ``work``, from its record (None when there is none)."""
    record = work / RECORD
    if not record.is_file():
        return None
    saved = json.loads(record.read_text())
    return replace(DataPaths.from_json(saved["paths"]),
                   identity={"key": saved.get("key"), "gallery_size": saved.get("gallery_size")})


def _subsets(captions: Path, out: Path, fractions: tuple[float, ...]) -> dict[float, Path]:
    from tools.subset import subset_file, subset_name

    # membership is a pure function of the ids: rewriting them is cheap and changes nothing
    wanted = sorted(set(fractions) | {0.1, 0.3, 1.0})  # keep the demo's subsets too
    subset_file(captions, out, wanted)
    return {p: out / subset_name(p) for p in wanted}


def _shard(manifest: Path, video_root: Path, out: Path, cfg) -> tuple[Path, int]:
    from tools.shard import shard_manifest

    print(f"\n==> experiment data: shard {manifest.name} -> {out}", flush=True)
    summary = shard_manifest(manifest, video_root, out, cfg.codec, cfg.short_side, cfg.workers)
    if not summary["ok"]:
        raise RuntimeError(f"sharding {manifest} left no clip; see {out / 'manifest.parquet'}")
    return out, int(summary["ok"])


def _test_shards(test_json: Path, out: Path, cfg) -> tuple[Path, int]:
    from evaluation.evaluate import prepare_test_shards

    print(f"\n==> experiment data: shard the held-out split {test_json} -> {out}", flush=True)
    folder, summary = prepare_test_shards(test_json, out, cfg.codec, cfg.short_side, cfg.workers)
    if not summary["ok"]:
        raise RuntimeError(f"no test clip could be sharded; see {out / 'manifest.parquet'}")
    return folder, int(summary["ok"])
