"""Whole models on a CUDA device: the fused Triton kernel inside MSNet against the PyTorch
reference, low precision, torch.compile with the custom op, and the streaming step.

Skipped without a GPU (CI has none); ``benchmarks/gpu_check.sh`` runs this file on one.
The kernel itself is tested op by op in tests/test_triton_displacement.py.
"""

from __future__ import annotations

import pytest
import torch

from motionsqueeze import create_model
from motionsqueeze.models.streaming import StreamingRecognizer, clip_frame_logits
from motionsqueeze.ops import use_backend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
pytest.importorskip("triton", reason="the fused kernel needs triton")


@pytest.fixture(autouse=True)
def _exact_float32():
    """Plain float32 products in cuBLAS / cuDNN, so that fp32 comparisons mean fp32."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def _model_and_clips(name: str, frames: int = 8, size: int = 112, **kw):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, num_segments=frames, **kw).cuda()
    clips = torch.randn(2, frames, 3, size, size, device="cuda")
    return model, clips


def _loss_and_grads(model, clips, backend):
    model.zero_grad(set_to_none=True)
    with use_backend(backend):
        out = model(clips)
    out.float().logsumexp(1).sum().backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


@pytest.mark.parametrize("name", ["msnet_tiny", "msnet_r18", "msnet_mbv2_050"])
def test_the_kernel_inside_msnet_gives_the_reference_logits_and_gradients(name):
    # cuDNN's convolution backward is not bitwise repeatable: the reference run twice differs
    # by up to 3e-3 (relative) on the feature transformation's weights, whose gradients are
    # ~1e-7 (H200, 2026-11-29). The kernel must stay within that spread, not within zero.
    model, clips = _model_and_clips(name, dropout=0.0)
    model.train()
    ref_out, ref_grads = _loss_and_grads(model, clips, "reference")
    again_out, again_grads = _loss_and_grads(model, clips, "reference")
    out, grads = _loss_and_grads(model, clips, "triton")
    assert _rel(out, ref_out) <= 1e-4
    assert any(k.startswith("motion.") for k in ref_grads), "no MotionSqueeze parameters found"
    for k, ref in ref_grads.items():
        spread = _rel(again_grads[k], ref)
        assert _rel(grads[k], ref) <= 1e-3 + 3 * spread, (k, _rel(grads[k], ref), spread)


def test_auto_picks_the_kernel_on_cuda_and_bf16_autocast_stays_close_to_fp32():
    from motionsqueeze.ops import displacement

    f = torch.randn(4, 64, 14, 14, device="cuda")
    g = f.roll(1, 3)
    assert torch.equal(displacement(f, g), displacement(f, g, backend="triton"))
    model, clips = _model_and_clips("msnet_r18")
    model.eval()
    with torch.no_grad():
        full = model(clips)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(clips)
    assert torch.isfinite(low).all()
    assert _rel(low, full) <= 5e-2


def test_torch_compile_of_msnet_with_the_kernel_has_no_graph_breaks_and_matches_eager():
    model, clips = _model_and_clips("msnet_r18", size=96, dropout=0.0)  # no dropout: no RNG to match
    model.train()
    compiled = torch.compile(model, fullgraph=True)
    eager_out, _ = _loss_and_grads(model, clips, "triton")
    model.zero_grad(set_to_none=True)
    out = compiled(clips)
    out.float().logsumexp(1).sum().backward()
    assert _rel(out.detach(), eager_out) <= 1e-3
    k = "motion.res3.chnl_reduction.0.weight"
    assert torch.isfinite(dict(model.named_parameters())[k].grad).all()


@pytest.mark.parametrize("name", ["msnet_tiny", "msnet_mbv2_050"])
def test_streaming_on_cuda_equals_the_whole_clip_forward(name):
    model, clips = _model_and_clips(name, frames=4, size=64, causal=True)
    model.eval()
    with torch.no_grad():
        expected = clip_frame_logits(model, clips)
    stream = StreamingRecognizer(model)
    for b in range(2):
        stream.reset()
        for t in range(4):
            stream.step(clips[b, t])
            assert float((stream.last_logits - expected[b, t]).abs().max()) <= 1e-4


def test_training_on_cuda_runs_checkpoints_and_evaluates(tmp_path):
    """A short synthetic run on the GPU: the finite-state check before each save must cope with
    an optimiser whose step counts stay on the CPU while the weights are on the GPU."""
    from motionsqueeze.engine.config import load_config
    from motionsqueeze.engine.trainer import fit

    cfg = load_config("synthetic", ["train.device=cuda", "schedule.epochs=1", "data.train_clips=32",
                                    "data.val_clips=16", "data.num_segments=4", "data.size=32"])
    res = fit(cfg, run_dir=tmp_path / "run", quiet=True)
    assert res.history and res.history[-1]["val_top1"] >= 0
    assert (tmp_path / "run" / "final.safetensors").exists()
