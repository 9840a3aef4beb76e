"""Training losses on pore logits: CE, Dice, CE + Dice (default), focal, boundary-weighted.

Every loss takes ``logits`` and ``target`` of shape (batch, 1, *spatial)
(target 1 = pore, 0 = solid, float) and returns a scalar. CE is the binary
cross-entropy on the logit (one output channel); Dice is the soft Dice of the
pore phase over the whole batch, so patches without a pore do not make it
unstable. CE, Dice, CE + Dice and focal are MONAI's (``DiceCELoss``,
``DiceLoss``, ``FocalLoss`` with a sigmoid).

``boundary`` answers the paper's error analysis (§4.5: pore boundaries
offset or smoothed, thin pores missed): Dice plus a cross-entropy whose voxel
weights rise to ``1 + boundary_weight`` within ``boundary_px`` voxels of the
pore/solid interface of the target (the weight map of Ronneberger et al.
2015, computed with max-pooling on the batch). Thin pores are all boundary, so
they weigh more too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "make_loss", "boundary_band"]

LossName = Literal["ce", "dice", "dice_ce", "focal", "boundary"]
LOSSES: tuple[str, ...] = ("ce", "dice", "dice_ce", "focal", "boundary")

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def boundary_band(target: torch.Tensor, width: int) -> torch.Tensor:
    """1 on voxels within ``width`` voxels of a pore/solid interface of ``target``, else 0.

    ``target`` (batch, 1, *spatial) in {0, 1}; dilation minus erosion by a
    cube of edge ``2 * width + 1`` (max-pooling), so the band lies on both sides.
    """
    if width < 1:
        return torch.zeros_like(target)
    pool = F.max_pool2d if target.dim() == 4 else F.max_pool3d
    k = 2 * int(width) + 1
    dilated = pool(target, k, stride=1, padding=width)
    eroded = -pool(-target, k, stride=1, padding=width)
    return dilated - eroded


def make_loss(name: LossName = "dice_ce", *, dice_weight: float = 1.0, ce_weight: float = 1.0, gamma: float = 2.0,
              boundary_weight: float = 4.0, boundary_px: int = 2) -> Loss:
    """The loss ``name`` as a function ``(logits, target) -> scalar``.

    Parameters
    ----------
    name : {"ce", "dice", "dice_ce", "focal", "boundary"}
    dice_weight, ce_weight : float
        Weights of the Dice and CE terms of ``dice_ce`` and ``boundary``.
    gamma : float
        Focusing parameter of the focal loss.
    boundary_weight, boundary_px : float, int
        Extra CE weight on the interface band of ``boundary`` and the band's half-width in voxels.
    """
    from monai.losses import DiceCELoss, DiceLoss, FocalLoss

    if name == "ce":
        return lambda logits, target: F.binary_cross_entropy_with_logits(logits, target)
    if name == "dice":
        return DiceLoss(sigmoid=True, batch=True)
    if name == "dice_ce":
        return DiceCELoss(sigmoid=True, batch=True, lambda_dice=dice_weight, lambda_ce=ce_weight)
    if name == "focal":
        return FocalLoss(gamma=gamma, use_softmax=False)
    if name == "boundary":
        dice = DiceLoss(sigmoid=True, batch=True)

        def boundary(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                w = 1.0 + boundary_weight * boundary_band(target, boundary_px)
            ce = F.binary_cross_entropy_with_logits(logits, target, weight=w, reduction="sum") / w.sum()
            return dice_weight * dice(logits, target) + ce_weight * ce

        return boundary
    raise ValueError(f"loss {name!r} is not one of {', '.join(LOSSES)}")
