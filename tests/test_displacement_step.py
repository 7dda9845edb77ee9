"""The one-pair displacement of a streaming step equals the reference: window sizes larger
and smaller than the map, borders, ties, dtypes, several streams; MotionSqueeze.step uses it
for eager inference only."""

import pytest
import torch

from motionsqueeze.layers import MotionSqueeze
from motionsqueeze.ops import displacement_reference
from motionsqueeze.ops.displacement_step import displacement_pair, displacement_prepared, pair_features, pair_path_applies
from naive import naive_displacement


@pytest.mark.parametrize(
    "n,c,h,w,p",
    [
        (1, 16, 28, 28, 15),  # msnet_mbv2_050's res3 at 224 x 224
        (2, 4, 5, 6, 5),  # the window reaches past every border
        (1, 3, 7, 3, 15),  # window larger than the map both ways
        (1, 3, 4, 9, 7),
        (2, 2, 3, 3, 1),  # P = 1: one zero displacement
        (3, 5, 1, 1, 3),  # one pixel
    ],
)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 5e-6)])
def test_pair_displacement_equals_the_reference(n, c, h, w, p, dtype, tol):
    g = torch.Generator().manual_seed(h * w + p)
    f1, f2 = (torch.randn(n, c, h, w, generator=g, dtype=dtype) for _ in range(2))
    for sigma, tau in [(5.0, 100.0), (1.5, 20.0)]:
        got = displacement_pair(f1, f2, p, sigma, tau)
        # Against the reference in float64: at tau = 20 the float32 reference itself is
        # 1e-5 off at the first shape, this path 1e-6.
        want = displacement_reference(f1.double(), f2.double(), p, sigma, tau, True)
        assert got.shape == (n, 3, h, w) and got.dtype == dtype
        torch.testing.assert_close(got.double(), want, rtol=0, atol=tol)
    # Non-contiguous inputs (a channels-last view) give the same values.
    cl = displacement_pair(f1.contiguous(memory_format=torch.channels_last), f2, p)
    torch.testing.assert_close(cl, displacement_pair(f1, f2, p), rtol=0, atol=tol / 10)


def test_pair_displacement_breaks_ties_and_fills_empty_windows_like_the_loops():
    # Constant features: every in-map cell ties and the first (top-left) wins, which centres
    # the Gaussian off the pixel; zero features: every score 0, uniform softmax.
    ones = torch.ones(1, 2, 4, 5, dtype=torch.float64)
    for f1, f2 in [(ones, ones), (ones, torch.zeros_like(ones)), (torch.zeros_like(ones), ones)]:
        got = displacement_pair(f1, f2, 5, 1.0, 100.0)
        torch.testing.assert_close(got, naive_displacement(f1, f2, 5, 1.0, 100.0), rtol=0, atol=1e-9)
    tied = displacement_pair(ones, ones, 5, 1.0, 100.0)
    assert tied[0, :2, 2, 2].tolist() == pytest.approx([-1.0, -1.0])  # the top-left cell won


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pair_displacement_computes_half_precision_in_float32(dtype):
    g = torch.Generator().manual_seed(1)
    f1, f2 = (torch.randn(1, 8, 9, 10, generator=g).to(dtype) for _ in range(2))
    got = displacement_pair(f1, f2, 7)
    assert got.dtype == dtype
    want = displacement_reference(f1, f2, 7, 5.0, 100.0, True)
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=1e-2)  # a half-precision ulp


def test_pair_displacement_checks_its_inputs():
    with pytest.raises(ValueError, match="same shape"):
        displacement_pair(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="odd"):
        displacement_pair(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), 4)
    with pytest.raises(ValueError, match="sigma"):
        displacement_pair(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), 3, 0.0)


def test_motion_squeeze_step_takes_the_pair_path_for_eager_inference_only(monkeypatch):
    import motionsqueeze.layers.motion_squeeze as ms_module

    calls = []
    real = ms_module.displacement_prepared
    monkeypatch.setattr(ms_module, "displacement_prepared", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    ms = MotionSqueeze(8, reduced_channels=4, patch_size=5, num_segments=2, causal=True).eval()
    x, prev = torch.randn(2, 8, 6, 7), torch.randn(2, 4, 6, 7)
    with torch.no_grad():
        fast, reduced = ms.step(x, prev, torch.tensor([1.0, 0.0]))
        ms.backend = "reference"
        ref, _ = ms.step(x, prev, torch.tensor([1.0, 0.0]))
    assert len(calls) == 1
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)
    # With autograd the differentiable backends run, and gradients flow.
    ms.backend = "auto"
    out, _ = ms.step(x.requires_grad_(), prev, None)
    out.sum().backward()
    assert len(calls) == 1 and x.grad is not None
    with torch.no_grad():
        assert pair_path_applies(torch.zeros(1)) and not pair_path_applies(torch.zeros(1, dtype=torch.long))
    assert not pair_path_applies(torch.zeros(1))  # autograd on


