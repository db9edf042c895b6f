"""One experiment run in its own process: train through the recipe, evaluate, write the result.

``python -m commands.experiment.worker SPEC.json``. A process per run keeps each Composer
trainer, Streaming dataset and torch thread setting apart from the next run's. The result
json is written last and atomically: its presence is what marks the run finished.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path


def final_losses(batch_log: Path, last: int = 25) -> dict[str, float]:
    """Mean of each loss term over the last ``last`` batches of a `BatchLog` jsonl."""
    if not batch_log.is_file():
        return {}
    lines = [json.loads(line) for line in batch_log.read_text().splitlines() if line.strip()]
    tail = lines[-last:]
    terms = sorted({term for line in tail for term in line["loss"]})
    return {term: sum(line["loss"].get(term, 0.0) for line in tail) / len(tail) for term in terms}


def trained(trainer) -> bool:
    """The trainer already stands at its max duration (Composer refuses to fit it again)."""
    state = trainer.state
    return state.max_duration is not None and (
        state.timestamp.get(state.max_duration.unit) >= state.max_duration)


def run_spec(spec: dict) -> dict:
    """Trains and evaluates the run ``spec`` describes; writes and returns its result."""
    from evaluation.evaluate import EvalConfig, evaluate_checkpoint
    from recipes.config import load_recipe
    from recipes.train import build_trainer, summary

    start = time.perf_counter()
    trainer = build_trainer(load_recipe(spec["recipe"], spec["overrides"]))
    if not trained(trainer):  # else autoresume loaded the final checkpoint: cut off in eval
        trainer.fit()
    steps = int(trainer.state.timestamp.batch)
    text = summary(trainer)
    trainer.close()
    print(text, flush=True)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    checkpoint = Path(spec["checkpoint_folder"]) / "latest-rank0.pt"
    eval_cfg = EvalConfig(data=spec["test"], out=spec["eval_out"], workers=1,
                          gallery_size=spec.get("gallery_size"))
    metrics = evaluate_checkpoint(checkpoint, eval_cfg, progress=False)
    result = {**spec["run"], "run_id": spec["run_id"], "fingerprint": spec["fingerprint"],
              "metrics": metrics, "steps": steps,
              "final_losses": final_losses(Path(spec["batch_log"])),
              "train_seconds": round(train_seconds, 1),
              "eval_seconds": round(time.perf_counter() - start, 1),
              "overrides": spec["overrides"], "recipe": spec["recipe"]}
    out = Path(spec["result"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    if not spec.get("keep_checkpoints"):
        shutil.rmtree(spec["checkpoint_folder"], ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m commands.experiment.worker SPEC.json", file=sys.stderr)
        return 2
    from commands.experiment.runner import PARENT_ENV
    from tools.shard.lifeline import die_with_parent

    if os.environ.get(PARENT_ENV):  # a runner's kill -9 must not leave a run training on
        die_with_parent(int(os.environ[PARENT_ENV]))
    result = run_spec(json.loads(Path(argv[0]).read_text()))
    m = result["metrics"]
    print(f"run {result['run_id']}: t2v R@1 {m['t2v_r1']:.1f} R@5 {m['t2v_r5']:.1f}, "
          f"v2t R@1 {m['v2t_r1']:.1f} (chance R@1 {m['chance_r1']:.2f}, n {m['n']})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
