"""Checkpoint interop: VideoMAE pretraining files in, BERT embeddings in, encoder out.

Loaders never fail silently: each returns a :class:`LoadReport` naming every matched key and
every skipped one with the reason, and ``strict=True`` turns any skip into an error.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig
from .unified import UnifiedMAE

__all__ = ["LoadReport", "load_videomae_checkpoint", "load_bert_embeddings", "export_encoder",
           "load_exported_encoder"]

# Parts of our model a VideoMAE pretraining checkpoint covers (same names as the release).
VIDEOMAE_SCOPE = ("encoder.patch_embed.", "encoder.blocks.", "encoder.norm.", "decoder.",
                  "encoder_to_decoder.", "mask_token")
BERT_NAMES = ("word_embeddings.weight", "position_embeddings.weight",
              "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")
ENCODER_FILE, CONFIG_FILE = "encoder.safetensors", "config.json"


@dataclass
class LoadReport:
    """What a loader did.

    Attributes:
        source: the file or folder read.
        matched: model keys that received a tensor.
        skipped: file keys not loaded -> why (shape mismatch, unexpected, not a parameter).
        missing: model keys in the loader's scope that the file lacks (left as initialised).
        ignored: file keys left out by design (buffers such as BERT's ``position_ids``);
            unlike ``skipped`` they do not fail ``strict``.
        notes: anything else worth knowing (e.g. a truncated position table).
    """

    source: str
    matched: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.skipped and not self.missing

    def summary(self) -> str:
        lines = [f"{self.source}: {len(self.matched)} matched, {len(self.skipped)} skipped, "
                 f"{len(self.missing)} missing, {len(self.ignored)} ignored"]
        lines += [f"  skipped {k}: {why}" for k, why in sorted(self.skipped.items())]
        lines += [f"  missing {k}" for k in self.missing]
        lines += [f"  ignored {k}: {why}" for k, why in sorted(self.ignored.items())]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _read_torch_file(path: Path) -> dict:
    # VideoMAE checkpoints pickle their argparse Namespace next to the weights.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # the weights-only loader refused something
        raise ValueError(
            f"{path} holds objects beyond tensors and argparse.Namespace ({err}); vtp never "
            "unpickles code: convert a file you trust to a state dict of tensors") from err
    except Exception as err:  # torch raises RuntimeError, EOFError, ... for damaged files
        raise ValueError(f"{path} is truncated or not a torch checkpoint "
                         f"({type(err).__name__}: {err})") from err


def _unwrap(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint ('model'/'module'/'state_dict'), unprefixed."""
    for key in ("model", "module", "state_dict"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    return {k.removeprefix("module."): v for k, v in checkpoint.items() if torch.is_tensor(v)}


def _apply(model: nn.Module, tensors: dict[str, torch.Tensor], report: LoadReport,
           strict: bool) -> LoadReport:
    if strict and not report.clean:
        raise ValueError("checkpoint does not match the model:\n" + report.summary())
    model.load_state_dict(tensors, strict=False)
    return report


def load_videomae_checkpoint(model: UnifiedMAE, path: str | Path, *,
                             strict: bool = False) -> LoadReport:
    """Load a VideoMAE pretraining checkpoint (``.pth``) into the video encoder and decoder.

    Official keys (``encoder.patch_embed.proj``, ``encoder.blocks.N.*``, ``encoder.norm``,
    ``decoder.blocks.N.*``, ``decoder.norm``, ``decoder.head``, ``encoder_to_decoder.weight``,
    ``mask_token``) map one to one; the text side and the MLM/VTM heads stay fresh, as in
    SimVTP.

    Args:
        model: the model to fill in place.
        path: the ``.pth`` file (a dict with ``model``, or a bare state dict).
        strict: raise if any key is skipped or missing.
    """
    path = Path(path)
    source = _unwrap(_read_torch_file(path))
    own = model.state_dict()
    scope = [k for k in own if k.startswith(VIDEOMAE_SCOPE)]
    report, tensors = LoadReport(str(path)), {}
    for key, value in source.items():
        if key.endswith("pos_embed"):
            report.skipped[key] = "this model uses the fixed sinusoid table"
        elif key not in scope:
            report.skipped[key] = "unexpected: no such parameter in the video model"
        elif value.shape != own[key].shape:
            report.skipped[key] = (f"shape mismatch: file {tuple(value.shape)} vs model "
                                   f"{tuple(own[key].shape)}")
        else:
            tensors[key] = value
    report.matched = sorted(tensors)
    report.missing = [k for k in scope if k not in source]
    return _apply(model, tensors, report, strict)


def _read_bert_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = model_dir / "model.safetensors.index.json"
    if (model_dir / "model.safetensors").exists():
        return load_file(model_dir / "model.safetensors")
    if index.exists():
        shards = set(json.loads(index.read_text())["weight_map"].values())
        return {k: v for s in sorted(shards) for k, v in load_file(model_dir / s).items()}
    if (model_dir / "pytorch_model.bin").exists():
        return torch.load(model_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{model_dir} has no model.safetensors(.index.json) or "
                            "pytorch_model.bin")


def load_bert_embeddings(model: UnifiedMAE, model_dir: str | Path, *,
                         strict: bool = False) -> LoadReport:
    """Load BERT's word, position and token-type embeddings and their LayerNorm.

    Reads the weights of a local ``transformers`` model folder directly (any prefix before
    ``embeddings.``: ``bert.``, none, ...). A longer position table is cut to
    ``max_text_len`` rows (positions 0..L-1 mean the same); other shape differences skip.

    Args:
        model: a model built with ``use_text=True``.
        model_dir: folder with ``config.json`` and the weights.
        strict: raise if any embedding key is skipped or missing.
    """
    if model.encoder.text_embed is None:
        raise ValueError("the model was built with use_text=False: it has no text embeddings")
    model_dir = Path(model_dir)
    pattern = re.compile(r"^(?:.*\.)?embeddings\.(.+)$")
    own = model.state_dict()
    report, tensors = LoadReport(str(model_dir)), {}
    for key, value in _read_bert_tensors(model_dir).items():
        found = pattern.match(key)
        if not found:
            continue
        name, target = found.group(1), "encoder.text_embed." + found.group(1)
        if name == "position_ids":
            report.ignored[key] = "a buffer (0..L-1), not a parameter"
            continue
        if name not in BERT_NAMES:
            report.skipped[key] = "unexpected: not a parameter of the embedding module"
            continue
        rows = own[target].shape[0]
        if name == "position_embeddings.weight" and value.shape[0] > rows and \
                value.shape[1:] == own[target].shape[1:]:
            report.notes.append(f"{key}: kept the first {rows} of {value.shape[0]} positions")
            value = value[:rows]
        if value.shape != own[target].shape:
            report.skipped[key] = (f"shape mismatch: file {tuple(value.shape)} vs model "
                                   f"{tuple(own[target].shape)}")
            continue
        tensors[target] = value
    report.matched = sorted(tensors)
    report.missing = [f"encoder.text_embed.{n}" for n in BERT_NAMES
                      if f"encoder.text_embed.{n}" not in tensors
                      and not any(k.endswith("embeddings." + n) for k in report.skipped)]
    _note_eps(model_dir, model.config, report)
    return _apply(model, tensors, report, strict)


def _note_eps(model_dir: Path, config: ModelConfig, report: LoadReport) -> None:
    config_file = model_dir / "config.json"
    if config_file.exists():
        eps = json.loads(config_file.read_text()).get("layer_norm_eps")
        if eps is not None and eps != config.text_ln_eps:
            report.notes.append(f"BERT layer_norm_eps {eps} differs from text_ln_eps "
                                f"{config.text_ln_eps}")


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
