"""Tools for applying a trained model: selftest, fuse, test_segments, extract-features."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from motionsqueeze.cli import main
from motionsqueeze.selftest import run_selftest

# The module, not the function of the same name that motionsqueeze.ops exports.
displacement_module = importlib.import_module("motionsqueeze.ops.displacement")


@pytest.fixture
def no_triton(monkeypatch):
    # The Triton interpreter is slow on CPU; tests/test_triton_displacement.py covers it.
    monkeypatch.setattr(importlib.import_module("motionsqueeze.selftest"), "available_backends",
                        lambda: ["auto", "reference"])


def test_selftest_passes_on_cpu(no_triton):
    report = run_selftest("cpu", torch.float32)
    assert report.passed, report.to_dict()
    names = [c.name for c in report.checks]
    assert names == ["backend 'auto'", "backend 'reference'", "motion field res3", "motion path changes logits"]
    assert all(c.status == "ok" for c in report.checks)
    assert report.verdict().startswith("OK")
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["passed"] is True and doc["dtype"] == "float32" and len(doc["checks"]) == 4


def test_selftest_catches_a_wrong_backend(monkeypatch):
    # A backend whose confidence is slightly off (the kind of error that trains silently).
    def skewed(f1, f2, *args):
        out = displacement_module.displacement_reference(f1, f2, *args)
        return out * torch.tensor([1.0, 1.0, 0.99], dtype=out.dtype)[:, None, None]

    monkeypatch.setitem(displacement_module._BACKENDS, "skewed", (skewed, lambda t: False))
    monkeypatch.setattr(importlib.import_module("motionsqueeze.selftest"), "available_backends",
                        lambda: ["reference", "skewed"])
    report = run_selftest("cpu", torch.float32)
    status = {c.name: c.status for c in report.checks}
    assert status["backend 'reference'"] == "ok" and status["backend 'skewed'"] == "FAIL"
    assert not report.passed and "backend 'skewed'" in report.verdict()


def test_selftest_catches_a_dead_motion_path(monkeypatch, no_triton):
    # The original code's failure: the correlation op silently returned nothing useful.
    import motionsqueeze.layers.motion_squeeze as ms

    monkeypatch.setattr(ms, "displacement", lambda f1, f2, *a, **k: f1.new_zeros(f1.shape[0], 3, *f1.shape[2:]))
    report = run_selftest("cpu", torch.float32)
    status = {c.name: c.status for c in report.checks}
    assert status["motion field res3"] == "FAIL" and status["motion path changes logits"] == "FAIL"
    assert status["backend 'reference'"] == "ok"


def test_selftest_cli_prints_a_verdict(capsys, no_triton):
    assert main(["selftest", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "OK: MotionSqueeze is computed correctly on cpu in bfloat16" in out
    assert out.count("[     ok]") == 4


# ---------------------------------------------------------------- fuse

def _eval_output(folder, logits, labels, fusion="logits"):
    """What ``motionsqueeze eval`` writes, for scores chosen by the test."""
    from motionsqueeze.engine.metrics import classification_report, write_report

    scores = logits.softmax(1) if fusion == "softmax" else logits
    report = classification_report(scores, labels, scores.shape[1])
    write_report(folder, report, ["push", "pull", "spin"], {"fusion": fusion, "clips": 1, "crops": 1},
                 scores.numpy(), labels.numpy(), torch.arange(len(labels)).numpy())
    return folder


# Model A is right and sure on videos 0-1 and barely wrong on 2-3; model B the other way round,
# so each alone scores 50 % and their probability mean 100 %.
LABELS = torch.tensor([0, 1, 2, 0])
LOGITS_A = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 0.2, 0], [0, 0.2, 0]])
LOGITS_B = torch.tensor([[0, 0.1, 0], [0.1, 0, 0], [0, 0, 5], [5, 0, 0]])


def test_fuse_reports_the_ensemble_metrics_and_per_model_rows(tmp_path, capsys):
    a = _eval_output(tmp_path / "a", LOGITS_A, LABELS)
    b = _eval_output(tmp_path / "b", LOGITS_B, LABELS, fusion="softmax")  # probabilities, too
    assert main(["fuse", str(a), str(b / "scores.npz"), "--out", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out
    assert "fused (softmax)" in out and "100.00" in out
    metrics = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert metrics["top1"] == 100.0 and metrics["count"] == 4 and metrics["fusion"] == "softmax"
    assert [r["top1"] for r in metrics["inputs"]] == [50.0, 50.0]
    lines = (tmp_path / "f" / "per_class.csv").read_text().splitlines()
    assert lines[0] == "class_index,class_name,videos,accuracy" and lines[1] == "0,push,2,100.00"
    assert (tmp_path / "f" / "confusion.png").stat().st_size > 0


def test_fuse_weights_and_logit_fusion(tmp_path):
    from motionsqueeze.engine.ensemble import fuse_evaluations, load_eval_scores

    evals = [load_eval_scores(_eval_output(tmp_path / n, x, LABELS)) for n, x in (("a", LOGITS_A), ("b", LOGITS_B))]
    # Weight 0 on B gives A's probabilities; logits fusion is the weighted mean of logits.
    torch.testing.assert_close(fuse_evaluations(evals, [1, 0]), LOGITS_A.double().softmax(1))
    torch.testing.assert_close(fuse_evaluations(evals, [3, 1], "logits"), (3 * LOGITS_A + LOGITS_B).double() / 4)
    evals[1].probabilities = True
    with pytest.raises(ValueError, match="hold probabilities"):
        fuse_evaluations(evals, None, "logits")


def test_fuse_refuses_evaluations_of_different_items(tmp_path, capsys):
    a = _eval_output(tmp_path / "a", LOGITS_A, LABELS)
    b = _eval_output(tmp_path / "b", LOGITS_B[:3], LABELS[:3])
    assert main(["fuse", str(a), str(b)]) == 2
    assert "cover different items" in capsys.readouterr().err
    assert main(["fuse", str(a), str(a), "--weights", "1,x"]) == 2
    assert "--weights must be comma-separated numbers" in capsys.readouterr().err
    assert main(["fuse", str(a), str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------- test_segments

def _saved_model(path, arch="msnet_tiny", frames=4, size=32):
    from motionsqueeze.data.synthetic import SYNTHETIC_CLASSES
    from motionsqueeze.models import create_model, save_model

    torch.manual_seed(0)
    model = create_model(arch, num_classes=len(SYNTHETIC_CLASSES), num_segments=frames, patch_size=5)
    torch.nn.init.normal_(model.fc.weight)
    return save_model(model.eval(), path, class_names=SYNTHETIC_CLASSES, input_size=size,
                      extra={"resize": None}), model


def test_load_model_at_another_frame_count_equals_a_model_built_for_it(tmp_path):
    from motionsqueeze.models import create_model, load_model

    path, trained = _saved_model(tmp_path / "m.safetensors")
    model = load_model(path, test_segments=6)
    assert model.num_segments == 6 and model.card.preprocess.num_segments == 6 and model.config.num_segments == 6
    assert model.card.config.num_segments == 6
    fresh = create_model("msnet_tiny", num_classes=trained.num_classes, num_segments=6, patch_size=5)
    fresh.load_state_dict(trained.state_dict())
    x = torch.randn(2, 6, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fresh.eval()(x))
    with pytest.raises(ValueError, match="at least 2 frames"):
        load_model(path, test_segments=1)


def test_eval_and_predict_with_test_segments(tmp_path, capsys):
    import numpy as np

    from video_factory import encode_video, synthetic_frames

    path, _ = _saved_model(tmp_path / "m.safetensors")
    common = ["eval", "synthetic", "--checkpoint", str(path), "--set", "data.val_clips=3", "--set", "data.size=32",
              "--set", "data.num_segments=4"]
    assert main([*common, "--test-segments", "6", "--out", str(tmp_path / "e")]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["num_segments"] == 6 and metrics["count"] == 3
    assert np.load(tmp_path / "e" / "scores.npz")["scores"].shape == (3, 8)
    video = tmp_path / "v.mp4"
    encode_video(video, synthetic_frames(12))
    capsys.readouterr()
    assert main(["predict", str(path), str(video), "--test-segments", "6", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"]) == 5


# ---------------------------------------------------------------- extract-features

@pytest.fixture
def videos(tmp_path):
    from video_factory import encode_video, synthetic_frames, write_frame_folder

    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    encode_video(folder / "a.mp4", synthetic_frames(12))
    write_frame_folder(folder / "sub" / "b", synthetic_frames(10))
    (folder / "sub" / "broken.mp4").write_bytes(b"this is not a video")
    return folder


def test_extract_clip_features_averaged_over_views_skipping_a_broken_input_and_resuming(tmp_path, videos, capsys):
    import numpy as np

    from motionsqueeze.engine.predict import prepare_video
    from motionsqueeze.models import load_model

    path, _ = _saved_model(tmp_path / "m.safetensors")
    out = tmp_path / "feats"
    args = ["extract-features", str(path), str(videos), "--out", str(out), "--clips", "2", "--crops", "3"]
    assert main(args) == 1  # one input could not be read
    captured = capsys.readouterr()
    assert "2 written, 0 already there, 1 skipped" in captured.out and "broken.mp4" in captured.err
    feats = np.load(out / "a.mp4.npz")["features"]
    model = load_model(path)
    views = prepare_video(model, videos / "a.mp4", clips=2, crops=3)
    assert views.shape == (6, 4, 3, 32, 32)
    with torch.no_grad():
        from motionsqueeze.data.transforms import normalize_clip

        x = normalize_clip(views, model.card.preprocess.mean, model.card.preprocess.std)
        want = model.forward_head(model.forward_features(x), pre_logits=True).mean(0)
    np.testing.assert_allclose(feats, want.numpy(), rtol=1e-5, atol=1e-6)
    assert (out / "sub" / "b.npz").is_file()
    index = (out / "index.csv").read_text().splitlines()
    assert index[0] == "name,source,file,status" and index[1].startswith("a.mp4,") and index[1].endswith(",done")
    import csv

    rows = {r["name"]: r for r in csv.DictReader(index)}
    assert rows["sub/broken.mp4"]["status"].startswith("skipped: ") and rows["sub/b"]["file"] == "sub/b.npz"

    # A rerun continues: finished files are kept, only the missing one is computed.
    (out / "sub" / "b.npz").unlink()
    stamp = (out / "a.mp4.npz").stat().st_mtime_ns
    assert main(args) == 1
    assert "1 written, 1 already there, 1 skipped" in capsys.readouterr().out
    assert (out / "a.mp4.npz").stat().st_mtime_ns == stamp and (out / "sub" / "b.npz").is_file()
    # Other settings into the same folder would mix features: refused.
    assert main([*args[:-4], "--clips", "1"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_extract_frame_features_per_stage_with_motion_fields(tmp_path, videos):
    from safetensors.numpy import load_file

    from motionsqueeze.data.transforms import normalize_clip
    from motionsqueeze.engine.predict import prepare_video
    from motionsqueeze.models import load_model

    path, _ = _saved_model(tmp_path / "m.safetensors")
    listing = tmp_path / "list.txt"
    listing.write_text("# inputs\nvideos/a.mp4\n\n")
    out = tmp_path / "frames"
    assert main(["extract-features", str(path), "--list", str(listing), "--out", str(out), "--level", "frame",
                 "--format", "safetensors"]) == 0
    arrays = load_file(out / "videos" / "a.mp4.safetensors")
    assert sorted(arrays) == ["motion_res3", "pre_logits", "res2", "res3", "res4", "res5"]
    assert arrays["res3"].shape == (4, 32, 4, 4) and arrays["pre_logits"].shape == (4, 128)
    model = load_model(path)
    x = normalize_clip(prepare_video(model, tmp_path / "videos" / "a.mp4"), model.card.preprocess.mean,
                       model.card.preprocess.std)
    with torch.no_grad():
        field = model.motion_fields(x)["res3"][0]
    assert arrays["motion_res3"].shape == (3, 3, 4, 4)
    torch.testing.assert_close(torch.from_numpy(arrays["motion_res3"]), field)
    # One array fits a .npy file; several do not.
    assert main(["extract-features", str(path), str(tmp_path / "videos" / "a.mp4"), "--out", str(tmp_path / "n"),
                 "--level", "frame", "--stages", "motion_res3", "--format", "npy"]) == 0
    assert main(["extract-features", str(path), str(tmp_path / "videos" / "a.mp4"), "--out", str(tmp_path / "m"),
                 "--level", "frame", "--format", "npy"]) == 2


# ---------------------------------------------------------------- sliding-window timeline

class MotionOracle(torch.nn.Module):
    """A model whose output is known: "moving right" vs "moving left" from the mean horizontal
    displacement that MotionSqueeze's op finds between neighbouring (pooled) frames."""

    def __init__(self, frames=4):
        super().__init__()
        from motionsqueeze.data.synthetic import SYNTHETIC_CLASSES
        from motionsqueeze.models.card import ModelCard, Preprocess

        self.num_segments = frames
        self.card = ModelCard(class_names=SYNTHETIC_CLASSES[:2], preprocess=Preprocess(
            input_size=64, resize=None, mean=[0.5] * 3, std=[0.25] * 3, num_segments=frames))
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device to move to

    def forward(self, x):
        from motionsqueeze.ops import displacement

        n, t = x.shape[:2]
        f = torch.nn.functional.avg_pool2d(x.flatten(0, 1), 2).view(n, t, *x.shape[2:3], 32, 32)
        d = displacement(f[:, :-1].flatten(0, 1), f[:, 1:].flatten(0, 1), patch_size=9, sigma=5.0, normalize=False)
        u = d[:, 0].reshape(n, -1).mean(1)
        return torch.stack([u, -u], dim=1) * 100


