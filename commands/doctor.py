"""Is this machine ready? vtp doctor [--recipe R] [--path P] [--json].

Prints what a bug report needs: versions (Python, torch, CUDA, DALI, Composer, Streaming,
transformers, ffmpeg), what decodes where (DALI's CPU codecs; GPUs and NVDEC; a one-second
decode probe of each available route on a generated clip), free shared memory (/dev/shm,
which Streaming uses), free disk under --path, torch threads and cores. With --recipe the
last line says whether this machine can run that recipe: device, precision, the codec of the
shards in data.path against the decode device, and, on a GPU, a dry forward and backward at
batch 1 scaled to the microbatch. Exit status 0 when ready, 1 with the reasons when not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

MIN_SHM_BYTES = 64 * 2**20  # Streaming keeps its shard and sample state in /dev/shm
MIN_DISK_BYTES = 2**30
PROBE_ENCODERS = {"vp9": ("libvpx-vp9", "webm"), "mjpeg": ("mjpeg", "avi"),
                  "h264": ("libx264", "mp4")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe",
                        help="check that this recipe can run here (path or shipped name)")
    parser.add_argument("--set", action="append", default=[], metavar="section.key=value",
                        help="recipe override, e.g. --set data.path=SHARDS (repeatable)")
    parser.add_argument("--path", default=".", help="report free disk under this folder")
    parser.add_argument("--json", action="store_true", help="print one json object")
    parser.add_argument("--probe-seconds", type=float, default=1.0,
                        help="seconds of decoding per route in the decode probe")


# -- facts -------------------------------------------------------------------------------
def _free(path: str | Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _threads() -> dict:
    import torch

    return {"torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads()}


def _make_clip(codec: str, folder: Path) -> tuple[bytes, dict]:
    """A 1-second 64x48 test clip at 16 fps in ``codec``, with the meta `vtp shard` writes."""
    encoder, ext = PROBE_ENCODERS[codec]
    out = folder / f"probe-{codec}.{ext}"
    extra = ["-pix_fmt", "yuv420p"] if codec == "h264" else (
        ["-pix_fmt", "yuvj420p", "-q:v", "5"] if codec == "mjpeg" else ["-b:v", "200k"])
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=16", "-t", "1", "-c:v", encoder, "-g", "16",
                    *extra, str(out)], check=True, capture_output=True, timeout=60)
    return out.read_bytes(), {"frames": 16, "fps": 16.0, "width": 64, "height": 48,
                              "codec": codec}


def _probe(route: str, codec: str, video: bytes, meta: dict, seconds: float) -> dict:
    """Decodes ``video`` (8 frames, 32 px crop) repeatedly for ``seconds`` on ``route``."""
    import torch

    from pipeline import BatchBuilder, DataConfig
    from pipeline.decode import VideoDecoder

    cfg = DataConfig(path="", device=route, batch_size=1, num_frames=8, stride=2,
                     image_size=32, tubelet=(2, 8, 8), crop_scales=(1.0,), view=0, views=1)
    feed = BatchBuilder(cfg).sample_feed({"key": "probe", "video": video, "meta": meta})
    feeds = {name: [value] for name, value in feed.items()}
    device_id = torch.cuda.current_device() if route == "gpu" else None
    decoder = VideoDecoder(route, 1, 2, cfg.image_size, device_id)
    try:
        decoder(feeds, ["probe"], [codec])  # warm-up: builds the pipeline
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            decoder(feeds, ["probe"], [codec])
            count += 1
        elapsed = time.perf_counter() - start
    except Exception as err:  # a route that fails is a finding, not a crash
        return {"route": route, "codec": codec, "ok": False,
                "error": str(err).strip().splitlines()[-1][:300]}
    return {"route": route, "codec": codec, "ok": True,
            "clips_per_s": round(count / elapsed, 1),
            "frames_per_s": round(count * cfg.num_frames / elapsed, 1)}


def decode_report(gpus: int, seconds: float) -> dict:
    """DALI's codecs per device and a decode probe of every (device, codec) route."""
    from pipeline.decode import CPU_CODECS, GPU_CODECS

    out = {"cpu_codecs": sorted(CPU_CODECS), "gpu_codecs": sorted(GPU_CODECS) if gpus else [],
           "nvdec": "NVDEC through DALI's mixed decoder" if gpus else "no GPU: no NVDEC",
           "probes": []}
    if shutil.which("ffmpeg") is None:
        out["probes"].append({"route": "-", "codec": "-", "ok": False,
                              "error": "ffmpeg is not on PATH (needed for the probe clips)"})
        return out
    routes = [("cpu", "vp9"), ("cpu", "mjpeg")]
    if gpus:
        routes += [("gpu", "h264"), ("gpu", "vp9")]
    with tempfile.TemporaryDirectory(prefix="vtp-doctor-") as tmp:
        clips = {}
        for _, codec in routes:
            if codec not in clips:
                try:
                    clips[codec] = _make_clip(codec, Path(tmp))
                except (subprocess.SubprocessError, OSError) as err:
                    clips[codec] = err
        for route, codec in routes:
            clip = clips[codec]
            if isinstance(clip, Exception):
                out["probes"].append({"route": route, "codec": codec, "ok": False,
                                      "error": f"ffmpeg could not encode a {codec} test clip"})
            else:
                out["probes"].append(_probe(route, codec, *clip, seconds))
    return out


