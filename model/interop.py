"""Released weights in (VideoMAE, BERT embeddings) and a transformers VideoMAE out.

What SimVTP starts from (its run_simvtp_pretraining.py @4b54321): the whole VideoMAE ViT-B K400
pretraining checkpoint (encoder, decoder, mask token, encoder_to_decoder) and BERT's embedding
module. Two video layouts are read:

- the original release (``checkpoint.pth``: a dict with ``model`` or ``module``,
  ``encoder.``-prefixed keys, fused ``attn.qkv`` with separate ``q_bias``/``v_bias``), whose
  names are ours already;
- a transformers ``VideoMAEModel`` / ``VideoMAEForPreTraining`` folder (``config.json`` plus
  ``model.safetensors`` or ``pytorch_model.bin``), whose separate query/key/value are fused.

Nothing is skipped quietly: every tensor of the file is loaded, or set aside by design with
its reason (an optimizer state, BERT's transformer layers), and the counts per group are
reported; a shape that does not fit, an unknown key or a missing encoder tensor is an
:class:`InitError` listing every problem. Files are read with ``torch.load(weights_only=True)``
or safetensors: a pickle that would run code is refused, never executed.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig
from .layers import sinusoid_table

__all__ = ["InitError", "InitReport", "read_weights", "init_video", "init_text",
           "export_hf_videomae", "hf_videomae_config", "vtp_to_hf_videomae"]

# (transformers name inside one layer, ours inside one Block); q/k/v are fused separately.
HF_LAYER = (("attention.attention.q_bias", "attn.q_bias"),
            ("attention.attention.v_bias", "attn.v_bias"),
            ("attention.output.dense.weight", "attn.proj.weight"),
            ("attention.output.dense.bias", "attn.proj.bias"),
            ("intermediate.dense.weight", "mlp.fc1.weight"),
            ("intermediate.dense.bias", "mlp.fc1.bias"),
            ("output.dense.weight", "mlp.fc2.weight"), ("output.dense.bias", "mlp.fc2.bias"),
            ("layernorm_before.weight", "norm1.weight"), ("layernorm_before.bias", "norm1.bias"),
            ("layernorm_after.weight", "norm2.weight"), ("layernorm_after.bias", "norm2.bias"))
HF_TOP = (("embeddings.patch_embeddings.projection.weight", "encoder.patch_embed.proj.weight"),
          ("embeddings.patch_embeddings.projection.bias", "encoder.patch_embed.proj.bias"),
          ("layernorm.weight", "encoder.norm.weight"), ("layernorm.bias", "encoder.norm.bias"))
QKV = ("query", "key", "value")
BERT_PARTS = ("word_embeddings.weight", "position_embeddings.weight",
              "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")
DECODER_PREFIXES = ("decoder.", "encoder_to_decoder.", "mask_token")
VIDEO_ENCODER_PREFIXES = ("encoder.patch_embed.", "encoder.blocks.", "encoder.norm.")


class InitError(ValueError):
    """The weights cannot initialise this model; the message lists every problem."""


@dataclass
class InitReport:
    """What an initialisation did, by group.

    Attributes:
        source: the file or folder read.
        loaded: group -> tensors copied into the model.
        fresh: group -> model tensors the file does not hold (left as initialised).
        unused: reason -> file tensors set aside by design.
        notes: anything else worth knowing (a truncated position table, another eps).
    """

    source: str
    loaded: Counter = field(default_factory=Counter)
    fresh: Counter = field(default_factory=Counter)
    unused: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"loaded {n} tensors into {g}" for g, n in sorted(self.loaded.items())]
        out += [f"kept fresh {n} tensors of {g} (not in the file)"
                for g, n in sorted(self.fresh.items())]
        out += [f"set aside {n} file tensors: {why}" for why, n in sorted(self.unused.items())]
        return out + [f"note: {n}" for n in self.notes]

    def summary(self, name: str) -> str:
        return "\n".join([f"init.{name} from {self.source}:"] + [f"  {x}" for x in self.lines()])

    def as_dict(self) -> dict:
        return {"source": self.source, "loaded": dict(self.loaded), "fresh": dict(self.fresh),
                "unused": dict(self.unused), "notes": list(self.notes)}


# -- reading ---------------------------------------------------------------------------------
def _torch_load(path: Path) -> object:
    # The release pickles its argparse Namespace next to the weights: a plain attribute bag,
    # safe to rebuild; anything else that is not a tensor container is refused.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError, ... all mean "not ours"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InitError(
            f"{path} is not a weights file that can be read safely: torch.load(weights_only="
            f"True) refused it ({first}). vtp never unpickles code; convert the file to a "
            "state dict of tensors (or safetensors) where you trust it.") from err


def _read_file(path: Path) -> object:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as err:
            raise InitError(f"{path} is not a readable safetensors file ({err})") from err
    return _torch_load(path)


def _read_folder(folder: Path) -> dict:
    from safetensors.torch import load_file

    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return _read_file(single)
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for s in shards for k, v in load_file(folder / s).items()}
    if (folder / "pytorch_model.bin").is_file():
        return _torch_load(folder / "pytorch_model.bin")
    raise InitError(f"{folder} holds no model.safetensors(.index.json) or pytorch_model.bin")


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, Counter]:
    """The tensors of a checkpoint file or a transformers folder, never unpickling code.

    Returns:
        (state dict with any ``module.`` prefix removed, the folder's ``config.json`` or {},
        reason -> count of entries that are not model weights, e.g. an optimizer state).

    Raises:
        InitError: missing path, unreadable or unsafe file, or no tensors in it.
    """
    path = Path(path)
    if not path.exists():
        raise InitError(f"{path} does not exist")
    config: dict = {}
    if path.is_dir():
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
        raw = _read_folder(path)
    else:
        raw = _read_file(path)
    if not isinstance(raw, dict):
        raise InitError(f"{path} holds a {type(raw).__name__}, not a dict of tensors")
    aside: Counter = Counter()
    for wrapper in ("model", "module", "state_dict"):
        if isinstance(raw.get(wrapper), dict):
            aside.update({f"training state beside '{wrapper}' ({k})": 1
                          for k in raw if k != wrapper})
            raw = raw[wrapper]
            break
    state = {k.removeprefix("module."): v for k, v in raw.items() if torch.is_tensor(v)}
    for key, value in raw.items():
        if not torch.is_tensor(value):
            aside[f"not a tensor ({key})"] += 1
    if not state:
        raise InitError(f"{path} holds no tensors")
    return state, config, aside


# -- names -----------------------------------------------------------------------------------
def _hf_to_vtp(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """transformers VideoMAE names -> ours (q/k/v fused); returns (mapped, unknown keys)."""
    state = {k.removeprefix("videomae."): v for k, v in state.items()}
    same = ("encoder_to_decoder.weight", "mask_token", "decoder.norm.weight",
            "decoder.norm.bias", "decoder.head.weight", "decoder.head.bias")
    pairs = [*HF_TOP, *((k, k) for k in same)]
    out = {ours: state[hf] for hf, ours in pairs if hf in state}
    used = {hf for hf, _ in pairs if hf in state}
    layer = re.compile(r"^(encoder\.layer|decoder\.decoder_layers)\.(\d+)\.")
    stacks = {m.group(0) for k in state if (m := layer.match(k))}
    for prefix in sorted(stacks):
        kind, index = layer.match(prefix).groups()
        ours = f"{'encoder' if kind == 'encoder.layer' else 'decoder'}.blocks.{index}."
        for hf, mine in HF_LAYER:
            if prefix + hf in state:
                out[ours + mine] = state[prefix + hf]
                used.add(prefix + hf)
        names = [f"{prefix}attention.attention.{p}.weight" for p in QKV]
        if all(n in state for n in names):
            out[ours + "attn.qkv.weight"] = torch.cat([state[n] for n in names])
            used.update(names)
    return out, sorted(set(state) - used)


def vtp_to_hf_videomae(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Our video encoder's tensors -> ``VideoMAEModel`` names (qkv split into q, k, v)."""
    out = {hf: state[ours] for hf, ours in HF_TOP}
    for i in range(depth):
        src, dst = f"encoder.blocks.{i}.", f"encoder.layer.{i}."
        for hf, mine in HF_LAYER:
            out[dst + hf] = state[src + mine]
        for part, tensor in zip(QKV, state[src + "attn.qkv.weight"].chunk(3), strict=True):
            out[f"{dst}attention.attention.{part}.weight"] = tensor
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def _group(key: str) -> str:
    for prefix in ("encoder.patch_embed", "encoder.blocks", "encoder.norm", "encoder.text_embed"):
        if key.startswith(prefix):
            return prefix
    return "decoder" if key.startswith(DECODER_PREFIXES) else key.split(".")[0]