def test_timeline_top_class_changes_where_the_motion_changes(tmp_path, capsys):
    import numpy as np

    from motionsqueeze.data.synthetic import SyntheticMotionConfig, render_clip
    from motionsqueeze.engine.timeline import predict_timeline, window_starts
    from video_factory import write_frame_folder

    assert window_starts(10, 4, 3) == [0, 3, 6] and window_starts(11, 4, 3) == [0, 3, 6, 7] and window_starts(3, 4, 2) == [0]
    g = torch.Generator().manual_seed(1)
    config = SyntheticMotionConfig(frames=16, size=64, speed=(2.0, 3.0))
    right, left = render_clip(0, g, config), render_clip(1, g, config)  # (16, 3, 64, 64) each
    frames = torch.cat([right, left]).permute(0, 2, 3, 1).numpy()  # 32 frames; the motion turns at frame 16
    video = write_frame_folder(tmp_path / "turn", np.ascontiguousarray(frames))
    tl = predict_timeline(MotionOracle(), video, window=8, stride=4)
    assert [(w.start, w.end) for w in tl.windows] == [(0, 8), (4, 12), (8, 16), (12, 20), (16, 24), (20, 28), (24, 32)]
    tops = [w.top[0]["class"] for w in tl.windows]
    assert tops[:3] == ["moving right"] * 3 and tops[-3:] == ["moving left"] * 3
    segments = tl.segments()
    assert [s["class"] for s in segments] == ["moving right", "moving left"]
    # The cut is where the motion turns (frame 16), to within one stride.
    assert segments[0]["start"] == 0 and segments[1]["end"] == 32
    assert segments[0]["end"] == segments[1]["start"] and abs(segments[1]["start"] - 16) <= 4


