"""Host-side (NumPy / Pillow) geometric warps: affine maps, thin-plate splines, remapping.

Coordinates are continuous pixel coordinates: pixel ``(i, j)`` covers
``[j, j + 1) x [i, i + 1)``, so its centre is ``(j + 0.5, i + 0.5)`` (Pillow's
convention). Every warp is *backward*: a map from output coordinates to the
source coordinates that are sampled, so images and label maps warped with the
same map stay aligned (labels nearest-neighbour, never blended).
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float
from PIL import Image

from vosjax.errors import VosjaxError

__all__ = [
    "crop_affine",
    "warp_affine",
    "tps_fit",
    "tps_eval",
    "mesh_points",
    "warp_mesh",
]


def crop_affine(
    out_hw: tuple[int, int],
    center: tuple[float, float],
    size: tuple[float, float],
    angle_deg: float = 0.0,
    shear_deg: float = 0.0,
    flip: bool = False,
) -> Float[np.ndarray, "3 3"]:
    """Backward affine map of a rotated, sheared, optionally mirrored crop.

    Output point ``(x, y)`` of an ``out_hw`` image goes to normalised
    ``u = (x / W_out - 1/2) * (-1 if flip else 1)``, ``v = y / H_out - 1/2``, then
    to the source point ``center + R(angle) @ Shear(shear) @ diag(size) @ (u, v)``
    with ``size = (crop width, crop height)`` in source pixels. Returns the
    3x3 homogeneous matrix (last row ``0 0 1``).
    """
    H, W = out_hw
    norm = np.array(
        [
            [(-1.0 if flip else 1.0) / W, 0.0, -0.5 * (-1.0 if flip else 1.0)],
            [0.0, 1.0 / H, -0.5],
            [0, 0, 1],
        ]
    )
    scale = np.diag([float(size[0]), float(size[1]), 1.0])
    sh = math.tan(math.radians(shear_deg))
    shear = np.array([[1.0, sh, 0.0], [0.0, 1.0, 0.0], [0, 0, 1]])
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0, 0, 1]])
    move = np.array([[1.0, 0.0, float(center[0])], [0.0, 1.0, float(center[1])], [0, 0, 1]])
    return move @ rot @ shear @ scale @ norm


def warp_affine(
    image: np.ndarray,
    matrix: Float[np.ndarray, "3 3"],
    out_hw: tuple[int, int],
    nearest: bool = False,
) -> np.ndarray:
    """Sample uint8 ``image`` (``[H, W]`` or ``[H, W, 3]``) at ``matrix @ (x, y, 1)`` per pixel.

    Bilinear for images, nearest for label maps (``nearest=True``); points
    outside the source read 0.
    """
    a = np.ascontiguousarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise VosjaxError(
            f"warp_affine: 'image' must be uint8 [H, W] or [H, W, 3], got {a.dtype} {a.shape}."
        )
    m = np.asarray(matrix, np.float64)
    data = (m[0, 0], m[0, 1], m[0, 2], m[1, 0], m[1, 1], m[1, 2])
    im = Image.fromarray(a)
    out = im.transform(
        (int(out_hw[1]), int(out_hw[0])),
        Image.AFFINE,
        data,
        resample=Image.NEAREST if nearest else Image.BILINEAR,
    )
    return np.asarray(out)


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """U(r) = r^2 log r^2 written on squared distances, with U(0) = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = r2 * np.log(r2)
    return np.where(r2 > 0, out, 0.0)


