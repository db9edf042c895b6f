"""SimVTP's unified masked autoencoder: one shared ViT over [visible video tubes ; text].

Each training step (SimVTP, arXiv 2212.03490, code @4b54321) runs the shared encoder on:
(1) the joint input [visible tubes ; masked text] for MVM and MLM, (2) the visible tubes
alone and (3) the masked text alone for VTC, (4) mismatched joint pairs for VTM. SimVTP
re-encodes the matched pairs in (4); they are exactly pass (1), so we reuse its output and
encode only the B mismatched pairs (same loss, one pass less).

Module and parameter names follow VideoMAE's ``PretrainVisionTransformer`` (``encoder.*``,
``decoder.*``, ``encoder_to_decoder``, ``mask_token``) so its checkpoints load by name.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .layers import Block, init_weights, sinusoid_table
from .losses import mlm_loss, mvm_loss, sample_negatives, vtc_loss, vtm_loss
from .text import TextEmbeddings
from .video import TubeletEmbed, patchify, tube_target, visible_and_masked_index

__all__ = ["Encoder", "VideoDecoder", "UnifiedMAE"]


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), index (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def padding_or_none(keep: torch.Tensor) -> torch.Tensor | None:
    """``keep`` if it hides anything, else None so SDPA can use its unmasked (flash) kernel."""
    return None if bool(keep.all()) else keep


def mean_pool(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Mean over the tokens of ``x`` (B, N, D); only the ``keep`` ones when it is given."""
    if keep is None:
        return x.mean(dim=1)
    keep = keep.to(x.dtype).unsqueeze(-1)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1)


class Encoder(nn.Module):
    """Tubelet and text embeddings plus the shared pre-LN ViT (blocks, final LN)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.patch_embed = TubeletEmbed(c.tubelet, c.in_chans, c.width)
        # Fixed, not saved: VideoMAE keeps its table outside the state dict too.
        self.register_buffer("pos_embed", sinusoid_table(c.num_tokens, c.width), persistent=False)
        self.text_embed = None
        if c.use_text:
            self.text_embed = TextEmbeddings(c.vocab_size, c.width, c.max_text_len,
                                             c.type_vocab_size, c.pad_token_id, c.text_ln_eps,
                                             c.text_dropout)
        self.blocks = nn.ModuleList(
            Block(c.width, c.num_heads, c.mlp_ratio, c.ln_eps) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.width, eps=c.ln_eps)
        self.activation_checkpointing = c.activation_checkpointing
        self.blocks.apply(init_weights)
        self.set_drop_path(c.drop_path)

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth rising linearly from 0 (first block) to ``rate`` (last block)."""
        depth = len(self.blocks)
        for i, block in enumerate(self.blocks):
            block.drop_path = rate * i / (depth - 1) if depth > 1 else rate

    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, N, D) tube tokens with positions, before masking."""
        x = self.patch_embed(video)
        return x + self.pos_embed.to(x.dtype)

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        if self.text_embed is None:
            raise RuntimeError("this model was built with use_text=False")
        return self.text_embed(ids)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            x: (B, S, D) embedded tokens.
            keep: optional (B, S) mask, nonzero on tokens that may be attended to.
        """
        attn_mask = None if keep is None else keep.bool()[:, None, None, :]
        for block in self.blocks:
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, attn_mask, use_reentrant=False)
            else:
                x = block(x, attn_mask)
        return self.norm(x)


