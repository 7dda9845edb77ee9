"""``motionsqueeze selftest``: is MotionSqueeze computed correctly on this device and dtype?

The most common failure of the original code was a silently broken correlation op: training
still ran, and the model reached only TSM-level accuracy. These checks catch that on the
user's own machine, in seconds:

1. every displacement backend that can run here (``"auto"``, the one models use, and each
   registered one) against the PyTorch reference in float64 on the same rounded inputs:
   values of ``[u, v, conf]`` and the gradients of both feature maps;
2. the motion field of an MSNet varies over positions and frames (a broken op gives a
   constant field);
3. the motion path changes the logits: replacing the field by zeros must move them (a
   broken op that returns zeros leaves them unchanged).

Checks 2-3 use a small random MSNet, or the user's model when one is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .models import create_model
from .models.card import card_of
from .ops import available_backends, displacement

__all__ = ["Check", "SelfTestReport", "run_selftest", "TOLERANCES"]

# (value tolerance, gradient tolerance relative to the gradient's largest magnitude) per
# dtype: the fused kernel accumulates in float32, so these are a few units of the output's
# last place (tests/test_triton_displacement.py measures the same bounds more tightly).
TOLERANCES = {
    torch.float64: (1e-8, 1e-7),
    torch.float32: (5e-5, 5e-4),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (2e-2, 5e-2),
}
# Shape of the backend comparison: two maps of 8 channels on a 6 x 7 grid, a 5 x 5 window.
_N, _C, _H, _W, _P, _SIGMA, _TAU = 2, 8, 6, 7, 5, 5.0, 100.0


@dataclass
class Check:
    """One line of the verdict. ``status``: ``"ok"``, ``"FAIL"`` or ``"skipped"``."""

    name: str
    status: str
    detail: str


@dataclass
class SelfTestReport:
    device: str
    dtype: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.status != "FAIL" for c in self.checks)

    def verdict(self) -> str:
        failed = [c.name for c in self.checks if c.status == "FAIL"]
        if failed:
            return (f"FAIL on {self.device} {self.dtype}: {', '.join(failed)}. Do not train or evaluate "
                    f"MSNet models with this setup; use backend='reference' (ModelConfig.backend) "
                    f"and report the failing check.")
        return f"OK: MotionSqueeze is computed correctly on {self.device} in {self.dtype}."

    def to_dict(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "passed": self.passed,
                "checks": [c.__dict__ for c in self.checks], "verdict": self.verdict()}


def _run_backend(backend: str, f1, f2, grad):
    a = f1.detach().clone().requires_grad_()
    b = f2.detach().clone().requires_grad_()
    out = displacement(a, b, _P, _SIGMA, _TAU, True, backend=backend)
    out.backward(grad.to(out.dtype))
    return out.detach().double().cpu(), a.grad.double().cpu(), b.grad.double().cpu()


def check_backends(device: torch.device, dtype: torch.dtype, seed: int = 0) -> list[Check]:
    """Values and gradients of every backend that can run here against the float64 reference."""

    g = torch.Generator().manual_seed(seed)
    f1, f2, grad = (torch.randn(_N, c, _H, _W, generator=g).to(dtype) for c in (_C, _C, 3))
    want = _run_backend("reference", f1.double(), f2.double(), grad.double())
    out_tol, grad_tol = TOLERANCES[dtype]
    checks = []
    for name in available_backends():
        label = f"backend {name!r}"
        try:
            got = _run_backend(name, f1.to(device), f2.to(device), grad.to(device))
        except (ValueError, RuntimeError, NotImplementedError) as err:
            checks.append(Check(label, "skipped", f"cannot run on {device} {dtype}: {err}"))
            continue
        out_err = (got[0] - want[0]).abs().max().item()
        grad_err = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
                       for a, b in zip(got[1:], want[1:]))
        bad = not (out_err <= out_tol and grad_err <= grad_tol)  # NaN fails too
        checks.append(Check(label, "FAIL" if bad else "ok",
                            f"max |value error| {out_err:.2e} (limit {out_tol:.0e}), max relative "
                            f"gradient error {grad_err:.2e} (limit {grad_tol:.0e})"))
    return checks


def _probe_clip(model: nn.Module, size: int, seed: int) -> torch.Tensor:
    """``(1, T, 3, size, size)`` frames of a textured square moving right, values around 0."""
    t = model.num_segments
    g = torch.Generator().manual_seed(seed)
    texture = torch.randn(3, size, size, generator=g)
    frames = [torch.roll(texture, shifts=(0, 2 * i), dims=(1, 2)) for i in range(t)]
    return torch.stack(frames)[None]


@torch.no_grad()
def check_motion_path(model: nn.Module, device: torch.device, dtype: torch.dtype, size: int = 64,
                      seed: int = 0) -> list[Check]:
    """The field varies, and zeroing it moves the logits (checks 2-3 of the module docstring)."""
    motion = getattr(model, "motion", None)
    if not motion:
        return [Check("motion path", "skipped", "the model has no MotionSqueeze module (TSN / TSM)")]
    model = model.to(device, dtype).eval()
    x = _probe_clip(model, size, seed).to(device, dtype)
    checks = []
    fields = model.motion_fields(x)
    for stage, f in fields.items():
        spread = f.float().flatten(2).std(dim=-1).min().item()  # per frame pair and channel
        ok = spread > 1e-6 and torch.isfinite(f).all().item()
        checks.append(Check(f"motion field {stage}", "ok" if ok else "FAIL",
                            f"smallest spread of u, v, conf over positions {spread:.2e} (a broken "
                            f"correlation gives a constant field)"))
    logits = model(x).float()
    try:
        for m in motion.values():
            real = m.motion_field
            m.motion_field = lambda inp, real=real: torch.zeros_like(real(inp))
        blind = model(x).float()
    finally:
        for m in motion.values():
            m.__dict__.pop("motion_field", None)  # the method shows through again
    change = ((logits - blind).abs().max() / logits.abs().max().clamp_min(1e-12)).item()
    # The two forwards differ only in the field, so any change shows the path is connected; a
    # field that is zero already (the broken op) leaves the logits bit-identical.
    ok = change > 0 and torch.isfinite(logits).all().item()
    checks.append(Check("motion path changes logits", "ok" if ok else "FAIL",
                        f"zeroing the motion field moves the logits by {change:.2e} of their "
                        f"largest magnitude (must be above 0)"))
    return checks


def _probe_model() -> nn.Module:
    model = create_model("msnet_tiny", num_classes=10, num_segments=4, patch_size=5)
    # The default classifier starts near zero (std 0.001); give it unit scale so that a change
    # of the features shows in the logits well above rounding.
    nn.init.normal_(model.fc.weight, 0, 1)
    return model


def run_selftest(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 model: nn.Module | None = None, seed: int = 0) -> SelfTestReport:
    """All checks on ``device`` in ``dtype``; ``model`` defaults to a random tiny MSNet."""
    device = torch.device(device)
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype must be one of {[str(d) for d in TOLERANCES]}, got {dtype}")
    torch.manual_seed(seed)
    report = SelfTestReport(str(device), str(dtype).replace("torch.", ""))
    report.checks += check_backends(device, dtype, seed)
    size = 64 if model is None else card_of(model).preprocess.crop_size  # the model's input side
    report.checks += check_motion_path(model if model is not None else _probe_model(), device, dtype, size, seed)
    return report
