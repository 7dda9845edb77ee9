"""The "cpu" displacement backend: both correlation strategies, ties, borders, agreement with
the reference at the model shapes, and the dispatch of backend="auto"."""

import importlib

import pytest
import torch

from motionsqueeze.ops import displacement
from naive import naive_displacement

# (The package exports functions under the names of their modules.)
disp = importlib.import_module("motionsqueeze.ops.displacement")
displacement_cpu = importlib.import_module("motionsqueeze.ops.displacement_cpu")

# The correlation is read out of all-pairs products on small maps and of 2-D tile products
# on large ones; every test below runs each, whatever the map size: tiles as large as the map
# (one tile), and 2 x 2 tiles (several tiles, the last row and column partly off the map).
# Inference (no autograd) on maps that tiles would match takes the window-major pair path:
# the fourth strategy, in chunks of one pair (its buffers reused from chunk to chunk); the
# tests that take gradients run the tiles there.
STRATEGIES = pytest.mark.parametrize(
    "all_pairs_factor,tile,pair_path",
    [(0.0, 64, False), (0.0, 2, False), (1e9, 64, False), (0.0, 64, True)],
    ids=["one-tile", "2x2-tiles", "all-pairs", "pairs-in-inference"],
)


@pytest.fixture
def strategy(monkeypatch, all_pairs_factor, tile, pair_path):
    monkeypatch.setattr(displacement_cpu, "ALL_PAIRS_FACTOR", all_pairs_factor)
    monkeypatch.setattr(displacement_cpu, "TILE", tile)
    monkeypatch.setattr(displacement_cpu, "PAIR_PATH", pair_path)
    monkeypatch.setattr(displacement_cpu, "PAIR_PATH_FLOATS", 1)  # one pair per chunk


@STRATEGIES
@pytest.mark.parametrize("n,c,h,w,p", [(2, 4, 5, 6, 5), (1, 3, 7, 3, 3), (1, 3, 4, 9, 7), (2, 2, 3, 3, 1)])
def test_both_strategies_match_the_loops(strategy, n, c, h, w, p):
    g = torch.Generator().manual_seed(h * w + p)
    f1, f2 = (torch.randn(n, c, h, w, generator=g) for _ in range(2))
    out = displacement(f1, f2, p, 2.0, 50.0, backend="cpu")
    torch.testing.assert_close(out.double(), naive_displacement(f1, f2, p, 2.0, 50.0), rtol=1e-4, atol=1e-4)


@STRATEGIES
@pytest.mark.parametrize("normalize", [True, False])
def test_both_strategies_pass_gradcheck(strategy, normalize):
    g = torch.Generator().manual_seed(5)
    f1, f2 = (torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(
        lambda a, b: displacement(a, b, 3, 1.0, 10.0, normalize=normalize, backend="cpu"), (f1, f2)
    )


@STRATEGIES
@pytest.mark.parametrize("normalize", [False, True])
def test_ties_and_empty_windows_follow_the_loops(strategy, normalize):
    # Constant features: every in-map cell ties (first index wins); zero features: all scores
    # 0, argmax 0, uniform softmax over the whole window, borders included.
    ones = torch.ones(1, 1, 3, 5)
    for f1, f2 in [(ones, ones), (ones, torch.zeros_like(ones)), (ones, 2 * ones)]:
        out = displacement(f1, f2, 5, 1.0, 100.0, normalize=normalize, backend="cpu")
        ref = naive_displacement(f1, f2, 5, 1.0, 100.0, normalize=normalize)
        torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)


@STRATEGIES
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_both_strategies_keep_the_dtype_and_match_the_reference(strategy, dtype):
    # Half precision is matched in float32 by both backends, then rounded once to the input dtype.
    g = torch.Generator().manual_seed(3)
    f1, f2 = (torch.randn(2, 4, 5, 7, generator=g).to(dtype) for _ in range(2))
    grad = torch.randn(2, 3, 5, 7, generator=g).to(dtype)
    results = []
    for backend in ("reference", "cpu"):
        a, b = f1.clone().requires_grad_(), f2.clone().requires_grad_()
        out = displacement(a, b, 5, 2.0, 20.0, backend=backend)
        results.append((out, *torch.autograd.grad(out, (a, b), grad)))
    assert all(t.dtype == dtype for t in results[1])
    torch.testing.assert_close(results[1], results[0])


