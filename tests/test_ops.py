import pytest
import torch

from motionsqueeze.ops import displacement, kernel_soft_argmax, local_correlation
from naive import naive_correlation, naive_displacement

# Every displacement backend that runs on the CPU without Triton gets the same tests.
CPU_BACKENDS = pytest.mark.parametrize("backend", ["reference", "cpu"])


@pytest.mark.parametrize(
    "n,c,h,w,p,dil",
    [(2, 3, 5, 7, 3, 1), (1, 4, 6, 4, 5, 2), (3, 2, 3, 9, 7, 1), (2, 5, 4, 4, 1, 1), (1, 3, 9, 5, 15, 1)],
)
def test_local_correlation_matches_loops(n, c, h, w, p, dil):
    g = torch.Generator().manual_seed(n * 100 + p)
    f1 = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    f2 = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    out = local_correlation(f1, f2, p, dil)
    assert out.shape == (n, p * p, h, w)
    torch.testing.assert_close(out, naive_correlation(f1, f2, p, dil), rtol=1e-12, atol=1e-12)


def test_local_correlation_channel_order_is_dy_major():
    # A single bright pixel in f2 one row below and two columns right of the f1 pixel.
    f1 = torch.zeros(1, 1, 7, 7)
    f2 = torch.zeros(1, 1, 7, 7)
    f1[0, 0, 3, 3] = 1
    f2[0, 0, 4, 5] = 1
    out = local_correlation(f1, f2, patch_size=5)
    (k,) = torch.nonzero(out[0, :, 3, 3]).flatten().tolist()
    assert k == (1 + 2) * 5 + (2 + 2)


@pytest.mark.parametrize("p,dil", [(3, 1), (5, 2)])
def test_local_correlation_gradcheck(p, dil):
    g = torch.Generator().manual_seed(p)
    f1 = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    f2 = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: local_correlation(a, b, p, dil), (f1, f2))


def test_local_correlation_saves_only_its_inputs_for_backward():
    # Memory-lean: nothing like an (N, C, P*P, H, W) product may be kept for backward.
    f1 = torch.randn(2, 8, 12, 12, requires_grad=True)
    f2 = torch.randn(2, 8, 12, 12, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        local_correlation(f1, f2, patch_size=15)
    assert sum(saved) <= 2 * f1.numel()


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_local_correlation_half_precision(dtype, tol):
    f1 = torch.randn(2, 16, 6, 7)
    f2 = torch.randn(2, 16, 6, 7)
    ref = local_correlation(f1, f2, 5)
    out = local_correlation(f1.to(dtype), f2.to(dtype), 5)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol * 4)


@pytest.mark.parametrize(
    "n,c,h,w,p,sigma,tau",
    [(2, 4, 5, 6, 5, 5.0, 100.0), (1, 3, 7, 3, 3, 1.0, 10.0), (3, 8, 4, 4, 7, 2.5, 100.0), (1, 2, 3, 3, 1, 5.0, 100.0)],
)
@CPU_BACKENDS
def test_displacement_matches_loops(n, c, h, w, p, sigma, tau, backend):
    g = torch.Generator().manual_seed(h * w + p)
    f1 = torch.randn(n, c, h, w, generator=g)
    f2 = torch.randn(n, c, h, w, generator=g)
    out = displacement(f1, f2, p, sigma, tau, backend=backend)
    assert out.shape == (n, 3, h, w) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), naive_displacement(f1, f2, p, sigma, tau), rtol=1e-4, atol=1e-4)


@CPU_BACKENDS
def test_displacement_unnormalised_matches_loops(backend):
    f1 = torch.rand(2, 3, 4, 5)
    f2 = torch.rand(2, 3, 4, 5)
    out = displacement(f1, f2, 3, 5.0, 2.0, normalize=False, backend=backend)
    torch.testing.assert_close(out.double(), naive_displacement(f1, f2, 3, 5.0, 2.0, normalize=False), rtol=1e-4, atol=1e-4)


@CPU_BACKENDS
def test_displacement_recovers_a_known_translation(backend):
    # f2 is f1 moved by (+2, -1) cells: u = 2 / r, v = -1 / r away from the borders.
    g = torch.Generator().manual_seed(0)
    f1 = torch.randn(1, 16, 12, 12, generator=g)
    f2 = torch.roll(f1, shifts=(-1, 2), dims=(2, 3))
    out = displacement(f1, f2, patch_size=7, backend=backend)
    r = 3
    torch.testing.assert_close(out[0, 0, 3:8, 2:8], torch.full((5, 6), 2 / r), atol=1e-3, rtol=0)
    torch.testing.assert_close(out[0, 1, 3:8, 2:8], torch.full((5, 6), -1 / r), atol=1e-3, rtol=0)
    torch.testing.assert_close(out[0, 2, 3:8, 2:8], torch.ones(5, 6), atol=1e-5, rtol=0)


