import pytest
import torch

from motionsqueeze.layers import MotionSqueeze, TemporalShift, temporal_shift
from motionsqueeze.ops import displacement
from naive import naive_shift


@pytest.mark.parametrize("t,c,div", [(4, 16, 8), (3, 10, 4), (1, 8, 8), (5, 7, 8)])
def test_temporal_shift_matches_loops(t, c, div):
    x = torch.randn(2 * t, c, 3, 2)
    torch.testing.assert_close(temporal_shift(x, t, div), naive_shift(x, t, div), rtol=0, atol=0)


@pytest.mark.parametrize("t,c,div", [(4, 16, 8), (1, 8, 8), (3, 10, 4)])
def test_temporal_shift_gradient_is_the_opposite_shift(t, c, div):
    # The eager training path has its own backward; it must equal autograd's of the loops.
    x = torch.randn(2 * t, c, 2, 3, dtype=torch.float64, requires_grad=True)
    grad = torch.randn_like(x)
    (ours,) = torch.autograd.grad(temporal_shift(x, t, div), x, grad)
    (loops,) = torch.autograd.grad(naive_shift(x, t, div), x, grad)
    torch.testing.assert_close(ours, loops, rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda a: temporal_shift(a, t, div), (x,))


@pytest.mark.parametrize("t,c,div", [(4, 16, 8), (3, 10, 4)])
def test_temporal_shift_keeps_channels_last(t, c, div):
    # A channels-last model shifts in its own layout: same values and gradient, no conversion.
    x = torch.randn(2 * t, c, 3, 2, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = temporal_shift(x, t, div)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, naive_shift(x, t, div), rtol=0, atol=0)
    grad = torch.randn_like(out).contiguous(memory_format=torch.channels_last)
    (ours,) = torch.autograd.grad(out, x, grad)
    (loops,) = torch.autograd.grad(naive_shift(x, t, div), x, grad)
    torch.testing.assert_close(ours, loops, rtol=0, atol=0)


def test_temporal_shift_compiles_in_training_without_graph_breaks():
    x = torch.randn(8, 16, 2, 2, requires_grad=True)
    compiled = torch.compile(lambda a: temporal_shift(a, 4) * 2, fullgraph=True, backend="aot_eager")
    compiled(x).sum().backward()
    (expected,) = torch.autograd.grad((naive_shift(x, 4) * 2).sum(), x)
    torch.testing.assert_close(x.grad, expected)


def test_temporal_shift_survives_export():
    # The official TSM export froze slice assignments; ours must stay a function of the input.
    shift = TemporalShift(num_segments=4).eval()
    example = torch.randn(8, 16, 3, 3)
    other = torch.randn(8, 16, 3, 3)
    exported = torch.export.export(shift, (example,))
    torch.testing.assert_close(exported.module()(other), naive_shift(other, 4))


def test_temporal_shift_rejects_a_bad_frame_count():
    with pytest.raises(ValueError, match="not a multiple of num_segments=4"):
        temporal_shift(torch.zeros(6, 8, 2, 2), 4)


def _ms(**kw):
    torch.manual_seed(0)
    return MotionSqueeze(in_channels=12, reduced_channels=6, patch_size=5, num_segments=3, **kw)


def test_motion_squeeze_parameter_count_matches_the_authors_layout():
    ms = MotionSqueeze(in_channels=512)
    names = {k for k, _ in ms.named_parameters()}
    assert "chnl_reduction.0.weight" in names and "flow_refinement.conv4.3.weight" in names
    assert sum(p.numel() for p in ms.parameters()) == 70_905
    assert sum(p.numel() for p in MotionSqueeze(in_channels=128).parameters()) == 20_985


