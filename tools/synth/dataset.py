"""Plans and writes a synthetic WebVid-format dataset with recorded ground truth.

Planning (scenes, captions, defects) happens in one process from one seeded generator, so
rows never depend on worker scheduling; each clip is then rendered from its own
``default_rng([seed, index])`` in a process pool.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from tools.synth.captions import add_mess, english_caption, foreign_caption
from tools.synth.oracle import oracle_r1
from tools.synth.presets import PRESETS, get_preset
from tools.synth.render import encode_h264, render
from tools.synth.scene import Scene, draw_scene, held_out_pairs

WEBVID_COLUMNS = ("videoid", "contentUrl", "duration", "page_dir", "name")
TEXT_MESS = ("boilerplate", "resolution_tag", "url", "timecode", "filename", "html_entity")
CAPTION_DEFECTS = (*TEXT_MESS, "duplicate", "non_english", "empty")
FILE_DEFECTS = ("zero_bytes", "truncated", "not_video", "missing")
NOT_A_VIDEO = b"<html><head><title>403 Forbidden</title></head><body>Access denied</body></html>\n"


@dataclass(frozen=True)
class SynthConfig:
    """How big, how messy and how the clips are encoded."""

    num_clips: int = 200
    num_test: int | None = None  # held-out clips; default num_clips // 4
    seed: int = 0
    # share of training rows with a caption defect; half as many get a broken file
    defect_rate: float = 0.1
    fps: int = 16
    width: int = 320
    height: int = 240
    gop: int = 32
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    preset: str = "hard"  # presets.PRESETS: what the clips show and how captions word it

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        if self.num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {self.num_clips}")
        if not 0.0 <= self.defect_rate <= 1.0:
            raise ValueError(f"defect_rate must be in [0, 1], got {self.defect_rate}")
        if self.num_test is not None and self.num_test < 0:
            raise ValueError(f"num_test must be >= 0, got {self.num_test}")
        if min(self.fps, self.gop, self.workers) < 1:
            raise ValueError(f"fps, gop and workers must be >= 1, got {self.fps}, {self.gop}, "
                             f"{self.workers}")
        if min(self.width, self.height) < 16:
            raise ValueError(f"width and height must be >= 16, got {self.width}x{self.height}")
        if self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even for yuv420p, got "
                             f"{self.width}x{self.height}")

    @property
    def test_clips(self) -> int:
        return self.num_clips // 4 if self.num_test is None else self.num_test


@dataclass
class Row:
    """One planned clip: its scene, captions, defects and where its file goes."""

    index: int
    videoid: str
    split: str
    page_dir: str
    scene: Scene
    caption_clean: str | None
    caption_raw: str
    caption_defects: list[str] = field(default_factory=list)
    file_defect: str | None = None
    dup_of: str | None = None
    render_index: int | None = None  # a duplicate re-renders its original's clip
    lang: str = "en"

    @property
    def path(self) -> str:
        return f"videos/{self.page_dir}/{self.videoid}.mp4"


def _page_dir(i: int) -> str:
    first = (i // 50) * 50 + 1  # WebVid groups 50 rows per folder, e.g. 000001_000050
    return f"{first:06d}_{first + 49:06d}"


def _assign(rng: np.random.Generator, candidates: np.ndarray, count: int, kinds) -> dict[int, str]:
    """Gives ``count`` random rows one kind each, round-robin so every kind appears."""
    chosen = rng.permutation(candidates)[:count]
    return {int(i): kinds[k % len(kinds)] for k, i in enumerate(chosen)}


def plan(config: SynthConfig) -> list[Row]:
    """Every row of the dataset, training rows first, then the held-out test rows."""
    rng = np.random.default_rng(config.seed)
    preset = get_preset(config.preset)
    held_out = held_out_pairs(config.seed, preset)
    rows: list[Row] = []
    for i in range(config.num_clips + config.test_clips):
        split = "train" if i < config.num_clips else "test"
        scene = draw_scene(rng, split, held_out, preset)
        caption = english_caption(rng, scene, preset.varied_captions)
        videoid = str((10_000_000 if split == "train" else 20_000_000) + i)
        page_dir = _page_dir(i) if split == "train" else "test"
        rows.append(Row(i, videoid, split, page_dir, scene, caption, caption))
    _inject_defects(rng, rows[: config.num_clips], config.defect_rate)
    return rows


def _inject_defects(rng: np.random.Generator, train: list[Row], rate: float) -> None:
    n = len(train)
    caption_rows = _assign(rng, np.arange(1, n), round(rate * n), CAPTION_DEFECTS)
    file_rows = _assign(rng, np.arange(n), round(rate * n / 2), FILE_DEFECTS)
    for i, kind in sorted(caption_rows.items()):
        row = train[i]
        row.caption_defects.append(kind)
        if kind in TEXT_MESS:
            row.caption_raw = add_mess(rng, row.caption_raw, kind)
            if kind in ("boilerplate", "resolution_tag", "url") and rng.random() < 0.3:
                others = [k for k in ("boilerplate", "resolution_tag", "url") if k != kind]
                extra = str(rng.choice(others))
                row.caption_raw = add_mess(rng, row.caption_raw, extra)
                row.caption_defects.append(extra)
        elif kind == "duplicate":
            # A re-upload: same scene, same caption string, new id (as WebVid has).
            original = train[int(rng.integers(0, i))]
            row.scene, row.dup_of = original.scene, original.videoid
            row.render_index = original.index
            row.caption_raw, row.caption_clean = original.caption_raw, original.caption_clean
            row.caption_defects = ["duplicate", *original.caption_defects]
            row.lang = original.lang
        elif kind == "non_english":
            row.lang, row.caption_raw = foreign_caption(rng, row.scene)
            row.caption_clean = None
        elif kind == "empty":
            row.caption_raw, row.caption_clean = str(rng.choice(["", " ", "  "])), None
    for i, kind in file_rows.items():
        train[i].file_defect = kind


def _write_clip(job: tuple[Row, SynthConfig, str]) -> int:
    """Renders one clip (or its broken stand-in); returns the bytes written."""
    row, config, out_dir = job
    path = Path(out_dir) / row.path
    path.parent.mkdir(parents=True, exist_ok=True)
    if row.file_defect == "missing":
        return 0
    if row.file_defect == "zero_bytes":
        path.write_bytes(b"")
        return 0
    if row.file_defect == "not_video":
        path.write_bytes(NOT_A_VIDEO)
        return len(NOT_A_VIDEO)
    index = row.index if row.render_index is None else row.render_index
    clip_rng = np.random.default_rng([config.seed, index])
    frames = render(row.scene, fps=config.fps, height=config.height, width=config.width,
                    rng=clip_rng, preset=get_preset(config.preset))
    tmp = path.with_name(f".{path.name}.tmp")
    encode_h264(frames, tmp, fps=config.fps, gop=config.gop)
    if row.file_defect == "truncated":
        data = tmp.read_bytes()
        # The mp4 index (moov) is written last, so cutting the tail leaves an unplayable file.
        tmp.write_bytes(data[: len(data) * 2 // 5])
    os.replace(tmp, path)
    return path.stat().st_size


def _duration(seconds: int) -> str:
    return f"PT{seconds // 3600:02d}H{seconds // 60 % 60:02d}M{seconds % 60:02d}S"


def _content_url(row: Row) -> str:
    slug = "-".join((row.caption_clean or "clip").lower().replace(",", "").split()[:8])
    return f"https://ak.picdn.net/shutterstock/videos/{row.videoid}/preview/stock-footage-{slug}.mp4"


def write_tables(rows: list[Row], config: SynthConfig, out: Path) -> None:
    """results.csv (training rows, WebVid columns), ground_truth.parquet, test.json and
    synth.json (the config, the preset's parameters and the test split's oracle scores)."""
    train = [r for r in rows if r.split == "train"]
    csv = pa.table({
        "videoid": [r.videoid for r in train],
        "contentUrl": [_content_url(r) for r in train],
        "duration": [_duration(r.scene.duration_s) for r in train],
        "page_dir": [r.page_dir for r in train],
        "name": [r.caption_raw for r in train],
    })
    pacsv.write_csv(csv, out / "results.csv")
    truth = [{
        "videoid": r.videoid, "split": r.split, "page_dir": r.page_dir, "path": r.path,
        "caption_raw": r.caption_raw, "caption_clean": r.caption_clean, "lang": r.lang,
        "caption_defects": r.caption_defects, "file_defect": r.file_defect, "dup_of": r.dup_of,
        "num_frames": r.scene.duration_s * config.fps, "fps": config.fps,
        "width": config.width, "height": config.height, "preset": config.preset,
        **r.scene.as_row(),
    } for r in rows]
    pq.write_table(pa.Table.from_pylist(truth), out / "ground_truth.parquet")
    test = [{"video_id": r.videoid, "video": r.path, "caption": r.caption_clean}
            for r in rows if r.split == "test"]
    (out / "test.json").write_text(json.dumps(test, indent=1) + "\n")
    (out / "synth.json").write_text(json.dumps(describe(rows, config), indent=1) + "\n")


def describe(rows: list[Row], config: SynthConfig) -> dict:
    """What synth.json records: the settings, the preset's parameters and what a model
    that knew only some attributes of a test clip would score on the held-out split."""
    settings = asdict(config)
    settings.pop("workers")  # how fast, not what
    test = [r.scene.as_row() for r in rows if r.split == "test"]
    return {
        "config": settings,
        "preset": get_preset(config.preset).to_json(),
        "held_out_pairs": sorted(held_out_pairs(config.seed, get_preset(config.preset))),
        "oracle_t2v_r1": oracle_r1(test),
    }


def generate(config: SynthConfig, out: Path, *, progress: bool = True) -> dict:
    """Writes the whole dataset to ``out``; returns a summary dict."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rows = plan(config)
    jobs = [(row, config, str(out)) for row in rows]
    with ProcessPoolExecutor(max_workers=max(1, config.workers)) as pool:
        sizes = list(tqdm(pool.map(_write_clip, jobs, chunksize=4), total=len(jobs),
                          desc="synth", unit="clip", disable=not progress))
    write_tables(rows, config, out)
    seconds = time.perf_counter() - start
    train = [r for r in rows if r.split == "train"]
    return {
        "out": str(out),
        "train_rows": len(train),
        "test_clips": len(rows) - len(train),
        "caption_defects": {k: sum(k in r.caption_defects for r in train) for k in CAPTION_DEFECTS},
        "file_defects": {k: sum(r.file_defect == k for r in train) for k in FILE_DEFECTS},
        "preset": config.preset,
        "oracle_t2v_r1": json.loads((out / "synth.json").read_text())["oracle_t2v_r1"],
        "bytes": int(sum(sizes)),
        "seconds": round(seconds, 2),
        "clips_per_second": round(len(rows) / seconds, 2),
    }