class VideoDecoder(nn.Module):
    """Light ViT over [visible ; mask] tokens; predicts tube pixels of the masked ones."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.blocks = nn.ModuleList(
            Block(c.decoder_width, c.decoder_heads, c.mlp_ratio, c.ln_eps)
            for _ in range(c.decoder_depth))
        self.norm = nn.LayerNorm(c.decoder_width, eps=c.ln_eps)
        self.head = nn.Linear(c.decoder_width, c.tube_dim)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, num_masked: int) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, x.shape[1] - num_masked:]))


class UnifiedMAE(nn.Module):
    """SimVTP: masked video modelling, masked language modelling, VTC and VTM on one encoder.

    Args:
        config: a :class:`ModelConfig` (e.g. ``model_config("base")``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = self.config = config
        self.encoder = Encoder(c)
        # Heads exist only for active terms, so DDP never meets an unused parameter.
        if "mvm" in c.active_terms:
            self.encoder_to_decoder = nn.Linear(c.width, c.decoder_width, bias=False)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_width))
            self.register_buffer("decoder_pos_embed",
                                 sinusoid_table(c.num_tokens, c.decoder_width), persistent=False)
            self.decoder = VideoDecoder(c)
            nn.init.xavier_uniform_(self.encoder_to_decoder.weight)
            nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)
        if "mlm" in c.active_terms:
            self.mlm_head = nn.Linear(c.width, c.vocab_size)
            self.mlm_head.apply(init_weights)
        if "vtm" in c.active_terms:
            self.vtm_head = nn.Linear(c.width, 2)
            self.vtm_head.apply(init_weights)
        self.momentum_encoder = None
        if c.vtc_queue and "vtc" in c.active_terms:
            # ALBEF: queued features come from a slowly moving copy of the encoder. Queued
            # features of the encoder itself go stale as it learns, and telling old from new
            # is easier than telling clips apart: VTC went back to chance (recipes/README.md).
            self.momentum_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
            # saved with the model, so a resumed run scores the same negatives
            self.register_buffer("vtc_queue_video", torch.zeros(c.vtc_queue, c.width))
            self.register_buffer("vtc_queue_text", torch.zeros(c.vtc_queue, c.width))
            self.register_buffer("vtc_queue_seen", torch.zeros((), dtype=torch.long))
            # which sample each entry came from: a query's own clip is never its negative
            self.register_buffer("vtc_queue_ids", torch.full((c.vtc_queue,), -1))
        if c.use_text:
            scale = torch.tensor(1.0 / c.vtc_temperature).log()
            if c.vtc_learnable_temperature and "vtc" in c.active_terms:
                self.log_logit_scale = nn.Parameter(scale)
            else:
                self.register_buffer("log_logit_scale", scale)

    # -- shapes and targets -------------------------------------------------------------
    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, N, tt*ph*pw, C) tubes in token order."""
        return patchify(video, self.config.tubelet)

    def video_target(self, video: torch.Tensor) -> torch.Tensor:
        """fp32 (B, N, tube_dim) MVM target of every tube (see ``model.video.tube_target``)."""
        c = self.config
        with torch.autocast(device_type=video.device.type, enabled=False):
            return tube_target(video, c.tubelet, c.mean, c.std, c.norm_pix_target)

    def logit_scale(self) -> torch.Tensor:
        """1 / VTC temperature; a learned one is clamped at 100 (CLIP)."""
        return self.log_logit_scale.clamp(max=torch.tensor(100.0).log()).exp()

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay: norms, biases, embeddings, mask token."""
        return {n for n, p in self.named_parameters()
                if p.ndim <= 1 or "text_embed" in n or n in ("mask_token", "log_logit_scale")}

    def _check_video(self, video: torch.Tensor, mask: torch.Tensor) -> None:
        c = self.config
        want = (c.in_chans, c.num_frames, c.image_size, c.image_size)
        if tuple(video.shape[1:]) != want:
            raise ValueError(f"video must be (B, {', '.join(map(str, want))}) for this config, "
                             f"got {tuple(video.shape)}")
        if tuple(mask.shape) != (video.shape[0], c.num_tokens):
            raise ValueError(f"video_mask must be (B, {c.num_tokens}) for grid {c.grid}, "
                             f"got {tuple(mask.shape)}")

    # -- retrieval -------------------------------------------------------------------------
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Unmasked video -> (B, D) mean of the encoder output over every tube."""
        return self.encoder(self.encoder.embed_video(video)).mean(dim=1)

    def encode_text(self, ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Text ids and attention mask -> (B, D) mean of the encoder output (text-only pass)."""
        out = self.encoder(self.encoder.embed_text(ids), padding_or_none(text_mask))
        return mean_pool(out, None if self.config.pool_text_padding else text_mask)

    # -- training --------------------------------------------------------------------------
    def decode(self, latent: torch.Tensor, vis_idx: torch.Tensor,
               mask_idx: torch.Tensor) -> torch.Tensor:
        """Encoded visible tubes (B, N_vis, D) -> predicted masked tubes (B, N_mask, tube_dim)."""
        x = self.encoder_to_decoder(latent)
        pos = self.decoder_pos_embed
        x_vis = x + pos[vis_idx].to(x.dtype)
        x_mask = (self.mask_token + pos[mask_idx]).to(x.dtype)
        return self.decoder(torch.cat([x_vis, x_mask], dim=1), mask_idx.shape[1])

    def forward(self, batch: Mapping[str, torch.Tensor],
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One pretraining step's losses.

        Args:
            batch: the pipeline's batch dict (video, video_mask and, with text, mlm_ids,
                mlm_labels, text_mask; keys seed the VTM negatives when no generator is given).
            generator: CPU generator for the VTM negatives.

        Returns:
            ``loss`` (weighted total), ``loss_<term>`` for each active term (mvm, mlm, vtc,
            vtm), ``mvm_pred`` (B, N_mask, tube_dim) and, with text, ``logit_scale``.
        """
        c = self.config
        video, mask = batch["video"], batch["video_mask"]
        self._check_video(video, mask)
        vis_idx, mask_idx = visible_and_masked_index(mask)
        tokens = self.encoder.embed_video(video)
        vis = _gather_tokens(tokens, vis_idx)
        if c.use_text:
            momentum = None
            if self.momentum_encoder is not None and self.training:
                momentum = self._momentum_features(video, vis_idx, batch)
            full = tokens if c.vtc_inputs == "full" else None
            out = self._video_text_terms(vis, vis_idx, mask_idx, batch, generator, momentum, full)
        else:
            out = {"mvm_pred": self.decode(self.encoder(vis), vis_idx, mask_idx)}
        if "mvm_pred" in out:
            out["loss_mvm"] = mvm_loss(out["mvm_pred"], self.video_target(video), mask)
        weights = {"mvm": c.mvm_weight, "mlm": c.mlm_weight, "vtc": c.vtc_weight,
                   "vtm": c.vtm_weight}
        out["loss"] = sum(weights[t] * out[f"loss_{t}"] for t in c.active_terms)
        return out

    def _video_text_terms(self, vis, vis_idx, mask_idx, batch, generator,
                          momentum=None, full=None) -> dict:
        """Pass 1 (joint) for MVM and MLM, then VTC (passes 2, 3) and VTM (pass 4)."""
        c, terms, out = self.config, self.config.active_terms, {}
        text, text_keep = self.encoder.embed_text(batch["mlm_ids"]), batch["text_mask"]
        joint_keep = torch.cat([torch.ones_like(vis_idx), text_keep.to(vis_idx.dtype)], 1)
        if padding_or_none(text_keep) is None:  # one host sync per step, not one per pass
            text_keep = joint_keep = None
        joint, nv = None, vis.shape[1]
        if c.joint_pass:
            joint = self.encoder(torch.cat([vis, text], 1), joint_keep)
        if "mvm" in terms:
            out["mvm_pred"] = self.decode(joint[:, :nv], vis_idx, mask_idx)
        if "mlm" in terms:
            labels = batch["mlm_labels"]
            picked = labels != -100  # the 30k-way head runs on selected positions only
            out["loss_mlm"] = mlm_loss(self.mlm_head(joint[:, nv:][picked]), labels[picked])
        similarity = None
        if c.single_passes:
            if full is not None:  # vtc_inputs: full
                similarity = self._vtc(full, self.encoder.embed_text(batch["text_ids"]),
                                       text_keep, out, momentum)
            else:
                similarity = self._vtc(vis, text, text_keep, out, momentum)
        if "vtm" in terms:
            out["loss_vtm"] = self._vtm(vis, text, joint, joint_keep, similarity, batch, generator)
        return out

    def _vtc(self, vis, text, text_keep, out: dict, momentum=None) -> torch.Tensor:
        """Video-only and text-only passes; sets ``loss_vtc``; returns the scaled similarity.
        ``momentum``: the momentum encoder's (video, text) features of the batch, scored with
        the queue instead of the batch's own features (``vtc_queue``)."""
        c = self.config
        video = self.encoder(vis).mean(dim=1)
        text = mean_pool(self.encoder(text, text_keep), None if c.pool_text_padding else text_keep)
        scale = self.logit_scale()
        out["logit_scale"] = scale.detach()
        if "vtc" in c.active_terms:
            rank, world = _dist_rank_world() if c.vtc_gather else (0, 1)
            candidates, exclude = self._candidates(momentum)
            out["loss_vtc"] = vtc_loss(video, text, scale, gather=c.vtc_gather,
                                       gather_with_grad=c.vtc_gather_with_grad, rank=rank,
                                       world_size=world, candidates=candidates, exclude=exclude)
            if momentum is not None:
                self._enqueue(*momentum)
        with torch.no_grad():
            return scale * F.normalize(text.float(), dim=-1) @ F.normalize(video.float(), dim=-1).T

    @torch.no_grad()
    def _momentum_features(self, video: torch.Tensor, vis_idx: torch.Tensor,
                           batch: Mapping[str, torch.Tensor]) -> tuple:
        """Moves the momentum encoder towards the encoder (once per training forward, i.e. per
        microbatch), then encodes the batch with it as the VTC passes do: normalised (B, D)
        video and text features and (B,) sample ids (-1 without keys)."""
        # the first training forward copies the encoder: weights loaded after the model was
        # built (init.video, init.text, load_path) reach the momentum encoder too
        m = self.config.vtc_momentum if int(self.vtc_queue_seen) else 0.0
        moving = self.momentum_encoder
        for slow, fast in zip(moving.parameters(), self.encoder.parameters(), strict=True):
            slow.mul_(m).add_(fast.detach(), alpha=1.0 - m)
        keep = batch["text_mask"]
        keep = None if padding_or_none(keep) is None else keep
        full = self.config.vtc_inputs == "full"
        tokens = moving.embed_video(video)
        video = moving(tokens if full else _gather_tokens(tokens, vis_idx)).mean(dim=1)
        ids = batch["text_ids" if full else "mlm_ids"]
        text = mean_pool(moving(moving.embed_text(ids), keep),
                         None if self.config.pool_text_padding else keep)
        keys = batch.get("keys")
        ids = torch.full((video.shape[0],), -1, dtype=torch.long)
        if keys is not None:
            ids = torch.tensor([zlib.crc32(str(k).encode()) for k in keys], dtype=torch.long)
        return (F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1),
                ids.to(video.device))

    def _candidates(self, momentum) -> tuple:
        """What VTC scores queries against with a queue: the momentum features of the batch,
        then the filled part of the queue, and which queued entries are a query's own sample
        (not negatives). (None, None): the batch's own features, as released."""
        if momentum is None:
            return None, None
        video, text, ids = momentum
        filled = int(min(int(self.vtc_queue_seen), self.config.vtc_queue))
        queued = self.vtc_queue_ids[:filled]
        own = (ids[:, None] == queued[None, :]) & (ids[:, None] >= 0)
        exclude = torch.cat([torch.zeros(len(ids), len(ids), dtype=torch.bool,
                                         device=own.device), own], dim=1)
        return ((torch.cat([video, self.vtc_queue_video[:filled]]),
                 torch.cat([text, self.vtc_queue_text[:filled]])),
                exclude if bool(own.any()) else None)

    @torch.no_grad()
    def _enqueue(self, video: torch.Tensor, text: torch.Tensor, ids: torch.Tensor) -> None:
        """Writes normalised features over the oldest entries of the ring.

        Under DDP every rank's queue becomes rank 0's at the next forward (Composer's DDP
        broadcasts buffers), so the queue holds rank 0's features."""
        size = self.config.vtc_queue
        index = (int(self.vtc_queue_seen) + torch.arange(video.shape[0])) % size
        index = index[-size:].to(self.vtc_queue_video.device)  # a batch larger than the ring
        self.vtc_queue_video[index] = video[-size:]
        self.vtc_queue_text[index] = text[-size:]
        self.vtc_queue_ids[index] = ids[-size:]
        self.vtc_queue_seen += video.shape[0]

    def _vtm(self, vis, text, joint, joint_keep, similarity, batch, generator) -> torch.Tensor:
        """Matched pairs reuse the joint pass; mismatched ones pair text i with video j != i."""
        c = self.config
        gen = generator if generator is not None else _batch_generator(batch)
        hard = similarity if c.vtm_negatives == "hard" else None
        neg = sample_negatives(vis.shape[0], gen, hard).to(vis.device)
        neg_joint = self.encoder(torch.cat([vis[neg], text], 1), joint_keep)
        keep = None if c.pool_text_padding else joint_keep
        return vtm_loss(self.vtm_head(mean_pool(joint, keep)),
                        self.vtm_head(mean_pool(neg_joint, keep)))


def _dist_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _batch_generator(batch: Mapping) -> torch.Generator:
    """A generator seeded by the batch (its ``seed``, else its keys): reproducible, no global
    RNG."""
    seed = batch.get("seed")
    if seed is None:
        seed = zlib.crc32("\0".join(map(str, batch.get("keys", []))).encode())
    return torch.Generator().manual_seed(int(seed))
