"""Slow, obviously-correct loop versions of the MotionSqueeze math, written straight from
docs/method.md, against which every fast implementation is tested."""

from __future__ import annotations

import math

import torch


def naive_correlation(f1, f2, patch_size, dilation=1):
    n, c, h, w = f1.shape
    r = (patch_size - 1) // 2
    out = torch.zeros(n, patch_size * patch_size, h, w, dtype=f1.dtype)
    for i in range(patch_size):
        for j in range(patch_size):
            dy, dx = (i - r) * dilation, (j - r) * dilation
            for y in range(h):
                for x in range(w):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        out[:, i * patch_size + j, y, x] = (f1[:, :, y, x] * f2[:, :, y + dy, x + dx]).sum(1)
    return out


def naive_displacement(f1, f2, patch_size=15, sigma=5.0, temperature=100.0, normalize=True):
    """Per-pixel loops in float64 (returns float64)."""
    f1, f2 = f1.double(), f2.double()
    if normalize:
        f1 = f1 / torch.sqrt((f1**2).sum(1, keepdim=True) + 1e-6)
        f2 = f2 / torch.sqrt((f2**2).sum(1, keepdim=True) + 1e-6)
    n, c, h, w = f1.shape
    p = patch_size
    r = (p - 1) // 2
    out = torch.zeros(n, 3, h, w, dtype=torch.float64)
    for b in range(n):
        for y in range(h):
            for x in range(w):
                scores = []
                for i in range(p):
                    for j in range(p):
                        yy, xx = y + i - r, x + j - r
                        s = float((f1[b, :, y, x] * f2[b, :, yy, xx]).sum()) if 0 <= yy < h and 0 <= xx < w else 0.0
                        scores.append(max(s, 0.0))
                best = max(range(p * p), key=lambda k: (scores[k], -k))  # first index on ties
                by, bx = divmod(best, p)
                logits = []
                for k in range(p * p):
                    i, j = divmod(k, p)
                    g = math.exp(-((i - by) ** 2 + (j - bx) ** 2) / (2 * sigma**2))
                    logits.append(temperature * g * scores[k])
                m = max(logits)
                e = [math.exp(v - m) for v in logits]
                z = sum(e)
                u = sum(e[k] * ((k % p) - r) for k in range(p * p)) / z / max(r, 1)
                v = sum(e[k] * ((k // p) - r) for k in range(p * p)) / z / max(r, 1)
                out[b, 0, y, x] = u
                out[b, 1, y, x] = v
                out[b, 2, y, x] = scores[best]
    return out


def naive_shift(x, num_segments, fold_div=8):
    nt, c, h, w = x.shape
    t = num_segments
    v = x.view(nt // t, t, c, h, w)
    out = torch.zeros_like(v)
    fold = c // fold_div
    for b in range(nt // t):
        for f in range(t):
            for ch in range(c):
                if ch < fold:
                    src = f + 1
                elif ch < 2 * fold:
                    src = f - 1
                else:
                    src = f
                if 0 <= src < t:
                    out[b, f, ch] = v[b, src, ch]
    return out.view(nt, c, h, w)