# -- the recipe --------------------------------------------------------------------------
def shard_codec(path: str, fmt: str) -> str:
    """The codec of the first sample in a shard folder (its meta, as `vtp shard` wrote it).

    Raises:
        ValueError: no shards of ``fmt`` there.
    """
    from pipeline.sources import first_meta_wds, shard_folder

    folder = shard_folder(path, fmt)
    if fmt == "wds":
        try:
            return str(first_meta_wds(folder)["codec"])
        except FileNotFoundError as err:
            raise ValueError(str(err)) from err
    if not (folder / "index.json").is_file():
        raise ValueError(f"no MDS shards in {path} (no index.json in {folder}); "
                         "point data.path at a `vtp shard` output folder")
    from streaming import LocalDataset

    return str(LocalDataset(str(folder))[0]["meta"]["codec"])


def recipe_report(recipe, gpus: int) -> tuple[dict, list[str]]:
    """What the recipe needs against what is here; returns (facts, reasons it cannot run)."""
    from pipeline.decode import CodecError, check_codec

    t, data, reasons = recipe.trainer, recipe.data, []
    device = t.device if t.device != "auto" else ("gpu" if gpus else "cpu")
    auto = "amp_bf16" if device == "gpu" else "fp32"
    precision = t.precision if t.precision != "auto" else auto
    facts = {"device": device, "precision": precision, "data_path": data.path,
             "data_device": data.device, "format": data.format, "shard_codec": None,
             "microbatch": t.device_train_microbatch_size or t.global_batch_size}
    if device == "gpu" and not gpus:
        reasons.append("trainer.device=gpu but no CUDA device is visible")
    if device == "cpu" and precision != "fp32":
        reasons.append(f"trainer.precision={precision} needs a GPU; CPU runs fp32")
    if data.device == "gpu" and not gpus:
        reasons.append("data.device=gpu (NVDEC decoding) but no CUDA device is visible")
    if data.remote:
        facts["shard_codec"] = "not checked (data.remote: shards are fetched at run time)"
    elif not data.path or not Path(data.path).exists():
        reasons.append(f"data.path={data.path!r} does not exist; set --set data.path=SHARDS")
    else:
        try:
            facts["shard_codec"] = codec = shard_codec(data.path, data.format)
            check_codec(codec, data.device)
        except (ValueError, CodecError) as err:
            reasons.append(str(err))
    facts["dry_forward"] = (_dry_forward(recipe, precision, facts["microbatch"], reasons)
                            if device == "gpu" and gpus else "skipped (no GPU)")
    return facts, reasons


