"""Causal models and frame-by-frame streaming: the step API equals the whole-clip forward."""

import json
import os
import sys

import pytest
import torch

from motionsqueeze.cli import main
from motionsqueeze.layers import CausalTemporalShift, MotionSqueeze, causal_temporal_shift
from motionsqueeze.models import create_model, list_models, load_model, save_model
from motionsqueeze.models.streaming import (
    StreamingRecognizer,
    StreamState,
    clip_frame_logits,
    initial_state,
    stream_step,
)

sys.path.insert(0, os.path.dirname(__file__))
from video_factory import encode_video, synthetic_frames, write_frame_folder  # noqa: E402


def _randomise(model):
    """Non-trivial BatchNorm statistics and classifier, so that every layer matters."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    model.fc.weight.data.copy_(0.1 * torch.randn(model.fc.weight.shape, generator=gen))
    return model.eval()


def test_causal_shift_takes_one_fold_from_the_previous_frame_only():
    x = torch.randn(2 * 3, 16, 2, 2)
    out = causal_temporal_shift(x, 3, fold_div=8).view(2, 3, 16, 2, 2)
    v = x.view(2, 3, 16, 2, 2)
    assert torch.equal(out[:, 0, :2], torch.zeros_like(out[:, 0, :2]))
    assert torch.equal(out[:, 1:, :2], v[:, :-1, :2])
    assert torch.equal(out[:, :, 2:], v[:, :, 2:])
    # The step: buffer in, buffer out, same values.
    shift = CausalTemporalShift(3, 8)
    prev = None
    for t in range(3):
        y, prev = shift.step(v[:, t], prev)
        assert torch.equal(y, out[:, t])


def test_causal_motion_squeeze_gives_the_first_frame_zero_motion_and_ignores_the_future():
    torch.manual_seed(0)
    ms = MotionSqueeze(8, reduced_channels=4, patch_size=5, num_segments=4, causal=True).eval()
    x = torch.randn(4, 8, 6, 6)
    with torch.no_grad():
        out = ms(x)
        zero_motion = x[:1] + ms.flow_refinement(torch.zeros(1, 3, 6, 6))
        later = x.clone()
        later[2:] = torch.randn(2, 8, 6, 6)  # change frames 2 and 3
        out2 = ms(later)
    torch.testing.assert_close(out[:1], zero_motion)
    assert torch.equal(out[:2], out2[:2])  # frames 0 and 1 do not see frames 2, 3
    assert not torch.allclose(out[2:], out2[2:])
    with pytest.raises(ValueError, match="causal"):
        MotionSqueeze(8, reduced_channels=4, patch_size=5, num_segments=4).step(x[:1], None)


def _streaming_models():
    # TSM and MSNet of every registered backbone, made causal, at its smallest cost; a new
    # backbone is tested here as soon as it is registered.
    skip = ("_r34", "_r50", "_r101", "_causal")
    return [n for n in list_models("tsm_*") + list_models("msnet_*") if not n.endswith(skip)]


@pytest.mark.parametrize("name", _streaming_models())
def test_frame_by_frame_step_equals_the_whole_clip_forward_across_reset(name):
    torch.manual_seed(0)
    model = _randomise(create_model(name, num_classes=5, num_segments=4, causal=True))
    clips = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        expected = clip_frame_logits(model, clips)  # (2, 4, 5)
        expected_scores = model(clips)
    stream = StreamingRecognizer(model)
    worst = 0.0
    for b in range(2):  # second clip after reset() must not see the first
        stream.reset()
        for t in range(4):
            scores = stream.step(clips[b, t])
            worst = max(worst, float((stream.last_logits - expected[b, t]).abs().max()))
            want = expected[b, : t + 1].mean(dim=0)  # mean of the frames seen so far
            assert float((scores - want).abs().max()) <= 1e-5
        assert float((scores - expected_scores[b]).abs().max()) <= 1e-5
    assert worst <= 1e-5, worst
    # Without a reset, the next clip continues the stream: the per-frame logits are those of
    # the 8-frame causal clip, and differ from a fresh start.
    long_model = _randomise(create_model(name, num_classes=5, num_segments=8, causal=True))
    long_model.load_state_dict(model.state_dict())
    stream = StreamingRecognizer(long_model)
    whole = torch.cat([clips[0], clips[1]]).unsqueeze(0)
    with torch.no_grad():
        expected_long = clip_frame_logits(long_model, whole)[0]
    got = torch.stack([(stream.step(f), stream.last_logits)[1] for f in whole[0]])
    torch.testing.assert_close(got, expected_long, atol=1e-5, rtol=0)
    assert not torch.allclose(got[4], expected[1, 0], atol=1e-4)  # the state carried over


def test_stream_step_batches_streams_and_zero_state_equals_a_fresh_start():
    model = _randomise(create_model("msnet_tiny_causal", num_classes=3, num_segments=3))
    frames = torch.randn(3, 2, 3, 32, 32)  # (T, N streams, 3, H, W)
    with torch.no_grad():
        fresh, zero = None, initial_state(model, 32, 32, batch=2)
        for f in frames:
            a, la, fresh = stream_step(model, f, fresh)
            b, lb, zero = stream_step(model, f, zero)
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        single = StreamingRecognizer(model)
        for f in frames:
            s = single.step(f[1])
    torch.testing.assert_close(s, a[1], atol=1e-5, rtol=0)


def test_state_cache_serves_one_model_and_a_window_inside_the_map_streams_exactly():
    # At 128 x 128 the MotionSqueeze map of msnet_tiny is 16 x 16: the 15 x 15 window lies
    # inside the map, the case of a real stream (28 x 28 at 224), for every frame after the first.
    torch.manual_seed(0)
    a = _randomise(create_model("msnet_tiny_causal", num_classes=4, num_segments=3))
    torch.manual_seed(1)
    b = _randomise(create_model("msnet_tiny_causal", num_classes=4, num_segments=3))
    clip = torch.randn(1, 3, 3, 128, 128)
    with torch.no_grad():
        expected = clip_frame_logits(a, clip)[0]
        state, got = None, []
        for f in clip[0]:
            _, logits, state = stream_step(a, f[None], state)
            got.append(logits[0])
        torch.testing.assert_close(torch.stack(got), expected, atol=1e-5, rtol=0)
        # The state remembers a's shift slots and the prepared form of its motion features...
        assert state.cache["slots"] and state.cache["motion"][0]["features"] is state.motion[0]
        # ...which model b, handed the same state, does not take for its own.
        x = torch.randn(1, 3, 128, 128)
        bare = StreamState.from_tensors(state.tensors(), len(state.shift), len(state.motion))
        from_b = stream_step(b, x, state)[1]
        assert torch.equal(from_b, stream_step(b, x, bare)[1])
        assert not torch.allclose(from_b, stream_step(a, x, state)[1], atol=1e-3)


def test_non_causal_models_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="not causal.*causal: true"):
        StreamingRecognizer(create_model("msnet_tiny", num_classes=3, num_segments=4))
    StreamingRecognizer(create_model("tsn_tiny", num_classes=3, num_segments=4))  # TSN is causal as is


def test_causal_model_trains_saves_and_loads(tmp_path):
    from motionsqueeze.engine import fit
    from motionsqueeze.engine.config import config_from_dict

    raw = {
        "model": {"arch": "msnet_tiny", "causal": True, "patch_size": 5},
        "data": {"dataset": "synthetic", "train_clips": 8, "val_clips": 4, "num_segments": 3, "size": 32, "seed": 3},
        "optim": {"lr": 0.003, "reference_batch_size": 0},
        "schedule": {"epochs": 1},
        "train": {"batch_size": 4, "workers": 0, "log_every": 0, "progress": False, "tensorboard": False},
        "eval": {"batch_size": 4},
    }
    result = fit(config_from_dict(raw), run_dir=tmp_path / "run", quiet=True)
    assert result.model.config.causal
    loaded = load_model(tmp_path / "run" / "final.safetensors")
    assert loaded.config.causal
    assert isinstance(loaded.backbone.layer1[0].shift, CausalTemporalShift)
    assert all(m.causal for m in loaded.motion.values())
    StreamingRecognizer(loaded).step(torch.randn(3, 32, 32))


def test_step_exports_to_onnx_and_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from motionsqueeze.models.streaming import export_step_onnx, step_onnx_max_abs_diff

    model = _randomise(create_model("msnet_tiny_causal", num_classes=4, num_segments=3))
    names = export_step_onnx(model, tmp_path / "step.onnx", size=32)
    assert names[-2:] == ["window_logits", "window_seen"] and sum(n.startswith("motion_") for n in names) == 1
    # More frames than the window, so the state wraps around; not the tracing frame.
    frames = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    assert step_onnx_max_abs_diff(tmp_path / "step.onnx", model, frames) <= 1e-4
    with pytest.raises(ValueError, match="not causal"):
        export_step_onnx(create_model("tsm_tiny", num_classes=4, num_segments=3), tmp_path / "x.onnx", size=32)


# ---- the stream command ----


@pytest.fixture(scope="module")
def stream_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    names = ["left", "right", "still"]
    save_model(create_model("msnet_tiny_causal", num_classes=3, num_segments=3), root / "causal.safetensors",
               class_names=names, input_size=32)
    save_model(create_model("msnet_tiny", num_classes=3, num_segments=3), root / "offline.safetensors",
               class_names=names, input_size=32)
    frames = synthetic_frames(12, 40, 48)
    encode_video(root / "clip.mp4", frames)
    write_frame_folder(root / "frames", frames[:5])
    return root


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_stream_a_video_file_prints_json_lines_and_writes_an_annotated_video(stream_files, tmp_path, capsys):
    out_video = tmp_path / "annotated.mp4"
    code = main(["stream", str(stream_files / "clip.mp4"), "--checkpoint", str(stream_files / "causal.safetensors"),
                 "--json", "--rate", "0", "--topk", "2", "--write-video", str(out_video)])
    assert code == 0
    rows = _json_lines(capsys.readouterr().out)
    frames, summary = rows[:-1], rows[-1]["summary"]
    assert [r["frame"] for r in frames] == list(range(12))  # --rate 0: nothing dropped
    assert summary["frames"] == 12 and summary["dropped"] == 0
    assert all(len(r["top"]) == 2 and r["latency_ms"] > 0 for r in frames)
    assert {r["top"][0]["class"] for r in frames} <= {"left", "right", "still"}
    import av

    with av.open(str(out_video)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 12


def test_stream_keeps_an_earlier_video_until_the_new_one_is_finished(stream_files, tmp_path, capsys, monkeypatch):
    out_video = tmp_path / "annotated.avi"  # MPEG-4 part 2: packets (and writes) from the first frame on
    out_video.write_bytes(b"an earlier video")
    real_step, seen = StreamingRecognizer.step, []

    def watching_step(self, frame):  # while the stream runs, the earlier file must be whole
        seen.append(out_video.read_bytes())
        return real_step(self, frame)

    monkeypatch.setattr(StreamingRecognizer, "step", watching_step)
    code = main(["stream", str(stream_files / "clip.mp4"), "--checkpoint", str(stream_files / "causal.safetensors"),
                 "--json", "--rate", "0", "--write-video", str(out_video)])
    assert code == 0 and len(seen) == 12
    assert set(seen) == {b"an earlier video"}  # a kill at any frame would have left it
    import av

    with av.open(str(out_video)) as c:  # then replaced by the finished video, nothing left over
        assert sum(1 for _ in c.decode(video=0)) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.avi"]


def test_stream_drops_frames_instead_of_lagging(stream_files, capsys, monkeypatch):
    from motionsqueeze.cli import stream as stream_cli

    real_step = StreamingRecognizer.step

    def slow_step(self, frame):  # a model much slower than the source
        import time

        time.sleep(0.05)
        return real_step(self, frame)

    monkeypatch.setattr(StreamingRecognizer, "step", slow_step)
    code = main(["stream", str(stream_files / "clip.mp4"), "--checkpoint", str(stream_files / "causal.safetensors"),
                 "--json", "--rate", "500", "--queue", "1"])
    assert code == 0 and stream_cli is not None
    rows = _json_lines(capsys.readouterr().out)
    summary = rows[-1]["summary"]
    assert summary["dropped"] > 0 and summary["frames"] + summary["dropped"] == 12
    assert rows[-2]["frame"] == 11  # the newest frame is always shown


def test_stream_a_frame_folder_and_stop_after_max_frames(stream_files, capsys):
    code = main(["stream", str(stream_files / "frames"), "--checkpoint", str(stream_files / "causal.safetensors"),
                 "--rate", "0", "--max-frames", "3"])
    out, err = capsys.readouterr()
    assert code == 0
    assert len([line for line in out.splitlines() if line.startswith("frame")]) == 3
    assert '"frames": 3' in err


def test_stream_bad_inputs_give_clear_messages(stream_files, tmp_path, capsys, monkeypatch):
    ckpt = str(stream_files / "causal.safetensors")
    assert main(["stream", str(stream_files / "clip.mp4"), "--checkpoint", str(stream_files / "offline.safetensors")]) == 2
    assert "not causal" in capsys.readouterr().err
    assert main(["stream", "/dev/video97", "--checkpoint", ckpt]) == 2
    assert "camera /dev/video97 does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    assert main(["stream", str(broken), "--checkpoint", ckpt]) == 2
    assert "broken.mp4: cannot be read as a video" in capsys.readouterr().err
    # A source that stalls: no frame arrives within the timeout.
    from motionsqueeze.cli import stream as stream_cli

    def stalled(self):
        import time

        time.sleep(1.0)
        yield from ()

    monkeypatch.setattr(stream_cli._Source, "frames", stalled)
    assert main(["stream", str(stream_files / "clip.mp4"), "--checkpoint", ckpt, "--stall-timeout", "0.2"]) == 1
    assert "stalled" in capsys.readouterr().err


def test_streaming_benchmark_prints_its_tables():
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "streaming.py"
    cmd = [sys.executable, str(script), "--models", "tsm_tiny,msnet_tiny", "--size", "32",
           "--frames", "2", "--rounds", "1", "--frames-per-round", "2", "--threads", "1", "--module-path",
           "--floor", "--profile", "3"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    assert "| msnet_tiny causal " in out and "stream fps" in out
    assert "MSNet time / TSM time" in out and "| tiny " in out and "fastest frame" in out
    assert "| msnet_tiny causal (module path) |" in out and "| tiny (module path) " in out
    assert "| msnet_tiny causal (no matching) |" in out and "| tiny (no matching) " in out  # --floor
    assert "(no matching): costliest operators" not in out  # the profile is of real steps only
    # --profile: operators per model, the split of a frame, the arithmetic of a step.
    assert "msnet_tiny causal: costliest operators" in out and "operators in MotionSqueeze.step" in out
    arithmetic = out.split("Arithmetic of one step")[1]
    ms_row = next(line for line in arithmetic.splitlines() if line.startswith("| msnet_tiny causal "))
    assert float(ms_row.split("|")[3]) > 0 and int(ms_row.split("|")[5]) > 0  # FLOPs and operators in MotionSqueeze
    assert "MSNet / TSM per step, if time followed each quantity alone" in out
