import json
import os
import shutil

import pytest
import yaml
from video_factory import encode_video, synthetic_frames, write_frame_folder

from motionsqueeze.cli import main
from motionsqueeze.data import DataConfig, build_dataset, load_class_names, read_list


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """One tiny mp4 that the fake datasets copy."""
    return encode_video(tmp_path_factory.mktemp("src") / "clip.mp4", synthetic_frames(12, 32, 32))


def _put(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(content)


def _copy(clip, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copy(clip, path)


def _prepare(*args):
    return main(["prepare", *map(str, args)])


def test_sthv1(tmp_path, capsys):
    frames = synthetic_frames(6, 16, 16)
    for vid, n in (("1", 6), ("2", 4), ("3", 5)):
        write_frame_folder(tmp_path / "20bn-something-something-v1" / vid, frames[:n])
    _put(tmp_path / "something-something-v1-labels.csv",
         "Pushing something from right to left\nHolding something\nPushing something from left to right\n")
    _put(tmp_path / "something-something-v1-train.csv",
         "1;Pushing something from left to right\n2;Holding something\n9;Holding something\n")
    _put(tmp_path / "something-something-v1-validation.csv", "3;Pushing something from right to left\n")
    _put(tmp_path / "something-something-v1-test.csv", "2\n")
    out = tmp_path / "lists"
    assert _prepare("sthv1", "--root", tmp_path, "--out", out) == 0
    assert "train: 2 items, 1 annotated but not found" in capsys.readouterr().out
    # Sorted class names (TSM's order), 0-based labels, frame counts from the folders.
    assert load_class_names(out / "classes.txt") == ["Holding something", "Pushing something from left to right",
                                                     "Pushing something from right to left"]
    assert (out / "train.txt").read_text() == "1 6 1\n2 4 0\n"
    assert (out / "val.txt").read_text() == "3 5 2\n"
    assert (out / "test.txt").read_text() == "2 4\n"
    assert (out / "missing_train.txt").read_text() == "9\n"
    cfg = DataConfig.from_dict(yaml.safe_load((out / "data.yaml").read_text()))
    assert cfg.format == "frames" and cfg.template == "{:05d}.jpg" and cfg.flip == "direction-aware"
    item = build_dataset(cfg.replace(num_segments=2, resize=None, crop_size=16), "train")[0]
    assert item["clip"].shape == (2, 3, 16, 16) and item["label"] == 1


def test_sthv1_reports_frame_folders_cut_at_a_gap(tmp_path, capsys):
    frames = synthetic_frames(8, 8, 8)
    write_frame_folder(tmp_path / "1", frames)
    write_frame_folder(tmp_path / "2", frames)
    os.remove(tmp_path / "2" / "00004.jpg")  # 3 frames before the gap, 4 after
    _put(tmp_path / "something-something-v1-labels.csv", "A\n")
    _put(tmp_path / "something-something-v1-train.csv", "1;A\n2;A\n")
    _put(tmp_path / "something-something-v1-validation.csv", "1;A\n")
    assert _prepare("sthv1", "--root", tmp_path, "--out", tmp_path / "lists") == 0
    text = capsys.readouterr().out
    assert ("warning: train: 2: frame 00004.jpg is missing: listed with the 3 frames before the gap, "
            "4 frames after it are left out") in text
    assert text.count("warning:") == 1
    assert (tmp_path / "lists" / "train.txt").read_text() == "1 8 0\n2 3 0\n"
    assert "train: 2: frame 00004.jpg" in (tmp_path / "lists" / "prepare_warnings.txt").read_text()


def test_sthv2_with_resumable_parallel_frame_extraction(tmp_path, clip, capsys):
    videos = tmp_path / "20bn-something-something-v2"
    for vid in ("10", "11", "13"):
        _copy(clip, videos / f"{vid}.webm")  # the container does not matter to the reader
    (videos / "13.webm").write_bytes(b"broken")
    ann = tmp_path / "labels"
    _put(ann / "something-something-v2-labels.json",
         json.dumps({"Pushing something from left to right": "0", "Holding something": "1"}))
    _put(ann / "something-something-v2-train.json", json.dumps([
        {"id": "10", "label": "pushing a pen from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a pen"]},
        {"id": "12", "label": "holding x", "template": "Holding [something]", "placeholders": ["x"]},
        {"id": "13", "label": "holding y", "template": "Holding [something]", "placeholders": ["y"]},
    ]))
    _put(ann / "something-something-v2-validation.json", json.dumps([
        {"id": "11", "label": "holding a cup", "template": "Holding [something]", "placeholders": ["a cup"]}]))
    out, frames = tmp_path / "lists", tmp_path / "frames"
    assert _prepare("sthv2", "--root", tmp_path, "--annotations", ann, "--out", out) == 0
    assert (out / "train.txt").read_text() == "10.webm 0\n13.webm 1\n"
    assert (out / "missing_train.txt").read_text() == "12.webm\n"

    # A run that was interrupted left a half-written folder behind.
    write_frame_folder(frames / "10.part", synthetic_frames(2, 8, 8), template="{:06d}.jpg")
    assert _prepare("sthv2", "--root", tmp_path, "--annotations", ann, "--out", out,
                    "--extract-frames", frames, "--workers", "2") == 0
    text = capsys.readouterr().out
    assert "frames: 2 videos extracted, 0 already done, 1 failed" in text
    assert (out / "train.txt").read_text() == "10 12 0\n"  # the broken video is left out
    assert (out / "val.txt").read_text() == "11 12 1\n"
    assert sorted(os.listdir(frames)) == [".extraction.json", "10", "11"] and len(os.listdir(frames / "10")) == 12
    failures = (out / "extract_failures.txt").read_text()
    assert failures.startswith("13.webm\t") and "13.webm: cannot open the video" in failures
    stamp = os.path.getmtime(frames / "10" / "000001.jpg")
    # A rerun keeps finished work and only retries what failed.
    assert _prepare("sthv2", "--root", tmp_path, "--annotations", ann, "--out", out,
                    "--extract-frames", frames, "--workers", "2") == 0
    assert "frames: 0 videos extracted, 2 already done, 1 failed" in capsys.readouterr().out
    assert os.path.getmtime(frames / "10" / "000001.jpg") == stamp
    # A rerun with other settings would keep the old frames: refused, naming what changed.
    assert _prepare("sthv2", "--root", tmp_path, "--annotations", ann, "--out", out,
                    "--extract-frames", frames, "--short-side", "6") == 2
    assert "short_side None -> 6" in capsys.readouterr().err
    # Every extraction failing is an error, not an empty success.
    assert _prepare("sthv2", "--root", tmp_path, "--annotations", ann, "--out", tmp_path / "bad",
                    "--extract-frames", tmp_path / "bad_frames", "--short-side", "6") == 0  # 10, 11 work
    for vid in ("10", "11"):
        (videos / f"{vid}.webm").write_bytes(b"broken")
    assert _prepare("sthv2", "--root", tmp_path, "--annotations", ann, "--out", tmp_path / "none",
                    "--extract-frames", tmp_path / "none_frames") == 1
    assert "every video failed to extract (3)" in capsys.readouterr().err
    cfg = DataConfig.from_dict(yaml.safe_load((out / "data.yaml").read_text()))
    assert cfg.format == "frames" and cfg.template == "{:06d}.jpg" and cfg.root == str(frames)
    assert read_list(cfg.train_list)[0].num_frames == 12


def test_kinetics400(tmp_path, clip):
    root = tmp_path / "k400"
    _copy(clip, root / "train" / "abseiling" / "aaaaaaaaaaa_000010_000020.mp4")
    _copy(clip, root / "train" / "air drumming" / "bbbbbbbbbbb_000001_000011.mp4")
    _copy(clip, root / "val" / "ccccccccccc.mp4")  # named by the YouTube id alone
    header = "label,youtube_id,time_start,time_end,split\n"
    _put(root / "annotations" / "train.csv", header + "abseiling,aaaaaaaaaaa,10,20,train\n"
         "air drumming,bbbbbbbbbbb,1,11,train\n\"air drumming\",zzzzzzzzzzz,0,10,train\n")
    _put(root / "annotations" / "validate.csv", header + "abseiling,ccccccccccc,5,15,val\n")
    out = tmp_path / "lists"
    assert _prepare("kinetics400", "--root", root, "--out", out) == 0
    assert load_class_names(out / "classes.txt") == ["abseiling", "air drumming"]
    assert (out / "train.txt").read_text() == ("train/abseiling/aaaaaaaaaaa_000010_000020.mp4 0\n"
                                               "train/air drumming/bbbbbbbbbbb_000001_000011.mp4\t1\n")
    assert (out / "val.txt").read_text() == "val/ccccccccccc.mp4 0\n"
    assert (out / "missing_train.txt").read_text() == "zzzzzzzzzzz_000000_000010\n"
    cfg = DataConfig.from_dict(yaml.safe_load((out / "data.yaml").read_text()))
    ds = build_dataset(cfg.replace(num_segments=4, resize=None, crop_size=32, sampling="dense", dense_stride=2), "train")
    assert ds[1]["clip"].shape == (4, 3, 32, 32) and ds[1]["label"] == 1


def test_kinetics400_duplicate_names_and_a_frames_folder_under_the_root(tmp_path, clip, capsys):
    root = tmp_path / "k400"
    # the same clip in val/ and (a stray copy) in train/: each split takes its own
    for split in ("train", "val"):
        _copy(clip, root / split / "abseiling" / "aaaaaaaaaaa_000010_000020.mp4")
    _copy(clip, root / "zz_copy" / "air_drumming" / "bbbbbbbbbbb_000000_000010.mp4")
    _copy(clip, root / "train" / "air_drumming" / "bbbbbbbbbbb_000000_000010.mp4")
    # a folder of extracted frames below the root (it holds a video-named file on purpose)
    _copy(clip, root / "frames" / "cccccccccc_000000_000010.mp4")
    _put(root / "frames" / ".extraction.json", "{}")
    header = "label,youtube_id,time_start,time_end,split\n"
    _put(root / "kinetics-400_train.csv", header + "abseiling,aaaaaaaaaaa,10,20,train\n"
         "air drumming,bbbbbbbbbbb,0,10,train\nabseiling,cccccccccc,0,10,train\n")
    _put(root / "kinetics-400_val.csv", header + "abseiling,aaaaaaaaaaa,10,20,val\n")
    out = tmp_path / "lists"
    assert _prepare("kinetics400", "--root", root, "--out", out) == 0
    assert (out / "train.txt").read_text() == ("train/abseiling/aaaaaaaaaaa_000010_000020.mp4 0\n"
                                               "train/air_drumming/bbbbbbbbbbb_000000_000010.mp4 1\n")
    assert (out / "val.txt").read_text() == "val/abseiling/aaaaaaaaaaa_000010_000020.mp4 0\n"
    assert (out / "missing_train.txt").read_text() == "cccccccccc_000000_000010\n"
    text = capsys.readouterr().out
    assert ("warning: train: bbbbbbbbbbb_000000_000010: 2 files have this name (train/air_drumming/"
            "bbbbbbbbbbb_000000_000010.mp4, zz_copy/air_drumming/bbbbbbbbbbb_000000_000010.mp4); listed "
            "train/air_drumming/bbbbbbbbbbb_000000_000010.mp4") in text


def test_hmdb51_three_splits(tmp_path, clip):
    for cls, vids in (("brush_hair", ["a.avi", "b.avi"]), ("cartwheel", ["c.avi", "d.avi"])):
        for v in vids:
            _copy(clip, tmp_path / cls / v)
    splits = tmp_path / "testTrainMulti_7030_splits"
    for k in (1, 2, 3):
        _put(splits / f"brush_hair_test_split{k}.txt", f"a.avi {1 if k < 3 else 2} \nb.avi {2 if k < 3 else 1} \n")
        _put(splits / f"cartwheel_test_split{k}.txt", "c.avi 1 \nd.avi 0 \ne.avi 2 \n")
    out = tmp_path / "lists"
    assert _prepare("hmdb51", "--root", tmp_path, "--out", out) == 0
    assert (out / "train_split1.txt").read_text() == "brush_hair/a.avi 0\ncartwheel/c.avi 1\n"
    assert (out / "val_split1.txt").read_text() == "brush_hair/b.avi 0\n"
    assert (out / "missing_val_split1.txt").read_text() == "cartwheel/e.avi\n"
    assert (out / "train_split3.txt").read_text() == "brush_hair/b.avi 0\ncartwheel/c.avi 1\n"
    cfg = yaml.safe_load((out / "data.yaml").read_text())
    assert cfg["train_list"].endswith("train_split1.txt") and cfg["val_list"].endswith("val_split1.txt")


def test_ucf101_one_based_labels_and_test_lists(tmp_path, clip):
    root = tmp_path / "UCF-101"
    for rel in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                "HandstandPushups/v_HandStandPushups_g01_c01.avi"):
        _copy(clip, root / rel)
    ann = tmp_path / "ucfTrainTestlist"
    _put(ann / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n")
    for k in (1, 2, 3):
        _put(ann / f"trainlist0{k}.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n")
        _put(ann / f"testlist0{k}.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
                                        "HandstandPushups/v_HandStandPushups_g01_c01.avi\n")
    out = tmp_path / "lists"
    assert _prepare("ucf101", "--root", tmp_path, "--out", out) == 0
    assert (out / "train_split2.txt").read_text() == "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0\n"
    assert (out / "val_split2.txt").read_text() == ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 0\n"
                                                    "HandstandPushups/v_HandStandPushups_g01_c01.avi 1\n")
    assert yaml.safe_load((out / "data.yaml").read_text())["root"] == str(root)


