"""A loss that learns fine muscles from labels of any coarseness (the marginal loss).

A tracing of "vasti" says the pixel is vastus lateralis, intermedius or medialis, not which. The
network still predicts the fine muscles; their softmax probabilities are summed within each traced
group, and Dice + cross-entropy is taken on those group probabilities. Fine labels are the special
case where every group holds one muscle, so one function serves both. Pixels whose target is
`ignore` (outside the traced thigh or the field of view) give no gradient.
"""
from __future__ import annotations

import numpy as np

from .labels import N_MUSCLES, GroupScheme


def group_matrix(scheme: GroupScheme | None) -> np.ndarray:
    """(scheme values + 1, N_MUSCLES + 1) 0/1 matrix: row v sums the classes group v covers.

    Row 0 is background (class 0) plus the muscles the scheme leaves untraced; rows of traced
    non-muscle values (femur) are background too. None: the fine schema (identity).
    """
    if scheme is None:
        return np.eye(N_MUSCLES + 1, dtype=np.float32)
    matrix = np.zeros((max(scheme.groups) + 1, N_MUSCLES + 1), np.float32)
    matrix[0, 0] = 1
    matrix[0, list(scheme.unlabelled)] = 1
    for value, muscles in scheme.groups.items():
        for m in (muscles or (0,)):
            matrix[value, m] = 1
    return matrix


def fine_matrix_with_maybe(value: int, muscle: int) -> np.ndarray:
    """The fine schema's identity matrix plus row `value` (beyond the muscles): background or `muscle`.

    For synthetic targets whose unlabelled muscle may belong to a schema muscle the label maps name
    only in part (synth.MAYBE_ADDUCTOR: adductor longus and brevis beside adductor magnus).
    """
    maybe = np.zeros((value - N_MUSCLES, N_MUSCLES + 1), np.float32)
    maybe[-1, [0, muscle]] = 1
    return np.vstack([group_matrix(None), maybe])


def marginal_dice_ce(logits, target, matrix, ignore: int = -1, smooth: float = 1e-5):
    """Sum of soft Dice loss (over the muscle groups present in the batch; background and traced
    non-muscle such as the femur are left to the cross entropy) and cross entropy of group
    probabilities. logits (n, classes, y, x); target (n, 1, y, x) group values."""
    import torch
    matrix = torch.as_tensor(matrix, dtype=logits.dtype, device=logits.device)
    probs = torch.softmax(logits, 1)
    grouped = torch.einsum("gc,nchw->nghw", matrix, probs)
    target = target[:, 0]
    valid = target != ignore
    safe = torch.where(valid, target, torch.zeros_like(target))
    picked = grouped.gather(1, safe[:, None]).squeeze(1).clamp_min(1e-7)
    n_valid = valid.sum().clamp_min(1)
    ce = -(torch.log(picked) * valid).sum() / n_valid
    onehot = torch.nn.functional.one_hot(safe, matrix.shape[0]).permute(0, 3, 1, 2).to(grouped.dtype)
    weight = valid[:, None].to(grouped.dtype)
    # A pixel traced as another group that may hold the same muscle (thigh11's unlabelled 0 may be
    # the adductor group) is no false positive of this group.
    shares = ((matrix @ matrix.T) > 0).to(grouped.dtype)
    counted = weight * (1 - shares[safe].permute(0, 3, 1, 2) * (1 - onehot))
    dims = (0, 2, 3)
    intersection = (grouped * onehot * weight).sum(dims)
    truth = (onehot * weight).sum(dims)
    predicted = (grouped * counted).sum(dims)
    dice = (2 * intersection + smooth) / (truth + predicted + smooth)
    present = (truth > 0) & (matrix[:, 0] == 0)       # muscle groups only: background and femur are not
    dice_loss = (1 - dice[present]).mean() if bool(present.any()) else ce * 0
    return ce + dice_loss   # as MONAI's DiceCELoss weighs them