def tps_fit(
    ctrl: Float[np.ndarray, "n 2"], values: Float[np.ndarray, "n 2"], reg: float = 0.0
) -> tuple[Float[np.ndarray, "n 2"], Float[np.ndarray, "3 2"], Float[np.ndarray, "n 2"]]:
    """Fit the thin-plate spline ``f(p) = a0 + A p + sum_i w_i U(|p - c_i|)`` to ``f(c_i) = v_i``.

    Solves ``[[K + reg I, P], [P^T, 0]] [w; a] = [values; 0]`` with
    ``K_ij = U(|c_i - c_j|)``, ``P = [1, x, y]``. With ``reg = 0`` the spline
    interpolates the control points exactly; an affine ``values`` is
    reproduced exactly (``w = 0``). Returns ``(w, a, ctrl)`` for :func:`tps_eval`.
    """
    c = np.asarray(ctrl, np.float64)
    v = np.asarray(values, np.float64)
    if c.ndim != 2 or c.shape[1] != 2 or v.shape != c.shape or c.shape[0] < 3:
        raise VosjaxError(
            f"tps_fit: 'ctrl' and 'values' must both be [n >= 3, 2], got {c.shape} and {v.shape}."
        )
    n = c.shape[0]
    d2 = np.sum((c[:, None, :] - c[None, :, :]) ** 2, axis=-1)
    L = np.zeros((n + 3, n + 3))
    L[:n, :n] = _tps_kernel(d2) + reg * np.eye(n)
    P = np.concatenate([np.ones((n, 1)), c], axis=1)
    L[:n, n:] = P
    L[n:, :n] = P.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = v
    sol = np.linalg.solve(L, rhs)
    return sol[:n], sol[n:], c


def tps_eval(params, pts: Float[np.ndarray, "m 2"]) -> Float[np.ndarray, "m 2"]:
    """Evaluate a spline from :func:`tps_fit` at points ``[m, 2]``."""
    w, a, c = params
    p = np.asarray(pts, np.float64)
    d2 = np.sum((p[:, None, :] - c[None, :, :]) ** 2, axis=-1)
    return a[0] + p @ a[1:] + _tps_kernel(d2) @ w


def mesh_points(out_hw: tuple[int, int], cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Output-grid coordinates ``(xs [nx], ys [ny])`` of the cell corners used by :func:`warp_mesh`.

    ``xs = 0, cell, 2 cell, ..., W`` (the last cell may be narrower), likewise ``ys``.
    """
    H, W = int(out_hw[0]), int(out_hw[1])
    xs = np.minimum(np.arange(0, W + cell, cell), W).astype(np.float64)
    ys = np.minimum(np.arange(0, H + cell, cell), H).astype(np.float64)
    return np.unique(xs), np.unique(ys)


def warp_mesh(
    image: np.ndarray,
    corner_x: np.ndarray,
    corner_y: np.ndarray,
    out_hw: tuple[int, int],
    cell: int,
    nearest: bool = False,
) -> np.ndarray:
    """Piecewise-bilinear backward warp given the source point of every cell corner of the output.

    The output ``out_hw`` is split into ``cell x cell`` squares whose corners
    are :func:`mesh_points`; ``(corner_x[i, j], corner_y[i, j])`` is the source
    point of output corner ``(xs[j], ys[i])``. Inside a square the source point
    of an output point is the bilinear blend of its square's four corners, and
    the source is sampled there bilinearly (``nearest=True``: nearest, for label
    maps); points outside the source read 0. This is Pillow's MESH transform (C).
    """
    a = np.ascontiguousarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise VosjaxError(
            f"warp_mesh: 'image' must be uint8 [H, W] or [H, W, 3], got {a.dtype} {a.shape}."
        )
    xs, ys = mesh_points(out_hw, cell)
    cx = np.asarray(corner_x, np.float64)
    cy = np.asarray(corner_y, np.float64)
    if cx.shape != (len(ys), len(xs)) or cy.shape != cx.shape:
        raise VosjaxError(
            f"warp_mesh: corner grids must have shape {(len(ys), len(xs))} for "
            f"out_hw={tuple(out_hw)} and cell={cell}, "
            f"got {cx.shape} and {cy.shape}."
        )
    mesh = []
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            box = (int(xs[j]), int(ys[i]), int(xs[j + 1]), int(ys[i + 1]))
            quad = (
                cx[i, j],
                cy[i, j],
                cx[i + 1, j],
                cy[i + 1, j],
                cx[i + 1, j + 1],
                cy[i + 1, j + 1],
                cx[i, j + 1],
                cy[i, j + 1],
            )
            mesh.append((box, quad))
    out = Image.fromarray(a).transform(
        (int(out_hw[1]), int(out_hw[0])),
        Image.MESH,
        mesh,
        resample=Image.NEAREST if nearest else Image.BILINEAR,
    )
    return np.asarray(out)