def test_predict_window_writes_json_csv_and_an_annotated_video_in_seconds(tmp_path, capsys):
    from video_factory import decode_all, encode_video, synthetic_frames

    path, _ = _saved_model(tmp_path / "m.safetensors")
    video = encode_video(tmp_path / "long.mp4", synthetic_frames(30), fps=10)  # 3 s
    out = tmp_path / "tl"
    assert main(["predict", str(path), video, "--window", "1", "--stride", "0.5", "--seconds", "--topk", "2",
                 "--timeline-out", str(out), "--annotate"]) == 0
    printed = capsys.readouterr().out
    assert "30 frames, 10 fps; windows of 10 frames every 5" in printed
    doc = json.loads((out / "long.mp4.json").read_text())
    assert [(w["start"], w["end"]) for w in doc["windows"]] == [(0, 10), (5, 15), (10, 20), (15, 25), (20, 30)]
    assert doc["windows"][1]["start_s"] == 0.5 and len(doc["windows"][0]["top"]) == 2 and doc["segments"]
    rows = (out / "long.mp4.csv").read_text().splitlines()
    assert rows[0] == "start_frame,end_frame,start_s,end_s,class,probability,top" and len(rows) == 6
    assert decode_all(out / "long.mp4.annotated.mp4").shape == (30, 32, 32, 3)
    assert main(["predict", str(path), video, "--window", "1", "--seconds", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stride"] == 5
    # Window options without --window are a mistake, not silently ignored.
    assert main(["predict", str(path), video, "--stride", "3"]) == 2
    assert "need --window" in capsys.readouterr().err


# ---------------------------------------------------------------- ONNX with preprocessing

def test_onnx_with_preprocessing_predicts_what_pytorch_predicts(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from video_factory import encode_video, synthetic_frames

    from motionsqueeze.models.export import OnnxRecognizer

    path, _ = _saved_model(tmp_path / "m.safetensors")
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", str(path), "--out", str(onnx_file), "--with-preprocessing", "--exporter", "torchscript",
                 "--opset", "17"]) == 0
    printed = capsys.readouterr().out
    assert "uint8 frames (N, 4, 32, 32, 3) -> logits (N, 8)" in printed and "(ok)" in printed
    runtime = OnnxRecognizer(onnx_file)
    assert runtime.takes_frames and runtime.input.name == "frames" and runtime.card.class_names[0] == "moving right"
    video = encode_video(tmp_path / "v.mp4", synthetic_frames(12))
    assert main(["predict", str(path), video, "--json", "--topk", "8"]) == 0
    want = json.loads(capsys.readouterr().out)["predictions"]
    assert main(["predict", str(onnx_file), video, "--onnx", "--json", "--topk", "8"]) == 0
    got = json.loads(capsys.readouterr().out)["predictions"]
    assert [p["class"] for p in got] == [p["class"] for p in want]
    for g, w in zip(got, want):
        assert abs(g["probability"] - w["probability"]) < 1e-5


# ---------------------------------------------------------------- predict: views, folders, lists, files

def test_predict_fuses_views_like_eval(tmp_path, videos):
    from motionsqueeze.data.transforms import normalize_clip
    from motionsqueeze.engine.predict import predict_video, prepare_video
    from motionsqueeze.models import load_model

    path, _ = _saved_model(tmp_path / "m.safetensors")
    model = load_model(path)
    top = predict_video(model, videos / "a.mp4", topk=8, clips=2, crops=3)
    views = prepare_video(model, videos / "a.mp4", clips=2, crops=3)
    with torch.no_grad():
        logits = model(normalize_clip(views, model.card.preprocess.mean, model.card.preprocess.std))
    want = logits.mean(0).softmax(0)
    assert len({round(float(p), 6) for p in logits.softmax(1)[:, 0]}) > 1  # the views differ
    for row in top:
        assert abs(row["probability"] - float(want[row["index"]])) < 1e-6
    soft = predict_video(model, videos / "a.mp4", topk=8, clips=2, crops=3, fusion="softmax")
    probs = logits.softmax(1).mean(0)
    assert all(abs(r["probability"] - float(probs[r["index"]])) < 1e-6 for r in soft)


def test_predict_a_folder_and_a_list_into_jsonl_and_csv_skipping_an_unreadable_input(tmp_path, videos, capsys):
    path, _ = _saved_model(tmp_path / "m.safetensors")
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(path), str(videos), "--topk", "2", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "skipped: " in captured.err and "broken.mp4" in captured.err and "1 of 3 inputs could not be read" in captured.err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input"].replace("\\", "/").split("videos/")[1] for r in rows] == ["a.mp4", "sub/b", "sub/broken.mp4"]
    assert len(rows[0]["predictions"]) == 2 and "error" in rows[2] and "predictions" not in rows[2]
    listing = tmp_path / "list.txt"
    listing.write_text("videos/a.mp4\nvideos/missing.mp4\n")
    csv_out = tmp_path / "pred.csv"
    assert main(["predict", str(path), "--list", str(listing), "--topk", "3", "--out", str(csv_out)]) == 1
    lines = csv_out.read_text().splitlines()
    assert lines[0] == "input,rank,index,class,probability,error" and len(lines) == 5
    assert lines[1].split(",")[1:3] != ["", ""] and lines[4].split(",")[1:5] == ["", "", "", ""]
    assert main(["predict", str(path), str(videos / "a.mp4"), "--out", str(tmp_path / "p.txt")]) == 2


def test_an_interrupted_predict_keeps_the_earlier_out_file_and_says_where_its_rows_are(tmp_path, videos, capsys,
                                                                                         monkeypatch):
    import motionsqueeze.engine.predict as engine_predict

    path, _ = _saved_model(tmp_path / "m.safetensors")
    out = tmp_path / "pred.csv"
    argv = ["predict", str(path), str(videos), "--out", str(out)]
    assert main(argv + ["--topk", "2"]) == 1
    earlier = out.read_text()
    real, calls = engine_predict.predict_video, []

    def interrupted_at_the_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_predict, "predict_video", interrupted_at_the_second)
    capsys.readouterr()
    assert main(argv + ["--topk", "3"]) == 130
    err = capsys.readouterr().err
    partial = tmp_path / "pred.partial.csv"
    assert f"stopped after 1 of 3 inputs; their predictions are in {partial} ({out} is unchanged)" in err, err
    assert out.read_text() == earlier  # the complete file of the earlier run
    rows = partial.read_text().splitlines()
    assert rows[0] == "input,rank,index,class,probability,error" and len(rows) == 4 and rows[1].endswith(",")
    monkeypatch.setattr(engine_predict, "predict_video", real)
    with monkeypatch.context() as m:  # the disk fills up as the finished file is put in place
        from full_disk import FULL, disk_full_while_writing

        disk_full_while_writing(m, "pred.csv")
        assert main(argv + ["--topk", "3"]) == 2
    err = capsys.readouterr().err
    assert (f"all 3 inputs are done but pred.csv could not be written; their predictions are in {partial} "
            f"({out} is unchanged)") in err and FULL in err, err
    assert out.read_text() == earlier and len(partial.read_text().splitlines()) == 1 + 3 + 3 + 1
    assert main(argv + ["--topk", "3"]) == 1  # a complete run replaces the file and the partial one
    assert len(out.read_text().splitlines()) == 1 + 3 + 3 + 1 and not partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if "pred" in p.name) == ["pred.csv"]


