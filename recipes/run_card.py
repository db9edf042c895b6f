"""Run cards: the record that makes a number reproducible, written beside what it describes.

`vtp train` writes ``run_card.json`` and ``run_card.md`` beside its checkpoints (the
:class:`RunCard` callback: at the start, after every checkpoint, at the end, and when the
divergence guard stops the run). `vtp eval` writes its card next to ``metrics.json``
(:func:`write_eval_card`), naming the checkpoint by hash and the training card it came from.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from composer import Callback, Logger, State
from composer.utils import dist, format_name_with_dist

from recipes.provenance import data_identity, environment, sha256_file

__all__ = ["RunCard", "card_folder", "write_eval_card", "after_checkpoint_saver", "CARD_JSON",
           "CARD_MD"]

CARD_JSON, CARD_MD = "run_card.json", "run_card.md"
TIE_RULE = "pessimistic: a true match tied with another candidate gets the worse rank"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def card_folder(save_folder: str | None, run_name: str) -> Path | None:
    """Where a run's card goes: its checkpoint folder, ``{run_name}`` filled in; None when
    the run saves nothing or saves to object storage (``s3://...``: no local folder)."""
    if not save_folder or "://" in save_folder:
        return None
    return Path(format_name_with_dist(save_folder, run_name))


def after_checkpoint_saver(callbacks: list[Callback]) -> None:
    """Moves callbacks marked ``after_checkpoints`` behind Composer's checkpoint saver (which
    the Trainer appends last), so that at a checkpoint event they see the file just saved."""
    late = [cb for cb in callbacks if getattr(cb, "after_checkpoints", False)]
    callbacks[:] = [cb for cb in callbacks if cb not in late] + late


def _write(folder: Path, card: dict, markdown: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in ((CARD_JSON, json.dumps(card, indent=2, default=str) + "\n"),
                       (CARD_MD, markdown)):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / name)  # a reader never sees half a card


class RunCard(Callback):
    """Keeps ``run_card.json`` / ``run_card.md`` of a training run up to date (rank 0 writes).

    Args:
        recipe: the resolved recipe (a :class:`recipes.config.RecipeConfig`).
        argv: the command line; defaults to ``sys.argv``.
    """

    after_checkpoints = True  # build_trainer runs it after Composer's checkpoint saver

    def __init__(self, recipe: Any, argv: list[str] | None = None) -> None:
        self.recipe = recipe
        self.argv = list(sys.argv if argv is None else argv)
        self.card: dict[str, Any] = {}
        self.folder: Path | None = None
        self._saved_seen = 0

    # -- events ----------------------------------------------------------------------------
    def fit_start(self, state: State, logger: Logger) -> None:
        self.folder = card_folder(self.recipe.trainer.save_folder, state.run_name)
        if self.folder is None or dist.get_global_rank() != 0:
            return
        previous = self._previous() if int(state.timestamp.batch) > 0 else {}
        data = self.recipe.data
        self.card = {
            "kind": "train", "run_name": state.run_name, "status": "running",
            "command": self.argv, "start_time": previous.get("start_time", _now()),
            "segment_start_time": _now(), "end_time": None,
            "resumed_at_batch": int(state.timestamp.batch) or None,
            **environment(),
            "world_size": dist.get_world_size(),
            "data": data_identity(data.path, data.format) | {"remote": data.remote},
            "recipe": dataclasses.asdict(self.recipe),
            "progress": {},
            "losses": {"final": {}, "best": previous.get("losses", {}).get("best", {})},
            "checkpoints": previous.get("checkpoints", []),
        }
        self._write(state)

    def after_dataloader(self, state: State, logger: Logger) -> None:
        """Corrupt samples the loader replaced (recipes.callbacks.BadSamples counts them)."""
        skipped = state.batch.get("skipped") if isinstance(state.batch, dict) else None
        if self.card and skipped:
            bad = self.card.setdefault("bad_samples", {})
            bad.update({s["key"]: s["reason"] for s in skipped})

    def batch_end(self, state: State, logger: Logger) -> None:
        if not self.card:
            return
        losses = {k.removeprefix("loss/train/"): float(v) for k, v in state.total_loss_dict.items()}
        step = int(state.timestamp.batch)
        self.card["losses"]["final"] = {"step": step, **losses}
        best = self.card["losses"]["best"]
        for term, value in losses.items():
            if term not in best or value < best[term]["value"]:
                best[term] = {"value": value, "step": step}

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        if self.card and self._note_checkpoints(state):
            self._write(state)

    def epoch_checkpoint(self, state: State, logger: Logger) -> None:
        self.batch_checkpoint(state, logger)

    def fit_end(self, state: State, logger: Logger) -> None:
        if not self.card:
            return
        self._note_checkpoints(state)
        self.card.update(status="finished", end_time=_now())
        self._write(state)

    def record_failure(self, state: State, reason: str, status: str = "diverged") -> None:
        """Called by the divergence guard (and for a spent bad-sample budget) before the run
        stops."""
        if not self.card:
            return
        self.card.update(status=status, end_time=_now(), failure=reason)
        self._write(state)

    # -- helpers ---------------------------------------------------------------------------
    def _previous(self) -> dict:
        path = self.folder / CARD_JSON
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def _note_checkpoints(self, state: State) -> bool:
        from composer.callbacks import CheckpointSaver

        savers = [cb for cb in state.callbacks if isinstance(cb, CheckpointSaver)]
        saved = [path for saver in savers for path in saver.saved_checkpoints]
        names = {c["file"] for c in self.card["checkpoints"]}
        new = [p for p in saved if Path(p).name not in names]
        for path in new:
            self.card["checkpoints"].append({"file": Path(path).name,
                                             "batch": int(state.timestamp.batch), "time": _now()})
        return bool(new)

    def _write(self, state: State) -> None:
        ts = state.timestamp
        seconds = ts.total_wct.total_seconds()
        self.card["progress"] = {
            "batches": int(ts.batch), "samples": int(ts.sample), "epochs": int(ts.epoch),
            "train_seconds": round(seconds, 1),
            "samples_per_second": round(int(ts.sample) / seconds, 2) if seconds > 0 else None,
        }
        for entry in self.card["checkpoints"]:
            entry["exists"] = (self.folder / entry["file"]).is_file()
        _write(self.folder, self.card, train_markdown(self.card))


def train_markdown(card: dict) -> str:
    """The training card for people."""
    git, data, prog = card["git"], card["data"], card["progress"]
    rev = f"{git['revision'] or 'not a git checkout'}" + (" (dirty tree)" if git["dirty"] else "")
    final = card["losses"]["final"]
    loss_rows = [f"| {t} | {final.get(t, float('nan')):.4f} | {b['value']:.4f} (step {b['step']}) |"
                 for t, b in sorted(card["losses"]["best"].items())]
    ckpts = [f"- `{c['file']}` at batch {c['batch']}" + ("" if c.get("exists", True) else
                                                         " (rotated out)")
             for c in card["checkpoints"]] or ["- none"]
    lines = [
        f"# Run card: {card['run_name']} ({card['status']})", "",
        f"- command: `{' '.join(card['command'])}`",
        f"- code: {rev}",
        f"- started {card['start_time']}, ended {card['end_time'] or '-'}"
        + (f" (resumed at batch {card['resumed_at_batch']})"
           if card.get("resumed_at_batch") else ""),
        f"- progress: {prog.get('batches')} batches, {prog.get('samples')} samples, "
        f"{prog.get('samples_per_second')} samples/s, {card['world_size']} process(es)",
        f"- data: `{data['path']}` ({data['format']}), {data['samples']} samples, index sha256 "
        f"`{data['index_sha256']}`, manifest sha256 `{data['manifest_sha256']}`",
        f"- hardware: {_hardware_line(card['hardware'])}",
        f"- packages: {_packages_line(card['packages'])}",
    ]
    if card.get("failure"):
        lines += ["", f"**Stopped:** {card['failure']}"]
    if card.get("bad_samples"):
        lines += ["", f"Corrupt samples skipped ({len(card['bad_samples'])}):",
                  *[f"- `{key}`: {reason}" for key, reason in sorted(card["bad_samples"].items())]]
    lines += ["", "| loss term | final | best |", "|---|---|---|", *loss_rows,
              "", "Checkpoints:", *ckpts, "",
              f"The resolved recipe is in `{CARD_JSON}` under `recipe`.", ""]
    return "\n".join(lines)


def _hardware_line(hw: dict) -> str:
    gpus = ", ".join(hw["gpus"]) or "no GPU"
    return (f"{hw['cpu']}, {hw['cores_visible']}/{hw['cores']} cores, {hw['memory_gib']} GiB, "
            f"{gpus} (CUDA {hw['cuda']}), {hw['platform']}")


def _packages_line(packages: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in packages.items() if v)


def write_eval_card(out: str | Path, checkpoint: str | Path, metrics: dict, split: str,
                    argv: list[str] | None = None) -> Path:
    """Writes ``OUT/run_card.json`` and ``OUT/run_card.md`` for an evaluation.

    Args:
        out: the evaluation folder (where ``metrics.json`` is).
        checkpoint: the evaluated checkpoint; its training card is looked up beside it.
        metrics: what ``evaluate_checkpoint`` returned.
        split: the test split (a json path or shard folder).
        argv: the command line; defaults to ``sys.argv``.
    """
    checkpoint = Path(checkpoint)
    train_card_path = checkpoint.resolve().parent / CARD_JSON
    train_card = None
    if train_card_path.is_file():
        raw = json.loads(train_card_path.read_text())
        train_card = {"path": str(train_card_path), "sha256": sha256_file(train_card_path),
                      "run_name": raw.get("run_name"), "git": raw.get("git"),
                      "data": raw.get("data"), "status": raw.get("status")}
    card = {
        "kind": "eval", "time": _now(), "command": list(sys.argv if argv is None else argv),
        "checkpoint": {"path": str(checkpoint), "sha256": sha256_file(checkpoint)},
        "train_card": train_card,
        "split": {"name": Path(split).stem if Path(split).suffix else Path(split).name,
                  "path": str(split)},
        "n": metrics.get("n"), "views": metrics.get("views"), "mode": metrics.get("mode"),
        "tie_rule": TIE_RULE, "failed_clips": metrics.get("failed"),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        **environment(),
    }
    folder = Path(out)
    _write(folder, card, eval_markdown(card))
    return folder / CARD_JSON


def eval_markdown(card: dict) -> str:
    """The evaluation card for people."""
    git, tc, m = card["git"], card["train_card"], card["metrics"]
    came_from = (f"`{tc['path']}` (run {tc['run_name']}, {tc['status']}, sha256 `{tc['sha256']}`)"
                 if tc else "no training card beside the checkpoint (trained before run cards?)")
    lines = [
        f"# Eval card: {card['split']['name']} ({card['mode']})", "",
        f"- command: `{' '.join(card['command'])}`",
        f"- checkpoint: `{card['checkpoint']['path']}` sha256 `{card['checkpoint']['sha256']}`",
        f"- trained by: {came_from}",
        f"- split: `{card['split']['path']}`, n = {card['n']}, views = {card['views']}, "
        f"failed clips = {card['failed_clips']}",
        f"- ties: {card['tie_rule']}",
        f"- code: {git['revision']}" + (" (dirty tree)" if git["dirty"] else ""),
        f"- hardware: {_hardware_line(card['hardware'])}",
        f"- packages: {_packages_line(card['packages'])}", "",
        f"text->video R@1 {m.get('t2v_r1', float('nan')):.2f}%, video->text R@1 "
        f"{m.get('v2t_r1', float('nan')):.2f}%, chance {m.get('chance_r1', float('nan')):.2f}%", "",
    ]
    return "\n".join(lines)