@CPU_BACKENDS
def test_displacement_gradcheck_fp64(backend):
    g = torch.Generator().manual_seed(3)
    f1 = torch.randn(2, 4, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    f2 = torch.randn(2, 4, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: displacement(a, b, 3, 5.0, 10.0, backend=backend), (f1, f2)
    )


def test_argmax_ties_take_the_first_index_and_carry_no_gradient():
    p = 3
    corr = torch.zeros(1, p * p, 1, 1)
    corr[0, 2, 0, 0] = 0.5  # (dy, dx) = (-1, +1)
    corr[0, 6, 0, 0] = 0.5  # (dy, dx) = (+1, -1): same score, later index
    out = kernel_soft_argmax(corr, p, sigma=0.5, temperature=100.0)
    # Gaussian centred on index 2 favours it: u > 0 and v < 0.
    assert out[0, 0] > 0.5 and out[0, 1] < -0.5
    # All-zero correlations: argmax is index 0, logits are all 0, the softmax is uniform.
    zero = kernel_soft_argmax(torch.zeros(2, p * p, 2, 2), p)
    torch.testing.assert_close(zero, torch.zeros(2, 3, 2, 2))


def test_confidence_gradient_flows_through_the_max_only():
    corr = torch.rand(1, 9, 2, 2, requires_grad=True)
    out = kernel_soft_argmax(corr, 3, temperature=0.0)  # tau = 0: u, v constant
    out[:, 2].sum().backward()
    best = corr.detach().argmax(1, keepdim=True)
    expected = torch.zeros_like(corr).scatter_(1, best, 1.0)
    torch.testing.assert_close(corr.grad, expected)


@CPU_BACKENDS
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_displacement_half_precision_returns_input_dtype(dtype, backend):
    f1 = torch.randn(2, 8, 5, 5)
    f2 = torch.randn(2, 8, 5, 5)
    out = displacement(f1.to(dtype), f2.to(dtype), 5, backend=backend)
    assert out.dtype == dtype
    ref = displacement(f1.to(dtype).float(), f2.to(dtype).float(), 5, backend="reference")
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: local_correlation(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4)), "same shape"),
        (lambda: local_correlation(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3)), r"\(N, C, H, W\)"),
        (lambda: local_correlation(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), patch_size=4), "odd positive"),
        (lambda: local_correlation(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), patch_size=-3), "odd positive"),
        (lambda: local_correlation(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), patch_size=0), "odd positive"),
        (lambda: displacement(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), backend="cuda-magic"), "unknown backend"),
        (lambda: displacement(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), sigma=0), "sigma"),
    ],
)
def test_bad_inputs_raise_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@CPU_BACKENDS
def test_correlation_under_autocast_keeps_the_input_dtype_and_trains(backend):
    # bf16 autocast must not change the correlation's precision, forward or backward.
    f1 = torch.randn(2, 8, 5, 6, requires_grad=True)
    f2 = torch.randn(2, 8, 5, 6, requires_grad=True)
    ref = local_correlation(f1, f2, 5)
    ref.square().sum().backward()
    grads = f1.grad.clone(), f2.grad.clone()
    f1.grad = f2.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = local_correlation(f1, f2, 5)
        d = displacement(f1, f2, 5, backend=backend)
    assert out.dtype == torch.float32 and d.dtype == torch.float32
    torch.testing.assert_close(out, ref)
    out.square().sum().backward()
    torch.testing.assert_close((f1.grad, f2.grad), grads)
    torch.testing.assert_close(d, displacement(f1, f2, 5, backend="reference"))


def test_msnet_training_step_under_bf16_autocast():
    from motionsqueeze import create_model

    model = create_model("msnet_tiny", num_classes=4, num_segments=3, patch_size=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(torch.randn(2, 3, 3, 64, 64)).float().logsumexp(1).sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_compiled_correlation_never_asks_whether_autocast_exists(monkeypatch):
    """torch.compile in PyTorch 2.11 cannot trace torch.amp.is_autocast_available: on a GPU
    (2026-11-29, H200) the graph break inside the no-autocast context sent the compiled
    reference into endless recompilation. The answer is looked up, not asked, while tracing."""
    real = torch.amp.is_autocast_available

    def untraceable(device):
        if torch.compiler.is_compiling():
            raise RuntimeError("is_autocast_available called while compiling")
        return real(device)

    monkeypatch.setattr(torch.amp, "is_autocast_available", untraceable)
    f1 = torch.randn(2, 4, 6, 6, requires_grad=True)
    f2 = torch.randn(2, 4, 6, 6, requires_grad=True)
    compiled = torch.compile(lambda a, b: local_correlation(a, b, 3), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(f1, f2), local_correlation(f1, f2, 3))
