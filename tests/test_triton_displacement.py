"""The fused Triton displacement kernel against the PyTorch reference.

Without a GPU, conftest.py sets TRITON_INTERPRET=1 before anything imports triton, so the
kernels run on CPU tensors in Triton's interpreter (slow: shapes are tiny). On a machine
with CUDA the same tests run the compiled kernels on the GPU.
"""

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install 'motionsqueeze[test]')")

from importlib import import_module  # noqa: E402
from motionsqueeze.layers import MotionSqueeze  # noqa: E402
from motionsqueeze.ops import displacement, displacement_op  # noqa: E402
from motionsqueeze.ops import triton_displacement as kernels  # noqa: E402

# The module, not the function of the same name that motionsqueeze.ops exports.
dispatch = import_module("motionsqueeze.ops.displacement")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and not kernels.interpreting():
    pytest.skip(
        "no GPU and the kernels were defined without TRITON_INTERPRET=1", allow_module_level=True
    )


def _features(n, c, h, w, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    f1 = torch.randn(n, c, h, w, generator=g).to(dtype)
    f2 = torch.randn(n, c, h, w, generator=g).to(dtype)
    return f1, f2


def _run(backend, f1, f2, grad, p, sigma, tau, normalize, device=DEVICE):
    """Output and both gradients of ``<displacement, grad>``."""
    a = f1.detach().clone().to(device).requires_grad_()
    b = f2.detach().clone().to(device).requires_grad_()
    out = displacement(a, b, p, sigma, tau, normalize, backend=backend)
    out.backward(grad.to(device, out.dtype))
    return out.detach().cpu(), a.grad.cpu(), b.grad.cpu()


def _assert_matches_reference(f1, f2, p, sigma, tau, normalize, out_tol, grad_tol, seed=0):
    """Triton on (f1, f2) against the float64 reference on the same (rounded) values."""
    n, _, h, w = f1.shape
    grad = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed + 1)).to(f1.dtype)
    out, g1, g2 = _run("triton", f1, f2, grad, p, sigma, tau, normalize)
    assert out.dtype == f1.dtype and g1.dtype == f1.dtype and g2.dtype == f2.dtype
    double = (f1.double(), f2.double(), grad.double())
    ref, r1, r2 = _run("reference", *double, p, sigma, tau, normalize, device="cpu")
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=out_tol)
    for got, want in ((g1, r1), (g2, r2)):
        _assert_close_to_scale(got.double(), want, grad_tol)
    return out, g1, g2


def _assert_close_to_scale(got, want, tol):
    """``|got - want| <= tol * max|want|``: gradients mix large and cancelling small terms."""
    scale = want.abs().max().clamp_min(1e-12)
    torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=tol)


@pytest.mark.parametrize(
    "n,c,h,w,p,sigma,tau,normalize",
    [
        (2, 5, 7, 9, 3, 5.0, 100.0, True),  # W below one 16-pixel tile
        (2, 5, 7, 9, 5, 2.0, 10.0, True),
        (1, 3, 6, 20, 7, 1.5, 100.0, True),  # two tiles per row, the second partial
        (1, 4, 5, 6, 15, 5.0, 100.0, True),  # window larger than the map
        (2, 6, 4, 5, 1, 5.0, 100.0, True),  # a single displacement
        (2, 5, 7, 9, 5, 3.0, 2.0, False),  # raw features
    ],
)
def test_values_and_both_gradients_match_the_reference(n, c, h, w, p, sigma, tau, normalize):
    f1, f2 = _features(n, c, h, w, seed=h * w + p)
    _assert_matches_reference(f1, f2, p, sigma, tau, normalize, out_tol=1e-5, grad_tol=1e-4)


def test_channels_walked_in_chunks(monkeypatch):
    # Wide features take the chunked path (scores summed over chunks, one gradient chunk per
    # program); shrink the limits so that 40 channels make 3 chunks, the last one partial.
    monkeypatch.setattr(kernels, "MAX_SINGLE_CHUNK", 16)
    monkeypatch.setattr(kernels, "CHUNK", 16)
    assert kernels.launch_config(5, 40)["SINGLE"] is False
    f1, f2 = _features(2, 40, 4, 6, seed=7)
    _assert_matches_reference(f1, f2, 5, 5.0, 100.0, True, out_tol=1e-5, grad_tol=1e-4)


