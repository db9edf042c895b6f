"""The shared encoder out and back: ``encoder.safetensors`` plus the ``config.json`` that
rebuilds it. Released weights come in through model/interop.py (``init.video``/``init.text``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import ModelConfig
from .unified import UnifiedMAE

__all__ = ["export_encoder", "load_exported_encoder"]

ENCODER_FILE, CONFIG_FILE = "encoder.safetensors", "config.json"


def export_encoder(model: UnifiedMAE, out_dir: str | Path) -> dict[str, Path]:
    """Write the shared encoder (tubelet + text embeddings, blocks, norm) for downstream use.

    Args:
        model: the trained model.
        out_dir: folder to create; gets ``encoder.safetensors`` and ``config.json``.

    Returns:
        The two paths, under keys ``weights`` and ``config``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}
    paths = {"weights": out / ENCODER_FILE, "config": out / CONFIG_FILE}
    save_file(tensors, paths["weights"], metadata={"format": "vtp-encoder"})
    paths["config"].write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    return paths


def load_exported_encoder(out_dir: str | Path) -> UnifiedMAE:
    """Rebuild a model from :func:`export_encoder` output; the encoder loads strictly.

    The decoder and heads are fresh: use the result for ``encode_video``/``encode_text``.
    """
    from safetensors.torch import load_file

    out = Path(out_dir)
    config = ModelConfig.from_dict(json.loads((out / CONFIG_FILE).read_text()))
    model = UnifiedMAE(config)
    model.encoder.load_state_dict(load_file(out / ENCODER_FILE), strict=True)
    return model
