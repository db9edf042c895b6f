"""Random erasing of fine-tuning clips (timm's RandomErasing, mode "pixel", as VideoMAE uses it).

VideoMAE's fine-tuning loader (``_aug_frame``, which SimVTP's MSR-VTT loader follows)
hands the clip to timm as a batch of frames, so each frame is erased independently: with
probability ``prob`` one rectangle of 2%-33% of the frame, aspect ratio log-uniform in
0.3-3.3, is filled with standard-normal noise in the normalised pixel space. Runs in torch on
the decoded batch (DALI's ``erase`` fills with a constant, not noise), drawing only from the
batch's generator.
"""

from __future__ import annotations

import math

import torch

AREA = (0.02, 1 / 3)
LOG_RATIO = (math.log(0.3), math.log(1 / 0.3))


def _rectangle(height: int, width: int, generator: torch.Generator) -> tuple[int, ...] | None:
    """timm's draw: ten tries for a rectangle that fits, else None."""
    for _ in range(10):
        area, log_ratio = torch.rand(2, generator=generator).tolist()
        target = height * width * (AREA[0] + area * (AREA[1] - AREA[0]))
        aspect = math.exp(LOG_RATIO[0] + log_ratio * (LOG_RATIO[1] - LOG_RATIO[0]))
        h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if w < width and h < height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    return None


def random_erasing(video: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Erase one noise rectangle in each frame with probability ``prob``, in place.

    Args:
        video: normalised float (B, C, T, H, W).
        prob: per-frame probability (SimVTP fine-tuning: 0.25).
        generator: a CPU generator (the batch's).
    """
    if not video.is_floating_point():
        raise ValueError("random erasing needs the normalised float video "
                         "(data.normalize_on_device must be false)")
    batch, channels, steps, height, width = video.shape
    chosen = torch.rand(batch, steps, generator=generator) < prob
    for b, t in chosen.nonzero().tolist():
        box = _rectangle(height, width, generator)
        if box is None:
            continue
        top, left, h, w = box
        noise = torch.randn(channels, h, w, generator=generator)
        video[b, :, t, top:top + h, left:left + w] = noise.to(video.device, video.dtype)
    return video