# ---------------------------------------------------------------- one preprocessing for eval and predict

def test_eval_and_predict_prepare_a_video_from_the_same_card_and_score_it_the_same(tmp_path, capsys):
    """The recipe differs from the model in every clip setting; eval takes the model card's
    (with a note each), as predict does, so the fused scores agree."""
    import numpy as np

    from video_factory import synthetic_frames, write_frame_folder

    from motionsqueeze.engine.predict import predict_video
    from motionsqueeze.models import create_model, load_model, save_model
    from motionsqueeze.models.card import Preprocess

    torch.manual_seed(0)
    model = create_model("msnet_tiny", num_classes=3, num_segments=3, patch_size=5)
    torch.nn.init.normal_(model.fc.weight)
    pre = Preprocess(input_size=24, resize=[30, 36], mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.25], num_segments=3,
                     sampling="dense", dense_stride=2, dense_window=8)
    path = save_model(model, tmp_path / "m.safetensors", card=model.card.replace(class_names=list("abc"), preprocess=pre))
    write_frame_folder(tmp_path / "v", synthetic_frames(15, 40, 52))
    (tmp_path / "val.txt").write_text("v 15 1\n")
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "model": {"arch": "msnet_tiny", "patch_size": 5},
        "data": {"root": str(tmp_path), "train_list": str(tmp_path / "val.txt"), "val_list": str(tmp_path / "val.txt"),
                 "class_names": str(tmp_path / "classes.txt"), "num_segments": 3, "resize": 28, "crop_size": 20,
                 "test_num_clips": 2, "test_num_crops": 3},
        "train": {"device": "cpu", "progress": False, "workers": 0},
    }))
    assert main(["eval", str(recipe), "--checkpoint", str(path), "--out", str(tmp_path / "e")]) == 0
    printed = capsys.readouterr().out
    for note in ("data.resize: using the model's [30, 36]", "data.crop_size: using the model's 24",
                 "data.sampling: using the model's dense", "data.mean: using the model's [0.4, 0.5, 0.6]"):
        assert note in printed, printed
    fused = torch.from_numpy(np.load(tmp_path / "e" / "scores.npz")["scores"][0]).softmax(0)
    top = predict_video(load_model(path), tmp_path / "v", topk=3, clips=2, crops=3)
    assert len({round(float(p), 3) for p in fused}) == 3  # distinct scores: the order means something
    for row in top:
        assert abs(row["probability"] - float(fused[row["index"]])) < 1e-5, (row, fused)