@pytest.mark.parametrize(
    "dtype,out_tol,grad_tol", [(torch.float16, 1e-3, 1e-3), (torch.bfloat16, 4e-3, 1e-2)]
)
def test_half_precision_features(dtype, out_tol, grad_tol):
    # Scores accumulate in float32 from the half-precision values, so the float64 reference
    # on the same rounded values differs by about one unit of the output's last place (the
    # interpreter truncates float32 to bfloat16 where the GPU rounds to nearest).
    f1, f2 = _features(2, 8, 5, 7, seed=3, dtype=dtype)
    _assert_matches_reference(f1, f2, 5, 5.0, 10.0, True, out_tol=out_tol, grad_tol=grad_tol)


def _tie():
    """One f1 pixel matching two f2 pixels equally: at (dy, dx) = (-1, +1) and (+1, -1).

    The values are exact in binary and not parallel, so that the scores tie exactly and
    the gradients through the normalisation do not cancel to rounding noise.
    """
    f1 = torch.zeros(1, 2, 5, 5)
    f2 = torch.zeros(1, 2, 5, 5)
    f1[0, :, 2, 2] = torch.tensor([1.0, 0.5])
    f2[0, :, 1, 3] = torch.tensor([0.75, -0.5])
    f2[0, :, 3, 1] = torch.tensor([0.75, -0.5])
    return f1, f2


@pytest.mark.parametrize("normalize", [False, True])
def test_argmax_ties_take_the_first_displacement(normalize):
    f1, f2 = _tie()
    out, _, _ = _assert_matches_reference(
        f1, f2, 5, 0.5, 100.0, normalize, out_tol=1e-5, grad_tol=1e-4
    )
    # The Gaussian sits on the first of the tied displacements (dy-major): u > 0, v < 0.
    assert out[0, 0, 2, 2] > 0.4 and out[0, 1, 2, 2] < -0.4


def test_confidence_gradient_reaches_only_the_first_tied_match():
    f1, f2 = _tie()
    grad = torch.zeros(1, 3, 5, 5)
    grad[:, 2] = 1.0  # loss = sum of confidences; tau = 0 makes u and v constant
    _, g1, g2 = _run("triton", f1, f2, grad, 5, 5.0, 0.0, False)
    # d conf / d f2(first match) = f1(2, 2), and the other match gets nothing.
    torch.testing.assert_close(g2[0, :, 1, 3], f1[0, :, 2, 2], rtol=0, atol=0)
    assert g2[0, :, 3, 1].abs().max() == 0 and g2.abs().sum() == f1.abs().sum()
    torch.testing.assert_close(g1[0, :, 2, 2], f2[0, :, 1, 3], rtol=0, atol=0)
    assert g1.abs().sum() == f2[0, :, 1, 3].abs().sum()


@pytest.mark.parametrize("normalize", [True, False])
def test_all_zero_correlations(normalize):
    # Zero features, and features whose every correlation is <= 0: conf = 0, the argmax is
    # the first displacement, the softmax is uniform (u = v = 0) and no gradient passes the ReLU.
    zeros = torch.zeros(2, 3, 4, 6)
    f1, f2 = _features(2, 3, 4, 6, seed=5)
    for a, b in ((zeros, zeros), (f1.abs(), -f2.abs())):
        out, g1, g2 = _assert_matches_reference(
            a, b, 3, 5.0, 100.0, normalize, out_tol=1e-6, grad_tol=1e-6
        )
        assert out.abs().max() < 1e-6
        assert g1.abs().max() == 0 and g2.abs().max() == 0


def test_custom_op_passes_opcheck():
    f1, f2 = _features(1, 3, 4, 5, seed=11)
    f1, f2 = f1.to(DEVICE).requires_grad_(), f2.to(DEVICE).requires_grad_()
    args = (f1, f2, 3, 2.0, 10.0, True)
    torch.library.opcheck(torch.ops.motionsqueeze.displacement.default, args)
    out, argmax, lse = torch.ops.motionsqueeze.displacement(*args)
    grad = torch.randn_like(out)
    bargs = (grad, f1.detach(), f2.detach(), out.detach(), argmax, lse, 3, 2.0, 10.0, True)
    torch.library.opcheck(torch.ops.motionsqueeze.displacement_backward.default, bargs)


