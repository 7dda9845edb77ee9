"""``prepare folder`` / ``prepare csv`` (your own videos), Jester, Diving48 and ``check-data --fingerprint``
on miniature copies of each layout made here."""

import json
import os
import shutil

import pytest
import yaml
from video_factory import encode_video, synthetic_frames, write_frame_folder

from motionsqueeze.cli import main
from motionsqueeze.data import DataConfig, build_dataset, load_class_names, read_list
from motionsqueeze.data.prepare_custom import prepare_folder
from motionsqueeze.data.transforms import direction_partners


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """One tiny clip per container: the trees below copy them."""
    d = tmp_path_factory.mktemp("clips")
    frames = synthetic_frames(10, 32, 32)
    return {"mp4": encode_video(d / "a.mp4", frames), "avi": encode_video(d / "a.avi", frames, codec="mpeg4"),
            "mkv": encode_video(d / "a.mkv", frames[:9])}


def _copy(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy(src, dst)


def _put(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def _awkward_tree(root, clips):
    """Spaces and non-ASCII in class names, nested folders, mixed containers, an empty class
    folder, an unreadable video, a stray file."""
    for k in range(3):
        _copy(clips["mp4"], root / "wave hello" / f"session {k % 2}" / f"take{k}.mp4")
        _copy(clips["avi"], root / "Swipe left" / f"s{k}.avi")
        _copy(clips["mkv"], root / "Swipe right" / "deep" / "er" / f"s{k}.mkv")
        _copy(clips["mp4"], root / "café crème" / f"c{k}.MP4")
    os.makedirs(root / "empty class")
    _put(root / "café crème" / "broken.mp4", "not a video")
    _put(root / "wave hello" / "notes.txt", "stray")


def test_folder_awkward_tree_to_lists_recipe_and_a_clip(tmp_path, clips, capsys):
    root, out = tmp_path / "my videos", tmp_path / "lists"
    _awkward_tree(root, clips)
    assert main(["prepare", "folder", "--root", str(root), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "class 'empty class' has no readable clip: left out" in printed
    assert "1 clips cannot be read" in printed and "1 files are neither videos" in printed
    names = load_class_names(out / "classes.txt")
    assert names == ["Swipe left", "Swipe right", "café crème", "wave hello"]
    train, val = read_list(out / "train.txt"), read_list(out / "val.txt")
    # round(0.2 x 3) = 1 clip of each class for val, the rest for training.
    assert len(train) == 8 and len(val) == 4
    assert sorted(r.label for r in val) == [0, 1, 2, 3]
    assert {r.path for r in train + val} >= {"Swipe right/deep/er/s0.mkv", "wave hello/session 1/take1.mp4"}
    assert all(os.path.isfile(root / r.path) for r in train + val)
    assert _lines(out / "rejected.txt")[0].startswith("café crème/broken.mp4\t")
    assert "cannot open the video" in _lines(out / "rejected.txt")[0]
    # "Swipe left" / "Swipe right" are mirror images by name: the flip spares them.
    data = yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))
    assert data["format"] == "video" and data["flip"] == "direction-aware" and data["flip_direction"] == "skip"
    cfg = DataConfig.from_dict(data)
    item = build_dataset(cfg.replace(num_segments=2, resize=None, crop_size=16), "train")[0]
    assert item["clip"].shape == (2, 3, 16, 16)
    # The recipe stub trains on exactly these lists.
    from motionsqueeze.engine import load_config

    recipe = load_config(str(out / "recipe.yaml"))
    assert recipe.data.train_list == data["train_list"] and recipe.data.class_names == data["class_names"]
    assert recipe.out == "runs/my videos" and recipe.model.arch == "msnet_r50"
    # check-data agrees that every listed clip is usable and in its class's folder.
    assert main(["check-data", str(out / "train.txt"), "--root", str(root), "--classes", str(out / "classes.txt")]) == 0


def test_seeded_split_is_repeatable_and_keeps_groups_together(tmp_path, clips):
    root = tmp_path / "v"
    for cls in ("a", "b"):
        for src in range(5):          # 5 source videos, 3 clips cut from each
            for c in range(3):
                _copy(clips["mp4"], root / cls / f"{cls}src{src}_c{c}.mp4")
    first = prepare_folder(str(root), val_fraction=0.4, seed=1, group=r"^(.*)_c\d+$", workers=1)
    again = prepare_folder(str(root), val_fraction=0.4, seed=1, group=r"^(.*)_c\d+$", workers=1)
    assert first.splits == again.splits
    source = {split: {r.path.rsplit("_c", 1)[0] for r in records} for split, records in first.splits.items()}
    assert not source["train"] & source["val"]            # no source video straddles the splits
    assert len(source["val"]) == 4 and len(first.splits["val"]) == 12   # round(0.4 x 5) = 2 sources per class
    other = prepare_folder(str(root), val_fraction=0.4, seed=2, group=r"^(.*)_c\d+$", workers=1)
    assert {r.path for r in other.splits["val"]} != {r.path for r in first.splits["val"]}
    # Without the pattern, clips of one source do end up on both sides (what --group prevents).
    loose = prepare_folder(str(root), val_fraction=0.4, seed=1, workers=1)
    val_sources = {r.path.rsplit("_c", 1)[0] for r in loose.splits["val"]}
    assert val_sources & {r.path.rsplit("_c", 1)[0] for r in loose.splits["train"]}
    assert prepare_folder(str(root), val_fraction=0.4, group="zzz", workers=1).ungrouped == 30


def test_split_subtrees_and_frame_folders(tmp_path, capsys):
    root, out = tmp_path / "frames", tmp_path / "lists"
    frames = synthetic_frames(6, 16, 16)
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        for cls in ("jump", "sit"):
            for k in range(n):
                write_frame_folder(root / split / cls / f"{cls}{k}", frames[: 4 + k], template="img_{:04d}.jpg")
    write_frame_folder(root / "extras" / "x", frames, template="img_{:04d}.jpg")
    assert main(["prepare", "folder", "--root", str(root), "--out", str(out)]) == 0
    assert "extras/ (a folder beside the split folders" in capsys.readouterr().out
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["format"] == "frames" and data["template"] == "img_{:04d}.jpg" and data["start_index"] == 1
    assert _lines(out / "train.txt") == ["train/jump/jump0 4 0", "train/jump/jump1 5 0",
                                         "train/sit/sit0 4 1", "train/sit/sit1 5 1"]
    assert _lines(out / "val.txt") == ["val/jump/jump0 4 0", "val/sit/sit0 4 1"]
    assert _lines(out / "test.txt") == ["test/jump/jump0 4 0", "test/sit/sit0 4 1"]
    item = build_dataset(DataConfig.from_dict(data).replace(num_segments=2, resize=None, crop_size=16), "val")[0]
    assert item["clip"].shape == (1, 2, 3, 16, 16) and item["label"] == 0


def test_folder_errors_name_the_problem(tmp_path, clips, capsys):
    mixed = tmp_path / "mixed"
    _copy(clips["mp4"], mixed / "a" / "x.mp4")
    write_frame_folder(mixed / "b" / "y", synthetic_frames(3, 16, 16))
    assert main(["prepare", "folder", "--root", str(mixed), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "mixes videos (e.g. 'a/x.mp4') and frame folders (e.g. 'b/y')" in err and "Traceback" not in err
    numbering = tmp_path / "numbering"
    write_frame_folder(numbering / "a" / "x", synthetic_frames(3, 16, 16))
    write_frame_folder(numbering / "b" / "y", synthetic_frames(3, 16, 16), start_index=0)
    assert main(["prepare", "folder", "--root", str(numbering), "--out", str(tmp_path / "o")]) == 2
    assert "frame folders are numbered differently" in capsys.readouterr().err
    os.makedirs(tmp_path / "nothing" / "a")
    assert main(["prepare", "folder", "--root", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "no videos or frame folders found in class folders" in capsys.readouterr().err
    _put(tmp_path / "broken" / "a" / "x.mp4", "not a video")
    assert main(["prepare", "folder", "--root", str(tmp_path / "broken"), "--out", str(tmp_path / "o")]) == 2
    assert "none of the 1 clips can be read, e.g. " in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")                   # nothing half-written
    assert main(["prepare", "csv", "--out", str(tmp_path / "o")]) == 2
    assert "prepare csv needs the table" in capsys.readouterr().err


def test_csv_with_header_split_column_and_missing_files(tmp_path, clips, capsys):
    media, out = tmp_path / "media", tmp_path / "lists"
    for name in ("one.mp4", "two.avi", "three.mp4", "four.mp4"):
        _copy(clips["mp4" if name.endswith("mp4") else "avi"], media / "sub dir" / name)
    table = tmp_path / "videos.csv"
    _put(table, "label;split;path\n"
                "Öffnen;train;sub dir/one.mp4\nSchließen;train;sub dir/two.avi\n"
                "Öffnen;val;sub dir/three.mp4\nSchließen;validation;sub dir/four.mp4\n"
                "Öffnen;train;sub dir/gone.mp4\n")
    assert main(["prepare", "csv", str(table), "--root", str(media), "--out", str(out)]) == 0
    assert "train: 2 items, 1 annotated but not found" in capsys.readouterr().out
    assert load_class_names(out / "classes.txt") == ["Schließen", "Öffnen"]
    assert _lines(out / "train.txt") == ["sub dir/one.mp4\t1", "sub dir/two.avi\t0"]
    assert _lines(out / "val.txt") == ["sub dir/three.mp4\t1", "sub dir/four.mp4\t0"]
    assert _lines(out / "missing_train.txt") == ["sub dir/gone.mp4"]
    # Without a header or split column: path,label and a seeded split; paths relative to the table.
    _put(media / "plain.csv", "sub dir/one.mp4,a\nsub dir/three.mp4,a\nsub dir/two.avi,b\nsub dir/four.mp4,b\n")
    assert main(["prepare", "csv", str(media / "plain.csv"), "--out", str(out), "--val-fraction", "0.5"]) == 0
    assert len(read_list(out / "train.txt")) == 2 and sorted(r.label for r in read_list(out / "val.txt")) == [0, 1]
    _put(media / "bad.csv", "path,label,split\nsub dir/one.mp4,a,holdout\n")
    assert main(["prepare", "csv", str(media / "bad.csv"), "--out", str(out)]) == 2
    assert "bad.csv:2: split 'holdout' is not train, val or test" in capsys.readouterr().err


JESTER = ["Swiping Left", "Swiping Right", "Swiping Down", "Swiping Up", "Pushing Hand Away", "Pulling Hand In",
          "Sliding Two Fingers Left", "Sliding Two Fingers Right", "Sliding Two Fingers Down",
          "Sliding Two Fingers Up", "Pushing Two Fingers Away", "Pulling Two Fingers In", "Rolling Hand Forward",
          "Rolling Hand Backward", "Turning Hand Clockwise", "Turning Hand Counterclockwise",
          "Zooming In With Full Hand", "Zooming Out With Full Hand", "Zooming In With Two Fingers",
          "Zooming Out With Two Fingers", "Thumb Up", "Thumb Down", "Shaking Hand", "Stop Sign",
          "Drumming Fingers", "No gesture", "Doing other things"]


def test_jester_mirror_classes_are_the_three_horizontal_pairs():
    names = sorted(JESTER)
    pairs = {(names[a], names[b]) for a, b in direction_partners(names).items() if a < b}
    assert pairs == {("Swiping Left", "Swiping Right"), ("Sliding Two Fingers Left", "Sliding Two Fingers Right"),
                     ("Turning Hand Clockwise", "Turning Hand Counterclockwise")}
    assert direction_partners(["turn anticlockwise", "turn clockwise"]) == {0: 1, 1: 0}


def test_jester(tmp_path):
    frames = synthetic_frames(5, 16, 20)
    for vid in ("11", "12", "13"):
        write_frame_folder(tmp_path / "20bn-jester-v1" / vid, frames)
    _put(tmp_path / "annotations" / "jester-v1-labels.csv", "\n".join(JESTER) + "\n")
    _put(tmp_path / "annotations" / "jester-v1-train.csv", "11;Swiping Left\n12;Thumb Up\n99;Thumb Up\n")
    _put(tmp_path / "annotations" / "jester-v1-validation.csv", "13;Turning Hand Clockwise\n")
    out = tmp_path / "lists"
    assert main(["prepare", "jester", "--root", str(tmp_path), "--out", str(out)]) == 0
    names = load_class_names(out / "classes.txt")
    assert names == sorted(JESTER)
    left, right = names.index("Swiping Left"), names.index("Swiping Right")
    assert _lines(out / "train.txt") == [f"11 5 {left}", f"12 5 {names.index('Thumb Up')}"]
    assert _lines(out / "missing_train.txt") == ["99"]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["flip"] == "direction-aware" and data["flip_direction"] == "swap"
    # A flipped "Swiping Left" clip is a "Swiping Right" clip.
    ds = build_dataset(DataConfig.from_dict(data).replace(num_segments=2, resize=None, crop_size=16), "train")
    assert {ds[0]["label"] for _ in range(12)} == {left, right}
    from motionsqueeze.engine import load_config

    cfg = load_config("jester_msnet_r50_8f")
    assert cfg.data.flip_direction == "swap" and cfg.data.format == "frames"


def test_diving48(tmp_path, clips, capsys):
    vocab = [["Back", "15som", "05Twis", "FREE"], ["Forward", "25som", "NoTwis", "PIKE"], ["Inward", "15som", "NoTwis", "TUCK"]]
    _put(tmp_path / "Diving48_vocab.json", json.dumps(vocab))
    _put(tmp_path / "Diving48_V2_train.json", json.dumps([
        {"vid_name": "_8Vy3dlHg2w_00000", "label": 2, "start_frame": 0, "end_frame": 9},
        {"vid_name": "_8Vy3dlHg2w_00001", "label": 0, "start_frame": 0, "end_frame": 9},
        {"vid_name": "gone_00000", "label": 1, "start_frame": 0, "end_frame": 9}]))
    _put(tmp_path / "Diving48_V2_test.json", json.dumps([
        {"vid_name": "zzz_00003", "label": 1, "start_frame": 0, "end_frame": 9}]))
    for vid in ("_8Vy3dlHg2w_00000", "_8Vy3dlHg2w_00001", "zzz_00003"):
        _copy(clips["mp4"], tmp_path / "rgb" / f"{vid}.mp4")
    out = tmp_path / "lists"
    assert main(["prepare", "diving48", "--root", str(tmp_path), "--out", str(out)]) == 0
    assert load_class_names(out / "classes.txt") == ["Back 15som 05Twis FREE", "Forward 25som NoTwis PIKE",
                                                     "Inward 15som NoTwis TUCK"]
    assert _lines(out / "train.txt") == ["_8Vy3dlHg2w_00000.mp4 2", "_8Vy3dlHg2w_00001.mp4 0"]
    assert _lines(out / "val.txt") == ["zzz_00003.mp4 1"]          # the official test split
    assert _lines(out / "missing_train.txt") == ["gone_00000.mp4"]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["root"].endswith("rgb") and data["format"] == "video"
    _put(tmp_path / "Diving48_V2_test.json", json.dumps([{"vid_name": "zzz_00003", "label": 48}]))
    assert main(["prepare", "diving48", "--root", str(tmp_path), "--out", str(out)]) == 2
    assert "Diving48_V2_test.json item 0: label 48 is not a class index" in capsys.readouterr().err


def test_fingerprint_agrees_across_storage_and_shows_differences(tmp_path, clips, capsys):
    root = tmp_path / "v"
    for cls in ("a", "b"):
        for k in range(2):
            _copy(clips["mp4"], root / cls / f"{cls}{k}.mp4")
    _copy(clips["mkv"], root / "b" / "b2.mp4")                   # 9 frames instead of 10
    videos, frames = tmp_path / "lv", tmp_path / "lf"
    assert main(["prepare", "folder", "--root", str(root), "--out", str(videos), "--val-fraction", "0"]) == 0
    assert main(["prepare", "folder", "--root", str(root), "--out", str(frames), "--val-fraction", "0",
                 "--extract-frames", str(tmp_path / "frames"), "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["check-data", str(videos / "data.yaml"), "--fingerprint", "--json"]) == 0
    fv = json.loads(capsys.readouterr().out)
    assert main(["check-data", str(frames / "data.yaml"), "--fingerprint", "--json"]) == 0
    ff = json.loads(capsys.readouterr().out)
    # Stored as videos or as extracted frame folders, the same items hash alike.
    assert fv["item_hash"] == ff["item_hash"] and fv["label_hash"] == ff["label_hash"]
    assert fv["items"] == {"train": 5} and fv["per_class"] == {"train": {"0": 2, "1": 3}}
    assert sorted(fv["frames"]["train"]) == sorted(ff["frames"]["train"]) == [9, 10, 10, 10, 10]
    # One relabelled item changes the label hash but not the item hash.
    lines = _lines(videos / "train.txt")
    lines[0] = lines[0][:-1] + "1"
    _put(tmp_path / "relabelled.txt", "\n".join(lines) + "\n")
    assert main(["check-data", str(tmp_path / "relabelled.txt"), "--root", str(root), "--fingerprint"]) == 0
    text = capsys.readouterr().out
    row = next(t for t in text.splitlines() if t.startswith("relabelled"))
    assert fv["item_hash"]["train"] in row and fv["label_hash"]["train"] not in row
    assert "9/10/10" in row and "8-15 " in text and "#" in text


def test_fingerprint_of_frame_lists_reads_no_files_and_ignores_unicode_form(tmp_path):
    import unicodedata

    from motionsqueeze.data.check import fingerprint

    nfc = "café crème/clip 1"
    _put(tmp_path / "a.txt", f"{nfc}\t3\t0\nx/y\t40\t1\n")
    _put(tmp_path / "b.txt", f"{unicodedata.normalize('NFD', nfc)}\t3\t0\nelsewhere/y\t40\t1\n")
    a, b = fingerprint(str(tmp_path / "a.txt")), fingerprint(str(tmp_path / "b.txt"))
    assert a.item_hash["a"] == b.item_hash["b"] and a.label_hash["a"] == b.label_hash["b"]
    assert a.frames == {"a": [3, 40]} and a.unreadable == {"a": 0}
    _put(tmp_path / "c.txt", f"{nfc}\t3\t0\nx/z\t40\t1\n")
    assert fingerprint(str(tmp_path / "c.txt")).item_hash["c"] != a.item_hash["a"]
    assert "2-3 " in a.format_text() and "32-63 " in a.format_text()