def _dry_forward(recipe, precision: str, microbatch, reasons: list[str]) -> dict:
    """Forward and backward of one random sample on the GPU; peak memory scaled to the
    microbatch (activations grow linearly with it, weights and optimizer state do not)."""
    import torch

    from model.synthetic import random_batch
    from recipes.train import build_model

    dtype = {"amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}.get(precision)
    try:
        model = build_model(recipe).model.cuda()
        torch.cuda.reset_peak_memory_stats()
        static = torch.cuda.memory_allocated()
        batch = {k: v.cuda() if torch.is_tensor(v) else v
                 for k, v in random_batch(recipe.model, 1, text_len=recipe.data.text_max_length,
                                          seed=0).items()}
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(batch)["loss"]
        loss.backward()
        peak = torch.cuda.max_memory_allocated()
    except torch.cuda.OutOfMemoryError:
        reasons.append("the model does not fit on the GPU at batch 1")
        return {"ok": False, "error": "out of memory at batch 1"}
    except Exception as err:
        reasons.append(f"dry forward failed: {err}")
        return {"ok": False, "error": str(err)[:300]}
    total = torch.cuda.get_device_properties(0).total_memory
    # the optimizer keeps state for trained parameters only (not a VTC queue's momentum encoder)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    micro = microbatch if isinstance(microbatch, int) else 1  # "auto" searches from there
    optimizer_state = 2 * 4 * params  # AdamW's two fp32 moments
    estimate = static + optimizer_state + (peak - static) * micro
    if estimate > 0.9 * total:
        reasons.append(f"microbatch {micro} needs about {estimate / 2**30:.1f} GiB of the GPU's "
                       f"{total / 2**30:.1f} GiB; lower trainer.device_train_microbatch_size")
    return {"ok": True, "peak_gib_batch1": round(peak / 2**30, 2),
            "estimate_gib_microbatch": round(estimate / 2**30, 2),
            "gpu_gib": round(total / 2**30, 1)}


# -- the command -------------------------------------------------------------------------
def diagnose(recipe=None, recipe_name: str | None = None, path: str = ".",
             probe_seconds: float = 1.0) -> dict:
    """Everything vtp doctor reports, as one dict with ``ready`` and ``reasons``."""
    import torch

    from recipes.provenance import hardware, package_versions

    gpus = torch.cuda.device_count()
    report = {"versions": package_versions(), "hardware": hardware(), "threads": _threads(),
              "shm_free_bytes": _free("/dev/shm"), "path": str(Path(path).resolve()),
              "disk_free_bytes": _free(path)}
    reasons: list[str] = []
    try:
        report["decode"] = decode_report(gpus, probe_seconds)
    except ImportError as err:
        report["decode"] = {"probes": [], "error": str(err)}
        reasons.append(f"the data pipeline does not import: {err}")
    if report["versions"]["ffmpeg"] is None:
        reasons.append("ffmpeg is not on PATH: `vtp shard` needs it")
    probes = report["decode"]["probes"]
    if probes and not any(p["ok"] for p in probes):
        reasons.append("no decode route works: " + "; ".join(p.get("error", "") for p in probes))
    shm = report["shm_free_bytes"]
    if shm is not None and shm < MIN_SHM_BYTES:
        reasons.append(f"/dev/shm has {shm / 2**20:.0f} MiB free; Streaming needs shared memory "
                       "(docker: --shm-size=8g)")
    disk = report["disk_free_bytes"]
    if disk is not None and disk < MIN_DISK_BYTES:
        reasons.append(f"only {disk / 2**30:.2f} GiB free under {path}")
    if recipe is not None:
        report["recipe"], recipe_reasons = recipe_report(recipe, gpus)
        report["recipe"]["name"] = recipe_name
        reasons += recipe_reasons
    report["reasons"], report["ready"] = reasons, not reasons
    return report


def _gib(value: int | None) -> str:
    return "unknown" if value is None else f"{value / 2**30:.1f} GiB"


def render(report: dict) -> str:
    """The report for people; the last line is the verdict."""
    v, hw, th = report["versions"], report["hardware"], report["threads"]
    lines = ["versions: " + ", ".join(f"{k} {val or 'missing'}" for k, val in v.items()),
             f"hardware: {hw['cpu']}, {hw['cores_visible']}/{hw['cores']} cores visible, "
             f"{hw['memory_gib']} GiB; GPUs: {', '.join(hw['gpus']) or 'none'} (CUDA {hw['cuda']})",
             f"threads: torch {th['torch_threads']} intra-op, "
             f"{th['torch_interop_threads']} inter-op",
             f"shared memory: {_gib(report['shm_free_bytes'])} free in /dev/shm",
             f"disk: {_gib(report['disk_free_bytes'])} free under {report['path']}"]
    dec = report["decode"]
    if "cpu_codecs" in dec:
        lines.append(f"decoding: CPU {', '.join(dec['cpu_codecs'])}; GPU "
                     f"{', '.join(dec['gpu_codecs']) or '-'} ({dec['nvdec']})")
    for p in dec["probes"]:
        result = (f"{p['clips_per_s']} clips/s, {p['frames_per_s']} frames/s" if p["ok"]
                  else f"FAILED: {p['error']}")
        lines.append(f"  probe {p['route']} {p['codec']}: {result}")
    if "recipe" in report:
        r = report["recipe"]
        lines.append(f"recipe {r['name']}: device {r['device']}, precision {r['precision']}, "
                     f"data {r['data_path'] or '-'} ({r['format']}, codec {r['shard_codec']}, "
                     f"decoded on {r['data_device']}), dry forward: {r['dry_forward']}")
    what = f"recipe {report['recipe']['name']}" if "recipe" in report else "vtp"
    if report["ready"]:
        lines.append(f"READY: this machine can run {what}")
    else:
        lines.append(f"NOT READY to run {what}: " + "; ".join(report["reasons"]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from commands.cli import UsageError

    if not Path(args.path).is_dir():
        raise UsageError(f"--path {args.path} is not a folder")
    if args.probe_seconds <= 0:
        raise UsageError("--probe-seconds must be positive")
    if args.set and not args.recipe:
        raise UsageError("--set needs --recipe")
    recipe = None
    if args.recipe:
        from recipes.config import RecipeError, load_recipe

        try:
            recipe = load_recipe(args.recipe, args.set)
        except RecipeError as err:
            raise UsageError(str(err)) from err
    report = diagnose(recipe, args.recipe, args.path, args.probe_seconds)
    print(json.dumps(report, indent=1, default=str) if args.json else render(report), flush=True)
    return 0 if report["ready"] else 1