# -- loading ---------------------------------------------------------------------------------
def _check_shapes(own: dict, tensors: dict) -> list[str]:
    return [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in sorted(tensors.items()) if k in own and v.shape != own[k].shape]


def _hf_config_problems(config: dict, c: ModelConfig, report: InitReport) -> list[str]:
    """What a transformers config.json says that shapes alone cannot show (heads, tubelet)."""
    want = {"num_attention_heads": c.num_heads, "tubelet_size": c.tubelet[0],
            "patch_size": c.tubelet[1], "num_hidden_layers": c.depth, "hidden_size": c.width,
            "qkv_bias": True}
    problems = [f"config.json {k}={config[k]!r} but the model has {v!r}"
                for k, v in want.items() if k in config and config[k] != v]
    if config.get("layer_norm_eps", c.ln_eps) != c.ln_eps:
        report.notes.append(f"the file's layer_norm_eps {config['layer_norm_eps']} differs from "
                            f"model.ln_eps {c.ln_eps} (weights load; outputs shift slightly)")
    return problems


def _pos_embed_problem(key: str, value: torch.Tensor, c: ModelConfig) -> str | None:
    table = sinusoid_table(c.num_tokens, value.shape[-1])
    if value.reshape(-1).numel() == table.numel() and torch.allclose(
            value.reshape(table.shape).float(), table, atol=1e-4):
        return None
    return (f"{key}: a position table {tuple(value.shape)} that is not the fixed sinusoid "
            "table this model uses (a learned table cannot be carried over)")


