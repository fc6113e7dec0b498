"""Extended phase graph (EPG) simulation of CPMG multi-echo spin-echo trains.

`cpmg_echo_amplitudes` is the non-selective ("3d") engine: vectorised over any batch of
(T2, B1) pairs. Slice-selective ("2d") profiles integrate it over slice position by scaling
the flip angles (see maps.t2 / dictionary code built on top of it).
Excitation is about y, refocusing about x (CPMG), so echo amplitudes are real and positive.
"""
from __future__ import annotations

import numpy as np


def _rotation(alpha: np.ndarray, phase: float) -> np.ndarray:
    """EPG rotation matrices (batch, 3, 3) for flip angles `alpha` (rad) about axis `phase`."""
    c2, s2 = np.cos(alpha / 2) ** 2, np.sin(alpha / 2) ** 2
    sa, ca = np.sin(alpha), np.cos(alpha)
    e1, e2 = np.exp(1j * phase), np.exp(2j * phase)
    rot = np.empty(alpha.shape + (3, 3), dtype=np.complex128)
    rot[..., 0, 0] = c2
    rot[..., 0, 1] = e2 * s2
    rot[..., 0, 2] = -1j * e1 * sa
    rot[..., 1, 0] = np.conj(e2) * s2
    rot[..., 1, 1] = c2
    rot[..., 1, 2] = 1j * np.conj(e1) * sa
    rot[..., 2, 0] = -0.5j * np.conj(e1) * sa
    rot[..., 2, 1] = 0.5j * e1 * sa
    rot[..., 2, 2] = ca
    return rot


def cpmg_echo_amplitudes(t2_ms, b1, n_echoes: int, echo_spacing_ms: float, t1_ms: float = 1400.0,
                         refocusing_angle_deg: float = 180.0, excitation_angle_deg: float = 90.0):
    """Echo amplitudes of a CPMG train, shape broadcast(t2_ms, b1) + (n_echoes,).

    `b1` is the relative transmit field: both the excitation and refocusing flip angles are
    scaled by it. Amplitudes are relative to an equilibrium magnetisation of 1.
    """
    t2 = np.asarray(t2_ms, dtype=float)
    b1 = np.asarray(b1, dtype=float)
    t2, b1 = np.broadcast_arrays(t2, b1)
    batch_shape = t2.shape
    t2, b1 = t2.ravel(), b1.ravel()
    n_states = 2 * n_echoes + 2
    half = echo_spacing_ms / 2.0
    e2 = np.exp(-half / t2)[:, None]
    e1 = np.exp(-half / t1_ms)

    excite = _rotation(np.deg2rad(excitation_angle_deg) * b1, np.pi / 2)
    refocus = _rotation(np.deg2rad(refocusing_angle_deg) * b1, 0.0)

    # states[:, 0] = F+, states[:, 1] = F-, states[:, 2] = Z, for dephasing orders 0..n_states-1
    states = np.zeros((t2.size, 3, n_states), dtype=np.complex128)
    states[:, 2, 0] = 1.0
    states = excite @ states
    echoes = np.empty((t2.size, n_echoes))
    for k in range(n_echoes):
        states = _relax_and_dephase(states, e1, e2)
        states = refocus @ states
        states = _relax_and_dephase(states, e1, e2)
        echoes[:, k] = np.abs(states[:, 0, 0])
    return echoes.reshape(batch_shape + (n_echoes,))


def _relax_and_dephase(states: np.ndarray, e1: float, e2: np.ndarray) -> np.ndarray:
    """Relaxation over half an echo spacing, then one unit of gradient dephasing."""
    out = np.empty_like(states)
    out[:, 0, 1:] = states[:, 0, :-1] * e2
    out[:, 1, :-1] = states[:, 1, 1:] * e2
    out[:, 1, -1] = 0.0
    out[:, 0, 0] = np.conj(out[:, 1, 0])
    out[:, 2, :] = states[:, 2, :] * e1
    out[:, 2, 0] += 1.0 - e1
    return out