@pytest.mark.parametrize("dataset,files,message", [
    ("sthv1", {"something-something-v1-labels.csv": "A\n", "something-something-v1-train.csv": "1;A\n2;B\n",
               "something-something-v1-validation.csv": "1;A\n"},
     "something-something-v1-train.csv:2: class 'B' is not in the class list"),
    ("sthv1", {"something-something-v1-labels.csv": "A\n", "something-something-v1-train.csv": "1 A\n",
               "something-something-v1-validation.csv": "1;A\n"},
     "something-something-v1-train.csv:1: expected 'ID;CLASS NAME', got '1 A'"),
    ("sthv1", {"something-something-v1-labels.csv": "A\n"},
     "something-something-v1-train.csv not found in"),
    ("kinetics400", {"train.csv": "label,id\nx,y\n", "validate.csv": "label,id\n"},
     "train.csv:1: header lacks ['youtube_id', 'time_start', 'time_end']"),
    ("ucf101", {"classInd.txt": "1 A\n3 B\n"}, "classInd.txt:2: expected '2 ClassName', got '3 B'"),
    ("hmdb51", {"x_test_split1.txt": "a.avi one\n"}, "x_test_split1.txt:1: expected '<video>.avi <0|1|2>'"),
])
def test_bad_annotation_files_give_file_line_and_problem(tmp_path, capsys, dataset, files, message):
    for name, content in files.items():
        _put(tmp_path / name, content)
    assert _prepare(dataset, "--root", tmp_path, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("motionsqueeze prepare: error: ") and message in err