def init_video(model: nn.Module, path: str | Path) -> InitReport:
    """Initialise the video encoder (and the decoder, when the model has one) from VideoMAE.

    Args:
        model: a :class:`model.UnifiedMAE`, filled in place.
        path: an original ``.pth`` (``model``/``module`` dict, ``encoder.``-prefixed keys) or a
            transformers ``VideoMAEModel``/``VideoMAEForPreTraining`` folder.

    Raises:
        InitError: unreadable or unsafe file, shapes or heads that do not fit, unknown keys,
            or encoder tensors the file lacks; every problem is listed.
    """
    c: ModelConfig = model.config
    state, config, aside = read_weights(path)
    report, problems = InitReport(str(path), unused=aside), []
    if config:
        problems += _hf_config_problems(config, c, report)
    if any(k.startswith(("videomae.", "embeddings.patch_embeddings")) for k in state):
        state, unknown = _hf_to_vtp(state)
    else:
        unknown = []
        for key in [k for k in state if k.endswith("pos_embed")]:
            problem = _pos_embed_problem(key, state.pop(key), c)
            if problem:
                problems.append(problem)
            else:
                report.unused["fixed sinusoid position table (equal to ours)"] += 1
    own = model.state_dict()
    has_decoder = any(k.startswith(DECODER_PREFIXES) for k in own)
    tensors = {}
    for key, value in state.items():
        if key.startswith(DECODER_PREFIXES) and not has_decoder:
            report.unused["video decoder: this model has none (mvm_weight 0)"] += 1
        elif key in own and key.startswith(VIDEO_ENCODER_PREFIXES + DECODER_PREFIXES):
            tensors[key] = value
        else:
            unknown.append(key)
    problems += [f"{k}: no such tensor in the video model" for k in sorted(unknown)]
    problems += _check_shapes(own, tensors)
    scope = [k for k in own if k.startswith(VIDEO_ENCODER_PREFIXES)]
    problems += [f"{k}: the file has no such tensor" for k in scope if k not in tensors]
    _finish(model, tensors, report, problems, own, DECODER_PREFIXES)
    return report


