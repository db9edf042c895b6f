"""Export a trained video encoder: vtp export CHECKPOINT --format hf-videomae --out DIR.

Writes DIR/config.json and DIR/model.safetensors, a transformers ``VideoMAEModel`` that
``VideoMAEModel.from_pretrained(DIR)`` loads with no missing or unexpected keys; its
``last_hidden_state`` is vtp's video encoder output (final LayerNorm included, so the config
has ``use_mean_pooling: false``). The text embeddings, decoder and heads are not part of a
VideoMAEModel and are not written.
"""

from __future__ import annotations

import argparse

FORMATS = ("hf-videomae",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a `vtp train` checkpoint (e.g. .../latest-rank0.pt)")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--out", required=True, help="output folder (must not hold a model)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from commands.cli import UsageError
    from model.interop import export_hf_videomae
    from recipes.checkpoint import load_trained_model

    checkpoint, out = Path(args.checkpoint), Path(args.out)
    if not checkpoint.is_file():
        raise UsageError(f"checkpoint {checkpoint} does not exist")
    taken = [n for n in ("config.json", "model.safetensors") if (out / n).exists()]
    if taken:  # never overwrite a model someone already has there
        raise UsageError(f"{out} already holds {', '.join(taken)}; choose another --out")
    try:
        model = load_trained_model(checkpoint)
        export_hf_videomae(model, out)
    except ValueError as err:
        raise UsageError(str(err)) from err
    c = model.config
    print(f"wrote {out} (transformers VideoMAEModel: {c.depth} blocks, width {c.width}, "
          f"{c.num_frames} frames at {c.image_size} px, tubelet {'x'.join(map(str, c.tubelet))})")
    return 0