def test_confidence_gradient_stops_where_every_score_is_rectified():
    # A pixel whose scores are all <= 0 has conf = 0 from the ReLU: no gradient through it.
    f1 = torch.ones(1, 1, 1, 2, requires_grad=True)
    f2 = -torch.ones(1, 1, 1, 2, requires_grad=True)
    for backend in ("reference", "cpu"):
        out = displacement(f1, f2, 3, normalize=False, backend=backend)
        (g1, g2) = torch.autograd.grad(out[:, 2].sum(), (f1, f2))
        assert g1.abs().sum() == 0 and g2.abs().sum() == 0, backend


@pytest.mark.parametrize("shape", [(3, 16, 8, 8), (2, 8, 16, 16), (1, 8, 28, 28), (1, 8, 19, 24)])
def test_fp32_is_within_1e5_of_the_fp64_reference_at_model_shapes(shape):
    # (The fp32 reference is itself a few 1e-6 off in the gradients: tau = 100 is sharp.)
    g = torch.Generator().manual_seed(1)
    f1, f2 = (torch.randn(*shape, generator=g) for _ in range(2))
    grad = torch.randn(shape[0], 3, *shape[2:], generator=g)
    results = []
    for backend, dtype in (("reference", torch.float64), ("cpu", torch.float32)):
        a, b = f1.to(dtype).requires_grad_(), f2.to(dtype).requires_grad_()
        out = displacement(a, b, 15, backend=backend)
        results.append([t.double() for t in (out, *torch.autograd.grad(out, (a, b), grad.to(dtype)))])
    (ref, *ref_grads), (new, *new_grads) = results
    torch.testing.assert_close(new, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(new_grads, ref_grads, rtol=0, atol=1e-5)


def test_channels_last_input_is_left_untouched():
    f1 = torch.randn(2, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    f2 = torch.randn(2, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    before = f1.clone()
    out = displacement(f1, f2, 5, backend="cpu")
    torch.testing.assert_close(f1, before, rtol=0, atol=0)
    torch.testing.assert_close(out, displacement(f1, f2, 5, backend="reference"))
    assert out.is_contiguous()


def _spy_backends(monkeypatch):
    calls = []
    for name in ("reference", "cpu"):
        fn, available = disp._BACKENDS[name]

        def spy(*args, _fn=fn, _name=name):
            calls.append(_name)
            return _fn(*args)

        monkeypatch.setitem(disp._BACKENDS, name, (spy, available))
    return calls


def test_auto_takes_the_cpu_path_in_eager_mode(monkeypatch):
    calls = _spy_backends(monkeypatch)
    f = torch.randn(2, 4, 5, 5)
    displacement(f, f.flip(0), 5)
    assert calls == ["cpu"]
    with torch.device("meta"):  # FLOP counting runs on meta tensors: the reference
        displacement(torch.empty(2, 4, 5, 5), torch.empty(2, 4, 5, 5), 5)
    assert calls == ["cpu", "reference"]


def test_auto_gives_compilers_the_reference(monkeypatch):
    calls = _spy_backends(monkeypatch)
    f1, f2 = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    compiled = torch.compile(lambda a, b: displacement(a, b, 5), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(f1, f2), displacement(f1, f2, 5, backend="cpu"))
    assert calls == ["reference", "cpu"]

    class Pair(torch.nn.Module):
        def forward(self, a, b):
            return displacement(a, b, 5)

    program = torch.export.export(Pair(), (f1, f2))
    assert calls[2:] == ["reference"]
    other = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(program.module()(*other), displacement(*other, 5, backend="reference"))


def test_inference_on_tiled_maps_takes_the_pair_path_with_the_same_values(monkeypatch):
    # Model-sized maps (28 x 28 at P = 15 is matched by tiles): without autograd the pair path
    # runs, in chunks; the values are those of the tiles (and of the fp64 reference) to 1e-6.
    from motionsqueeze.ops import displacement_step

    calls = []
    real = displacement_step.displacement_prepared
    monkeypatch.setattr(displacement_cpu, "displacement_prepared", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(displacement_cpu, "PAIR_PATH_FLOATS", 3 * 28 * 15 * 42 * 28)  # 3 pairs per chunk
    g = torch.Generator().manual_seed(2)
    f1, f2 = (torch.randn(7, 8, 28, 28, generator=g) for _ in range(2))
    with torch.no_grad():
        out = displacement(f1, f2, 15, backend="cpu")
    assert len(calls) == 3 and out.is_contiguous() and out.shape == (7, 3, 28, 28)  # chunks of 3, 3 and 1
    ref = displacement(f1.double(), f2.double(), 15, backend="reference")
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-6)
    monkeypatch.setattr(displacement_cpu, "PAIR_PATH", False)
    calls.clear()
    with torch.no_grad():
        tiles = displacement(f1, f2, 15, backend="cpu")
    assert calls == [] and (tiles - out).abs().max() < 1e-6