def _grads(fn, *inputs):
    """Output of ``fn`` and the gradients of ``sum(output)`` with respect to the inputs."""
    xs = [x.detach().clone().requires_grad_() for x in inputs]
    y = fn(*xs)
    y.backward(torch.ones_like(y))
    return [y.detach(), *[x.grad for x in xs]]


def _compiled_matches(fn, expected, *inputs):
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")  # fullgraph: no graph break
    for got, want in zip(_grads(compiled, *inputs), expected):
        _assert_close_to_scale(got, want, 1e-4)


def test_torch_compile_traces_the_op_without_graph_breaks(monkeypatch):
    f1, f2 = (t.to(DEVICE) for t in _features(2, 4, 5, 6, seed=13))
    # As on a first call inside torch.compile: the backend is not registered yet, so the
    # dispatcher imports it while Dynamo traces.
    monkeypatch.delitem(dispatch._BACKENDS, "triton", raising=False)
    monkeypatch.setattr(dispatch, "_AUTO_ORDER", [n for n in dispatch._AUTO_ORDER if n != "triton"])
    fn = lambda a, b: displacement(a, b, 5, 3.0, 10.0, backend="triton")  # noqa: E731
    expected = _grads(lambda a, b: displacement(a, b, 5, 3.0, 10.0, backend="reference"), f1, f2)
    _compiled_matches(fn, expected, f1, f2)
    assert "triton" in dispatch._BACKENDS


def _layer(backend):
    # 16 reduced channels: with 4, ReLU often leaves pixels whose normalised features are
    # equal, exact ties in the hard argmax that each implementation's rounding breaks its own
    # way (seen once in 20 random inputs), and the outputs then legitimately differ.
    torch.manual_seed(0)
    layer = MotionSqueeze(8, reduced_channels=16, patch_size=5, num_segments=3, backend=backend)
    return layer.to(DEVICE)


def test_motion_squeeze_layer_with_triton_backend_matches_reference_and_compiles():
    # Seeded: the input must not depend on which tests ran before.
    x = torch.randn(3, 8, 5, 6, generator=torch.Generator().manual_seed(3)).to(DEVICE)  # one clip of 3 frames
    results = {}
    for backend in ("reference", "triton"):
        layer = _layer(backend)
        results[backend] = _grads(lambda x: layer(x).square(), x)
        results[backend] += [p.grad for p in layer.chnl_reduction.parameters()]
    for got, want in zip(results["triton"], results["reference"]):
        _assert_close_to_scale(got, want, 1e-4)
    # The whole layer through torch.compile, against the eager reference.
    expected = _grads(lambda x: _layer("reference")(x).square(), x)
    triton_layer = _layer("triton")
    _compiled_matches(lambda x: triton_layer(x).square(), expected, x)


def test_backend_selection_and_errors(monkeypatch):
    f1, f2 = _features(1, 3, 4, 4, seed=17)

    def refuse(*args):
        raise AssertionError("the triton backend ran")

    # "auto" takes the kernel only for CUDA tensors.
    monkeypatch.setitem(dispatch._BACKENDS, "triton", (refuse, displacement_op._available))
    displacement(f1, f2, 3)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        displacement(f1.double(), f2.double(), 3, backend="triton")
    monkeypatch.setattr(kernels, "interpreting", lambda: False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        displacement(f1, f2, 3, backend="triton")


_COMPILE_SCRIPT = """
import torch
from motionsqueeze.ops import triton_displacement as kernels
for dtype in (torch.bfloat16, torch.float32):
    for name, k in kernels.compile_for_gpu(dtype, patch_size=15, channels=64, arch=90).items():
        use = kernels.resource_usage(k)
        print(dtype, name, use)
        assert use["stack"] == 0, f"{dtype} {name} spills registers: {use}"
kernels.compile_for_gpu(torch.float16, patch_size=7, channels=200, arch=80, normalize=False)
print("ok")
"""


def test_kernels_compile_for_h100_without_spills():
    # The interpreter accepts code that the GPU compiler rejects; build the real kernels for
    # sm_90 (H100) with the bundled ptxas, no GPU needed, in a process without the interpreter.
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.backends.nvidia import compiler  # noqa: F401
    except ImportError as err:
        pytest.skip(f"triton has no NVIDIA backend here: {err}")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "ok" in run.stdout, run.stdout + run.stderr[-3000:]