def test_folded_batchnorm_follows_new_weights_and_stays_out_of_the_state_dict():
    torch.manual_seed(0)
    ms = MotionSqueeze(8, reduced_channels=4, patch_size=5, num_segments=2, causal=True).eval()
    keys = set(ms.state_dict())
    x, prev = torch.randn(1, 8, 6, 7), torch.randn(1, 4, 6, 7)

    def fast_and_module_path():
        with torch.no_grad():
            fast, _ = ms.step(x, prev)
            ms.backend = "reference"
            ref, _ = ms.step(x, prev)
            ms.backend = "auto"
        return fast, ref

    before, _ = fast_and_module_path()
    other = MotionSqueeze(8, reduced_channels=4, patch_size=5, num_segments=2, causal=True)
    for m in other.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.running_var, 0.5, 2.0)
            torch.nn.init.normal_(m.running_mean, 0.0, 0.3)
    ms.load_state_dict(other.state_dict())  # loading: copies in place
    fast, ref = fast_and_module_path()
    assert not torch.allclose(fast, before, atol=1e-3)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)
    with torch.no_grad():  # an in-place change of one statistic
        ms.flow_refinement.conv2[1].running_var.mul_(4.0)
    fast2, ref2 = fast_and_module_path()
    assert not torch.allclose(fast2, fast, atol=1e-3)
    torch.testing.assert_close(fast2, ref2, rtol=0, atol=1e-5)
    assert set(ms.state_dict()) == keys
    ms64 = ms.double()  # .to() replaces the tensors
    with torch.no_grad():
        assert ms64.step(x.double(), prev.double())[0].dtype == torch.float64


@pytest.mark.parametrize("tau,dtype,tol", [
    (100.0, torch.float32, 5e-6),  # exponents shifted, no floor needed (tau <= 120)
    (150.0, torch.float64, 1e-10),  # exponents floored at -60, as in the "cpu" backend
    (150.0, torch.float32, 2e-5),  # float32 logits of 150 carry ~1e-5 of rounding
    (-3.0, torch.float64, 1e-10),  # a negative temperature: the general path
])
def test_prepared_features_give_the_reference_on_both_softmax_paths(tau, dtype, tol):
    g = torch.Generator().manual_seed(7)
    f1, f2 = (torch.randn(2, 6, 17, 19, generator=g, dtype=dtype) for _ in range(2))
    pa, pb = pair_features(f1, 15), pair_features(f2, 15)
    assert pa.shape == (2, 17 + 14, 19 + 14, 6)
    assert torch.equal(pa[:, :7], torch.zeros_like(pa[:, :7])) and torch.equal(pa[:, :, -7:], torch.zeros_like(pa[:, :, -7:]))
    got = displacement_prepared(pa, pb, 15, 5.0, tau)
    assert got.shape == (2, 3, 17, 19) and got.is_contiguous(memory_format=torch.channels_last)
    want = displacement_reference(f1.double(), f2.double(), 15, 5.0, tau, True)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=tol)
    torch.testing.assert_close(displacement_pair(f1, f2, 15, 5.0, tau), got, rtol=0, atol=0)
    with pytest.raises(ValueError, match="pair_features"):
        displacement_prepared(pa, pb[:, :-1], 15)


def test_motion_squeeze_step_reuses_the_prepared_previous_frame_only_while_it_is_unchanged(monkeypatch):
    import motionsqueeze.layers.motion_squeeze as ms_module

    prepared = []
    real = ms_module.pair_features
    monkeypatch.setattr(ms_module, "pair_features", lambda f, p: prepared.append(f) or real(f, p))
    torch.manual_seed(0)
    ms = MotionSqueeze(8, reduced_channels=4, patch_size=5, num_segments=2, causal=True).eval()
    for m in ms.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(m.running_mean, 0.0, 0.3)
    xs = torch.randn(3, 2, 8, 9, 10)

    def module_path(x, prev):
        ms.backend = "reference"
        try:
            return ms.step(x, prev)[0]
        finally:
            ms.backend = "auto"

    memo = {}
    with torch.no_grad():
        out0, f0 = ms.step(xs[0], None, None, memo)  # first frame: zero map, nothing matched
        torch.testing.assert_close(out0, module_path(xs[0], None), rtol=0, atol=1e-5)
        assert len(prepared) == 1 and memo["features"] is f0
        out1, f1 = ms.step(xs[1], f0, None, memo)  # f0's prepared form comes from the memo
        assert len(prepared) == 2 and prepared[-1] is f1
        torch.testing.assert_close(out1, module_path(xs[1], f0), rtol=0, atol=1e-5)
        buffers = dict(memo["scratch"])  # the working buffers of the displacement
        f1.mul_(0.5)  # changed in place: prepared again
        out2, _ = ms.step(xs[2], f1, None, memo)
        assert len(prepared) == 4 and prepared[-1] is f1
        assert all(memo["scratch"][k] is v for k, v in buffers.items())  # written again, not reallocated
        torch.testing.assert_close(out2, module_path(xs[2], f1), rtol=0, atol=1e-5)
        other = f0.clone()  # another tensor: prepared again
        ms.step(xs[2], other, None, memo)
        assert len(prepared) == 6 and prepared[-1] is other