@pytest.mark.parametrize("last_frame", ["repeat", "zero"])
def test_motion_squeeze_forward_is_input_plus_transformed_displacements(last_frame):
    ms = _ms(last_frame=last_frame).eval()
    x = torch.randn(2 * 3, 12, 6, 7)
    out = ms(x)
    # Recompute step by step from the public pieces.
    f = ms.chnl_reduction(x).view(2, 3, 6, 6, 7)
    d = displacement(f[:, :-1].reshape(-1, 6, 6, 7), f[:, 1:].reshape(-1, 6, 6, 7), 5).view(2, 2, 3, 6, 7)
    last = d[:, -1:] if last_frame == "repeat" else torch.zeros_like(d[:, -1:])
    expected = x + ms.flow_refinement(torch.cat([d, last], 1).flatten(0, 1))
    torch.testing.assert_close(out, expected)
    assert ms.motion_field(x).shape == (2, 2, 3, 6, 7)


@pytest.mark.parametrize("causal,channels_last", [(False, False), (False, True), (True, False)])
def test_motion_squeeze_eval_inference_folds_batchnorm_with_the_same_values(causal, channels_last):
    # Eager CPU inference runs BatchNorm folded into the convolutions (no module call); it must
    # give what the modules give (autograd on takes them), with trained, non-trivial statistics.
    ms = _ms(causal=causal)
    for m in ms.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5), torch.nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.uniform_(-0.3, 0.3), m.running_var.uniform_(0.5, 2.0)
    ms.eval()
    x = torch.randn(2 * 3, 12, 6, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected, expected_field = ms.forward_with_field(x)  # autograd on: the modules
    calls = []
    ms.chnl_reduction.register_forward_hook(lambda *a: calls.append(1))
    ms.flow_refinement.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        out, field = ms.forward_with_field(x)
        again = ms(x)
    assert not calls
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(field, expected_field, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    # Training mode, or another backend, takes the modules.
    with torch.no_grad():
        ms.train()(x)
        ms.backend = "reference"
        ms.eval()(x)
    assert len(calls) == 4


def test_motion_squeeze_backward_reaches_every_parameter():
    ms = _ms().train()
    x = torch.randn(6, 12, 5, 5, requires_grad=True)
    ms(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in ms.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_motion_squeeze_trains_channels_last_in_one_layout():
    # A channels-last model: same output and gradients as contiguous, and every gradient
    # stays channels-last (a mixed layout slows BatchNorm and ReLU backward ~15x on a CPU).
    ms = _ms().double().train()
    x = torch.randn(6, 12, 5, 5, dtype=torch.float64)
    out = ms(x.clone().requires_grad_())
    grads = torch.autograd.grad(out.square().sum(), list(ms.parameters()))
    cl = _ms().double().train().to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    seen = []
    for m in cl.modules():
        if isinstance(m, torch.nn.ReLU):  # the gradient each ReLU backward receives
            m.register_forward_hook(lambda mod, i, o: o.register_hook(seen.append) and None)
    out_cl = cl(xc)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    grads_cl = torch.autograd.grad(out_cl.square().sum(), [xc, *cl.parameters()])
    torch.testing.assert_close(out_cl, out)
    for g, g_cl in zip(grads, grads_cl[1:]):
        torch.testing.assert_close(g_cl, g)
    assert len(seen) == 9 and all(g.is_contiguous(memory_format=torch.channels_last) for g in [grads_cl[0], *seen])


@pytest.mark.parametrize(
    "build,x,message",
    [
        (lambda: _ms(), torch.zeros(5, 12, 4, 4), "not a multiple of num_segments=3"),
        (lambda: _ms(), torch.zeros(6, 10, 4, 4), "built for 12 channels"),
        (lambda: MotionSqueeze(12, num_segments=1), None, "num_segments >= 2"),
        (lambda: MotionSqueeze(12, patch_size=4), None, "odd positive"),
        (lambda: MotionSqueeze(12, last_frame="copy"), None, "last_frame"),
    ],
)
def test_motion_squeeze_bad_input(build, x, message):
    with pytest.raises(ValueError, match=message):
        build()(x)
