import os
import shutil

import pytest
from video_factory import encode_video, synthetic_frames, write_frame_folder

from motionsqueeze.cli import main
from motionsqueeze.data import read_list
from motionsqueeze.data.check import check_list


@pytest.fixture(scope="module")
def frames_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    frames = synthetic_frames(8, 16, 16)
    for name in ("good", "gap", "corrupt", "eight", "two"):
        write_frame_folder(root / name, frames[:2] if name == "two" else frames)
    os.remove(root / "gap" / "00004.jpg")
    (root / "corrupt" / "00001.jpg").write_bytes(b"\x00" * 10)
    lines = ["good 8 0", "missing 8 1", "gap 8 1", "corrupt 8 2", "eight 12 0", "eight 3 0", "two 2 1",
             "good 8 7", "x y z"]
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("a\nb\nc\n")
    return root


def test_check_data_reports_every_bad_frame_entry_with_its_line(frames_data, capsys):
    root = frames_data
    code = main(["check-data", str(root / "list.txt"), "--root", str(root), "--classes",
                 str(root / "classes.txt"), "--min-frames", "4"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    lst = str(root / "list.txt")
    expected = [
        (2, "missing", "missing: frame folder not found"),
        (3, "missing", "gap: frame '00004.jpg' is missing (1 gaps below the last frame)"),
        (4, "unreadable", "corrupt/00001.jpg: cannot decode the image"),
        (5, "truncated", "eight: the list says 12 frames but the folder has 8"),
        (6, "wrong-count", "eight: the list says 3 frames but the folder has 8"),
        (7, "too-short", "two: 2 frames, fewer than 4"),
        (8, "mislabelled", "label 7 is out of range for 3 classes"),
        (9, "malformed", "malformed line 'x y z'"),
    ]
    for line, kind, text in expected:
        assert any(o.startswith(f"{lst}:{line}: {kind}: ") and text in o for o in out), (line, out)
    assert not any(o.startswith(f"{lst}:1:") for o in out)
    assert out[-1] == f"{lst}: 9 entries checked, 8 with problems (malformed 1, mislabelled 1, missing 2, " \
                      "too-short 2, truncated 1, unreadable 1, wrong-count 1)"


def test_check_data_writes_the_good_entries_and_a_clean_list_passes(frames_data, capsys, tmp_path):
    root = frames_data
    good = tmp_path / "good.txt"
    code = main(["check-data", str(root / "list.txt"), "--root", str(root), "--num-classes", "3",
                 "--quiet", "--write-good", str(good), "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 1 and "frames.txt:" not in out and "wrote 2 good entries" in out
    assert [(r.path, r.num_frames, r.label) for r in read_list(good)] == [("good", 8, 0), ("two", 2, 1)]
    assert main(["check-data", str(good), "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip().endswith("2 entries checked, no problems")


def test_check_data_on_videos(tmp_path, capsys):
    frames = synthetic_frames(60, 32, 32)
    os.makedirs(tmp_path / "abseiling")
    os.makedirs(tmp_path / "air_drumming")
    encode_video(tmp_path / "abseiling" / "good.mp4", frames)
    shutil.copy(tmp_path / "abseiling" / "good.mp4", tmp_path / "air_drumming" / "moved.mp4")
    encode_video(tmp_path / "short.webm", frames[:3], "libvpx-vp9")
    (tmp_path / "zero.mp4").write_bytes(b"")
    data = open(tmp_path / "abseiling" / "good.mp4", "rb").read()
    (tmp_path / "header.mp4").write_bytes(b"\x00" * 64 + data[64:])
    fs = encode_video(tmp_path / "fs.mp4", frames, faststart=True)
    (tmp_path / "cut.mp4").write_bytes(open(fs, "rb").read()[:len(data) // 2])
    (tmp_path / "v.txt").write_text("abseiling/good.mp4 0\nzero.mp4 0\nheader.mp4 1\ncut.mp4 1\nabsent.mp4 0\n"
                                    "air_drumming/moved.mp4 0\nshort.webm 1\n")
    (tmp_path / "classes.txt").write_text("abseiling\nair drumming\n")
    code = main(["check-data", str(tmp_path / "v.txt"), "--root", str(tmp_path), "--classes",
                 str(tmp_path / "classes.txt"), "--min-frames", "8", "--full"])
    out = capsys.readouterr().out
    assert code == 1
    lst = str(tmp_path / "v.txt")
    for line, kind, text in [
        (2, "unreadable", "zero.mp4: empty file (0 bytes)"),
        (3, "unreadable", "header.mp4: cannot open the video"),
        (4, "truncated", "cut.mp4: truncated: the container claims 60 frames but holds"),
        (5, "missing", "absent.mp4: video file not found"),
        (6, "mislabelled", "label 0 ('abseiling') but the file is in the folder of class 1 ('air drumming')"),
        (7, "too-short", "short.webm: 3 frames, fewer than 8"),
    ]:
        assert f"{lst}:{line}: {kind}: " in out and text in out, (line, out)
    assert f"{lst}:1:" not in out


def test_check_list_api_counts(frames_data):
    report = check_list(str(frames_data / "list.txt"), str(frames_data), num_classes=3)
    assert report.format == "frames" and report.checked == 9
    assert [p.line for p in report.problems] == [2, 3, 4, 5, 6, 8, 9]
    assert [r.line for r in report.good] == [1, 7]


def test_zero_frame_entry_is_reported_not_crashed_on(frames_data, tmp_path):
    (tmp_path / "z.txt").write_text("good 0 0\n")
    report = check_list(str(tmp_path / "z.txt"), str(frames_data))
    assert [(p.kind, p.message.split(": ", 1)[1]) for p in report.problems] == [
        ("wrong-count", "the list says 0 frames but the folder has 8"), ("too-short", "0 frames, fewer than 1")]


def test_data_error_keeps_its_kind_across_processes():
    import pickle

    from motionsqueeze.data import DataError

    err = pickle.loads(pickle.dumps(DataError("a.mp4: truncated", "truncated")))
    assert str(err) == "a.mp4: truncated" and err.kind == "truncated" and isinstance(err, ValueError)


def test_a_zero_byte_frame_in_the_middle_fails_the_default_check(tmp_path, capsys):
    write_frame_folder(tmp_path / "clip", synthetic_frames(8, 16, 16))
    (tmp_path / "clip" / "00004.jpg").write_bytes(b"")  # first and last frames are fine
    (tmp_path / "list.txt").write_text("clip 8 0\n")
    assert main(["check-data", str(tmp_path / "list.txt"), "--root", str(tmp_path)]) == 1
    assert (f"{tmp_path / 'list.txt'}:1: unreadable: {tmp_path / 'clip'}: 1 empty frame file(s) (0 bytes), "
            "e.g. '00004.jpg'") in capsys.readouterr().out


def test_progress_lines_when_stderr_is_not_a_terminal(frames_data, capsys, monkeypatch):
    import motionsqueeze.data.progress as progress

    monkeypatch.setattr(progress, "INTERVAL", 0.0)  # a line per item instead of every 30 s
    main(["check-data", str(frames_data / "list.txt"), "--root", str(frames_data)])
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("checking: 1/8 items (12%), ") and "left" in lines[0]
    assert lines[-1].startswith("checking: 8/8 items (100%), ") and ", took " in lines[-1]
