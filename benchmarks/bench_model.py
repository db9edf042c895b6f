"""Model train step: 90% tube masking vs no masking, and GPU throughput with MFU.

The limit is the same model on the same batch with nothing masked: the encoder passes then see
every tube, as in a plain (unmasked) video transformer. The ratio (unmasked time / masked time)
is what masking buys; MAE-ST reports > 4x wall-clock at 90%. Each CPU measurement runs in a
fresh process so its peak resident memory (``ru_maxrss``) belongs to that configuration only.

Needs only PyTorch, so it also runs on a bare GPU machine:
``python -m benchmarks.bench_model --gpu`` (samples/s and MFU in bf16 autocast with SDPA).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from model import UnifiedMAE, flops_per_batch, model_config
from model.synthetic import random_batch

ROOT = Path(__file__).resolve().parents[1]
CPU_CASES = [("tiny", 8, 2, 5), ("small", 2, 1, 1)]  # size, batch, warm-up steps, timed steps
GPU_CASES = [("small", 64), ("base", 32)]
TEXT_LEN = 32
# One thread: on a shared 2-core machine two threads thrash (measured 17x slower under load).
CPU_THREADS = 1
# Dense bf16 tensor-core peaks (vendor datasheets), for MFU; unknown cards report none.
PEAK_BF16 = {"H100 SXM": 989.4e12, "H100 NVL": 835.5e12, "H100 PCIe": 756.5e12, "H100": 989.4e12,
             "H200": 989.4e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 70e12}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def time_steps(size: str, ratio: float, batch_size: int, *, warmup: int, steps: int,
               device: str = "cpu", bf16: bool = False, optimizer: bool = False) -> dict:
    """Mean seconds per train step (forward + backward [+ AdamW]) and FLOPs per step.

    Args:
        size: model size preset.
        ratio: tube-mask ratio of the batch.
        batch_size: samples per step.
        warmup, steps: untimed and timed steps.
        device: "cpu" or "cuda".
        bf16: run under bf16 autocast.
        optimizer: include an AdamW step (a full training step).
    """
    config = model_config(size)
    torch.manual_seed(0)
    model = UnifiedMAE(config).to(device)
    batch = random_batch(config, batch_size, text_len=TEXT_LEN, mask_ratio=ratio, device=device)
    opt = (torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
           if optimizer else None)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(i: int) -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(batch, generator=torch.Generator().manual_seed(i))["loss"]
        loss.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)

    rss_before = _rss_bytes()
    for i in range(warmup):
        step(i)
    sync()
    start = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    sync()
    seconds = (time.perf_counter() - start) / steps
    return {"size": size, "ratio": ratio, "batch": batch_size, "seconds": seconds,
            "flops": flops_per_batch(config, batch),
            "peak_rss_delta":
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before,
            "visible": config.num_tokens - int(batch["video_mask"][0].sum())}


def _measure_in_child(size: str, ratio: float, batch: int, warmup: int, steps: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_model", "--threads", str(CPU_THREADS),
           "--one", size, str(ratio), str(batch), str(warmup), str(steps)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_section() -> str:
    rows, ratios = [], []
    for size, batch, warmup, steps in CPU_CASES:
        masked = _measure_in_child(size, 0.9, batch, warmup, steps)
        full = _measure_in_child(size, 0.0, batch, warmup, steps)
        ratios.append((size, full["seconds"] / masked["seconds"]))
        for r in (masked, full):
            rows.append(f"| {size} | {r['ratio']:.0%} | {r['visible']} | {batch} | "
                        f"{r['seconds'] * 1000:.0f} | {r['flops'] / 1e9:.1f} | "
                        f"{r['flops'] / r['seconds'] / 1e9:.1f} | "
                        f"{r['peak_rss_delta'] / 2**20:.0f} |")
        rows.append(f"| {size} | ratio 0% / 90% | | | {ratios[-1][1]:.2f}x | "
                    f"{full['flops'] / masked['flops']:.2f}x | | "
                    f"{full['peak_rss_delta'] / max(masked['peak_rss_delta'], 1):.2f}x |")
    verdicts = ", ".join(f"{s}: {r:.2f}x ({'met' if r >= 4 else 'NOT met'})" for s, r in ratios)
    return (
        "### CPU, fp32, forward + backward\n\n"
        f"{CPU_THREADS} torch thread; text length {TEXT_LEN}; each row a fresh "
        "process. Memory = peak RSS growth during the steps (activations + gradients).\n\n"
        "| size | mask | visible tubes | batch | ms/step | GFLOP/step | GFLOP/s | peak MiB |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Target: masking at 90% >= 4x faster per step than no masking: {verdicts}. The tiny "
        "config has 64 tubes and a 30,522-word MLM head, so fixed costs cap its ratio; the "
        "small config (ViT-S, 1,568 tubes) is the one the target is about.\n"
    )


def _peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def gpu_section(cases: list[tuple[str, int]] = GPU_CASES, steps: int = 10, warmup: int = 3) -> str:
    """Samples/s and MFU per (size, batch) in bf16 autocast (full AdamW step), masked and not."""
    if not torch.cuda.is_available():
        return "### GPU\n\nSkipped: no CUDA device on this machine.\n"
    name = torch.cuda.get_device_name()
    peak = _peak_flops(name)
    rows = []
    for size, batch in cases:
        for ratio, b in ((0.9, batch), (0.0, max(batch // 8, 1))):
            torch.cuda.reset_peak_memory_stats()
            r = time_steps(size, ratio, b, warmup=warmup, steps=steps, device="cuda", bf16=True,
                           optimizer=True)
            achieved = r["flops"] / r["seconds"]
            mfu = f"{achieved / peak:.1%}" if peak else "n/a"
            rows.append(f"| {size} | {ratio:.0%} | {b} | {b / r['seconds']:.1f} | "
                        f"{r['seconds'] * 1000:.1f} | {achieved / 1e12:.1f} | {mfu} | "
                        f"{torch.cuda.max_memory_allocated() / 2**30:.1f} |")
            torch.cuda.empty_cache()
    peak_text = f"{peak / 1e12:.0f} TFLOP/s dense bf16" if peak else "unknown peak"
    return (
        f"### GPU: {name} ({peak_text}), bf16 autocast, SDPA, AdamW step included\n\n"
        "| size | mask | batch | samples/s | ms/step | TFLOP/s | MFU | peak GiB |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Unmasked rows use 1/8 of the batch to fit memory; compare samples/s.\n"
    )


def run(work: Path) -> str:
    return ("## Model train step (`model.UnifiedMAE`)\n\n" + cpu_section() + "\n"
            + gpu_section())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gpu", action="store_true", help="GPU throughput and MFU only")
    parser.add_argument("--cases", default=",".join(f"{s}:{b}" for s, b in GPU_CASES),
                        help="GPU sizes and batches, e.g. base:32,large:8")
    parser.add_argument("--steps", type=int, default=10, help="timed GPU steps per case")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--one", nargs=5, metavar=("SIZE", "RATIO", "BATCH", "WARMUP", "STEPS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        size, ratio, batch, warmup, steps = args.one
        print(json.dumps(time_steps(size, float(ratio), int(batch), warmup=int(warmup),
                                    steps=int(steps))))
    elif args.gpu:
        cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
        print(gpu_section(cases, steps=args.steps))
    else:
        print(run(ROOT / "benchmarks" / "work" / "model"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
