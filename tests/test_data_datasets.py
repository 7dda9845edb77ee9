import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from video_factory import encode_video, synthetic_frames, write_frame_folder

from motionsqueeze.data import DataConfig, DataError, build_dataset, collate_clips, open_clip_source, summarize_skipped
from motionsqueeze.data.transforms import center_crop_box

CLASSES = ["Holding something", "Pushing something from left to right", "Pushing something from right to left"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Frame folders and videos, good and bad, with their lists."""
    root = tmp_path_factory.mktemp("data")
    frames = synthetic_frames(20, 32, 48)
    fr = root / "frames"
    write_frame_folder(fr / "clip a", frames)
    write_frame_folder(fr / "b", frames[:5])
    write_frame_folder(fr / "short list", frames[:8])  # listed with 10 frames below
    write_frame_folder(fr / "corrupt", frames[:6])
    (fr / "corrupt" / "00003.jpg").write_bytes(b"garbage")
    vid = root / "videos"
    vid.mkdir()
    encode_video(vid / "good.mp4", frames)
    encode_video(vid / "two.webm", frames[:12], "libvpx-vp9")
    (vid / "zero.mp4").write_bytes(b"")
    lists = {
        "frames": "clip a 20 1\nb 5 0\nmissing 9 2\nshort list 10 2\ncorrupt 6 0\n",
        "frames_good": "clip a 20 1\nb 5 0\n",
        "video": "good.mp4 1\ntwo.webm 2\nzero.mp4 0\n",
        "video_good": "good.mp4 1\ntwo.webm 2\n",
        "unlabelled": "clip a 20\nb 5\n",
    }
    for name, text in lists.items():
        (root / f"{name}.txt").write_text(text)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def _cfg(root, fmt="frames", lst="frames_good", **kw):
    base = dict(root=str(root / ("frames" if fmt == "frames" else "videos")), format=fmt,
                train_list=str(root / f"{lst}.txt"), val_list=str(root / f"{lst}.txt"),
                class_names=str(root / "classes.txt"), num_segments=4, resize=None, crop_size=32)
    base.update(kw)
    return DataConfig(**base)


@pytest.mark.parametrize("fmt", ["frames", "video"])
def test_item_shapes_and_fields(data, fmt):
    cfg = _cfg(data, fmt, f"{'frames' if fmt == 'frames' else 'video'}_good", test_num_clips=2, test_num_crops=3)
    train, val, test = (build_dataset(cfg, s) for s in ("train", "val", "test"))
    assert len(train) == 2
    item = train[1]
    assert item["clip"].shape == (4, 3, 32, 32) and item["clip"].dtype == torch.uint8
    assert item["index"] == 1 and item["skipped"] == [] and item["label"] in (0, 2)
    assert val[0]["clip"].shape == (1, 4, 3, 32, 32)
    assert test[0]["clip"].shape == (6, 4, 3, 32, 32) and test[0]["label"] == 1


def test_test_views_are_clip_major_and_match_the_frames(data):
    cfg = _cfg(data, "video", "video_good", test_num_clips=2, test_num_crops=3)
    clip = build_dataset(cfg, "test")[0]["clip"]
    with open_clip_source(data / "videos" / "good.mp4") as r:
        full = r.read(range(20)).permute(0, 3, 1, 2)
    # Two evenly spaced clips of a 20-frame video in 4 segments: offsets 1/4 and 3/4.
    for k, idx in enumerate([[1, 6, 11, 16], [3, 8, 13, 18]]):
        for c, left in enumerate([0, 8, 16]):  # three 32x32 crops along the 48-pixel width
            assert torch.equal(clip[3 * k + c], full[idx][..., left:left + 32])
    val = build_dataset(cfg, "val")[0]["clip"]
    top, left, h, w = center_crop_box(32, 48, 32)
    assert torch.equal(val[0], full[[2, 7, 12, 17]][..., top:top + h, left:left + w])


def test_on_error_raise_names_the_list_line_the_file_and_the_problem(data):
    ds = build_dataset(_cfg(data, lst="frames"), "val")
    with pytest.raises(DataError, match=r"frames.txt:3: .*missing: frame folder not found") as info:
        ds[2]
    assert info.value.kind == "missing"
    with pytest.raises(DataError, match=r"frames.txt:4: .*00009.jpg: missing frame 9 of 10"):
        ds[3]
    with pytest.raises(DataError, match=r"frames.txt:5: .*corrupt.00003.jpg: cannot decode the image"):
        ds[4]
    vds = build_dataset(_cfg(data, "video", "video"), "val")
    with pytest.raises(DataError, match=r"video.txt:3: .*zero.mp4: empty file \(0 bytes\)"):
        vds[2]


def test_on_error_skip_substitutes_and_reports(data):
    ds = build_dataset(_cfg(data, lst="frames", on_error="skip"), "val")
    item = ds[2]  # missing -> short list (bad) -> corrupt (bad) -> clip a
    assert item["index"] == 0 and item["label"] == 1
    assert [m.split(": ")[0] for m in item["skipped"]] == [f"{data}/frames.txt:{n}" for n in (3, 4, 5)]
    assert "frame folder not found" in item["skipped"][0]
    train = build_dataset(_cfg(data, lst="frames", on_error="skip"), "train")
    torch.manual_seed(0)
    for _ in range(5):
        item = train[2]  # the missing folder, replaced by a random item
        assert item["index"] != 2 and item["skipped"][0].startswith(f"{data}/frames.txt:3: ")


def test_skip_gives_up_when_everything_is_broken(tmp_path):
    (tmp_path / "l.txt").write_text("a 3 0\nb 3 0\nc 3 0\n")
    ds = build_dataset(DataConfig(root=str(tmp_path), train_list=str(tmp_path / "l.txt"), num_classes=1,
                                  on_error="skip", max_retries=4), "train")
    with pytest.raises(DataError, match=r"5 bad items in a row while loading item 1 .*run `motionsqueeze check-data`"):
        ds[1]


def test_dataloader_workers_report_skips_and_errors(data):
    cfg = _cfg(data, lst="frames", on_error="skip")
    loader = DataLoader(build_dataset(cfg, "val"), batch_size=2, num_workers=2, collate_fn=collate_clips)
    batches = list(loader)
    assert sum(b["clip"].shape[0] for b in batches) == 5
    assert batches[0]["clip"].shape == (2, 1, 4, 3, 32, 32) and batches[0]["label"].dtype == torch.long
    skipped = [m for b in batches for m in b["skipped"]]
    # Items 3, 4, 5 of the list are bad; each failed attempt is one message (3 + 2 + 1).
    assert len(skipped) == 6 and len({m.split(": ")[0] for m in skipped}) == 3
    report = summarize_skipped(skipped, limit=2).splitlines()
    assert report[0] == "6 bad items skipped (3 distinct; run `motionsqueeze check-data` on the list):"
    assert report[1].startswith(f"  {data}/frames.txt:") and report[3] == "  ... and 1 more"
    assert summarize_skipped([]) == ""
    failing = DataLoader(build_dataset(_cfg(data, lst="frames", num_segments=2), "val"), batch_size=5,
                         num_workers=1, collate_fn=collate_clips)
    batches = iter(failing)
    try:
        with pytest.raises(DataError, match=r"frames.txt:3: .*frame folder not found"):
            next(batches)
    finally:
        # The traceback keeps the iterator alive; stop its worker now, not at interpreter exit.
        batches._shutdown_workers()


def test_collate_clips():
    items = [{"clip": torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "label": k, "index": 10 + k,
              "skipped": [f"bad {k}"] * k} for k in range(3)]
    batch = collate_clips(items)
    assert batch["clip"].shape == (3, 4, 3, 8, 8)
    assert batch["label"].tolist() == [0, 1, 2] and batch["index"].tolist() == [10, 11, 12]
    assert batch["skipped"] == ["bad 1", "bad 2", "bad 2"]
    with pytest.raises(DataError, match="clips of one batch differ in shape"):
        collate_clips([items[0], {**items[1], "clip": torch.zeros(2, 3, 8, 8)}])


def test_direction_aware_flip_swaps_labels_in_training(data):
    cfg = _cfg(data, "video", "video_good", flip="direction-aware", flip_direction="swap", scales=[1.0])
    ds = build_dataset(cfg, "train")
    torch.manual_seed(0)
    labels = {ds[0]["label"] for _ in range(20)}
    assert labels == {1, 2}  # "left to right" becomes "right to left" when flipped
    cfg = cfg.replace(flip_direction="skip")
    assert {build_dataset(cfg, "train")[0]["label"] for _ in range(10)} == {1}
    # The authors' explicit list for Something-Something V1 is accepted as well.
    assert build_dataset(cfg.replace(direction_classes=[86, 87]), "train").train_transform.flip.partners == \
        {86: None, 87: None}


def test_config_errors_name_the_key(data):
    with pytest.raises(DataError, match="data.num_segment: unknown key; did you mean 'num_segments'"):
        DataConfig.from_dict({"num_segment": 8})
    with pytest.raises(DataError, match="data.num_segments: must be an integer, got '8'"):
        DataConfig.from_dict({"num_segments": "8"})
    with pytest.raises(DataError, match=r"data.flip: must be one of none, plain, direction-aware; got 'yes'"):
        DataConfig(flip="yes")
    with pytest.raises(DataError, match=r"data.resize: must be \[H, W\]"):
        DataConfig(resize=[1, 2, 3])
    cfg = DataConfig.from_dict({"root": "x", "resize": 256, "scales": [1, 0.5]})
    assert cfg.resize == 256 and cfg.scales == [1.0, 0.5]
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(DataError, match="val_list is not set"):
        build_dataset(DataConfig(), "val")
    with pytest.raises(DataError, match="unlabelled.txt:1: a training list needs a label"):
        build_dataset(_cfg(data, lst="unlabelled"), "train")
    assert build_dataset(_cfg(data, lst="unlabelled"), "val")[0]["label"] == -1
    with pytest.raises(DataError, match="direction-aware' needs class_names"):
        build_dataset(_cfg(data, class_names=None, flip="direction-aware"), "train")
    with pytest.raises(DataError, match="num_classes is 5 but .*classes.txt names 3 classes"):
        build_dataset(_cfg(data, num_classes=5), "train")
    (data / "oob.txt").write_text("clip a 20 3\n")
    with pytest.raises(DataError, match="oob.txt:1: label 3 is out of range for 3 classes"):
        build_dataset(_cfg(data, lst="oob"), "val")


def test_short_videos_still_give_full_clips(data):
    cfg = _cfg(data, lst="frames_good", num_segments=8)
    item = build_dataset(cfg, "val")[1]  # folder "b" has 5 frames
    assert item["clip"].shape == (1, 8, 3, 32, 32)
    levels = item["clip"][0, :, 1, 16, 31].tolist()
    assert levels == sorted(levels) and len(set(levels)) == 5
    assert np.all(np.diff(levels) >= 0)
    assert os.path.isdir(data / "frames" / "b")


def test_an_error_in_a_loader_worker_arrives_as_its_own_one_line_message(tmp_path):
    from torch.utils.data import DataLoader

    from motionsqueeze.data import DataError, VideoRecord, collate_clips
    from motionsqueeze.data.datasets import VideoClipDataset

    dataset = VideoClipDataset([VideoRecord("gone", 0, 8, 3)], root=str(tmp_path), split="val", source="val.txt")
    with pytest.raises(DataError) as info:
        next(iter(DataLoader(dataset, batch_size=1, num_workers=1, collate_fn=collate_clips)))
    assert str(info.value) == f"val.txt:3: {tmp_path / 'gone'}: frame folder not found"