def init_text(model: nn.Module, path: str | Path) -> InitReport:
    """Initialise the text embeddings from a transformers BERT folder (SimVTP takes
    ``AutoModelForMaskedLM(...).bert.embeddings``).

    Word, position and token-type embeddings and their LayerNorm are copied; BERT's
    transformer layers, pooler and heads are set aside (SimVTP uses the embeddings only).
    A longer position table keeps its first ``max_text_len`` rows (positions mean the same).

    Raises:
        InitError: no text side, unreadable file, missing embedding tensors or other shapes.
    """
    c: ModelConfig = model.config
    if getattr(model.encoder, "text_embed", None) is None:
        raise InitError("init.text: this model has no text side (model.use_text is false)")
    state, config, aside = read_weights(path)
    report, problems, tensors = InitReport(str(path), unused=aside), [], {}
    own = model.state_dict()
    pattern = re.compile(r"^(?:.*\.)?embeddings\.(.+)$")
    for key, value in state.items():
        found = pattern.match(key)
        name = found.group(1) if found else None
        if name in ("position_ids", "token_type_ids"):
            report.unused["index buffers (position_ids, token_type_ids), not parameters"] += 1
        elif name in BERT_PARTS:
            target = f"encoder.text_embed.{name}"
            rows = own[target].shape[0]
            if name.startswith("position") and value.shape[0] > rows:
                report.notes.append(f"{key}: kept the first {rows} of {value.shape[0]} positions")
                value = value[:rows]
            tensors[target] = value
        else:
            report.unused["BERT layers/pooler/heads: SimVTP uses BERT's embeddings only"] += 1
    problems += _check_shapes(own, tensors)
    problems += [f"encoder.text_embed.{n}: the file has no '...embeddings.{n}'"
                 for n in BERT_PARTS if f"encoder.text_embed.{n}" not in tensors]
    eps = config.get("layer_norm_eps")
    if eps is not None and eps != c.text_ln_eps:
        report.notes.append(f"the file's layer_norm_eps {eps} differs from model.text_ln_eps "
                            f"{c.text_ln_eps}")
    _finish(model, tensors, report, problems, own, ())
    return report


def _finish(model: nn.Module, tensors: dict, report: InitReport, problems: list[str],
            own: dict, optional_prefixes: tuple[str, ...]) -> None:
    if problems:
        raise InitError(f"{report.source} does not fit this model ({len(problems)} problem(s)):\n"
                        + "\n".join(f"  {p}" for p in problems))
    model.load_state_dict(tensors, strict=False)
    report.loaded.update(_group(k) for k in tensors)
    if optional_prefixes:
        report.fresh.update(_group(k) for k in own
                            if k.startswith(optional_prefixes) and k not in tensors)


# -- export ----------------------------------------------------------------------------------
def hf_videomae_config(c: ModelConfig):
    """The ``transformers.VideoMAEConfig`` of our video encoder (and decoder sizes).

    ``use_mean_pooling=False`` keeps the encoder's final LayerNorm as ``layernorm``, so the
    exported model's ``last_hidden_state`` is our encoder output.
    """
    from transformers import VideoMAEConfig

    tt, ph, pw = c.tubelet
    if ph != pw:
        raise ValueError(f"transformers VideoMAE needs square patches, got {ph}x{pw}")
    return VideoMAEConfig(
        image_size=c.image_size, patch_size=ph, num_channels=c.in_chans, num_frames=c.num_frames,
        tubelet_size=tt, hidden_size=c.width, num_hidden_layers=c.depth,
        num_attention_heads=c.num_heads, intermediate_size=int(c.width * c.mlp_ratio),
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=c.ln_eps, qkv_bias=True, use_mean_pooling=False,
        decoder_hidden_size=c.decoder_width, decoder_num_hidden_layers=c.decoder_depth,
        decoder_num_attention_heads=c.decoder_heads,
        decoder_intermediate_size=int(c.decoder_width * c.mlp_ratio),
        norm_pix_loss=c.norm_pix_target)


def export_hf_videomae(model: nn.Module, out_dir: str | Path) -> Path:
    """Write the video encoder as a transformers ``VideoMAEModel`` folder.

    The tensors go through ``VideoMAEModel.load_state_dict(strict=True)`` before saving, so a
    name that does not line up fails here rather than in the user's ``from_pretrained``.
    The text embeddings, decoder and heads are not part of a ``VideoMAEModel``.
    """
    from transformers import VideoMAEModel

    c: ModelConfig = model.config
    hf = VideoMAEModel(hf_videomae_config(c))
    hf.load_state_dict(vtp_to_hf_videomae(model.state_dict(), c.depth), strict=True)
    out = Path(out_dir)
    hf.save_pretrained(out, safe_serialization=True)
    return out
