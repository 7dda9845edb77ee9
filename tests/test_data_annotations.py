import json

import pytest

from motionsqueeze.data import DataError, VideoRecord, load_class_names, read_list, write_class_names, write_list
from motionsqueeze.data.annotations import guess_list_format, scan_list


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_frame_list_with_spaces_tabs_comments_and_blank_lines(tmp_path):
    path = _write(tmp_path, "train.txt", "# header comment\n100218 47 86\n\nmy  clip 12 3\r\n  \nclip 7\t30\t5\n")
    assert read_list(path, "frames") == [
        VideoRecord("100218", 86, 47, 2),
        VideoRecord("my  clip", 3, 12, 4),  # fields are taken from the right; inner spaces kept
        VideoRecord("clip 7", 5, 30, 6),
    ]


def test_tab_separated_line_keeps_the_path_whole(tmp_path):
    path = _write(tmp_path, "l.txt", "clip 7\t30\t5\nrun 2\t12\t0\n")
    assert read_list(path, "frames") == [VideoRecord("clip 7", 5, 30, 1), VideoRecord("run 2", 0, 12, 2)]


def test_video_list_labelled_and_unlabelled(tmp_path):
    labelled = _write(tmp_path, "v.txt", "abseiling/a b.mp4 0\nair drumming/x.webm 3\n")
    assert read_list(labelled) == [VideoRecord("abseiling/a b.mp4", 0, None, 1),
                                   VideoRecord("air drumming/x.webm", 3, None, 2)]
    unlabelled = _write(tmp_path, "u.txt", "a b.mp4\nc.avi\n")
    assert [r.label for r in read_list(unlabelled, "video")] == [-1, -1]
    frames_unlabelled = _write(tmp_path, "fu.txt", "100218 47\n9 12\n")
    assert read_list(frames_unlabelled, "frames") == [VideoRecord("100218", -1, 47, 1), VideoRecord("9", -1, 12, 2)]


def test_format_is_guessed_from_the_first_path():
    assert guess_list_format("a/b.mp4 3") == "video"
    assert guess_list_format("x y.WEBM") == "video"
    assert guess_list_format("100218 47 86") == "frames"


@pytest.mark.parametrize("text,fmt,message", [
    ("100218 47 x\n", "frames", "train.txt:1: malformed line '100218 47 x'"),
    ("onlypath\n", "frames", "train.txt:1: malformed line 'onlypath': a frames list line is 'PATH NUM_FRAMES [LABEL]'"),
    ("a 3 1\nb 4\n", "frames", "train.txt:2: line 1 has a label but this line does not"),
    ("a 3 -2\n", "frames", "train.txt:1: label must be a class index >= 0"),
    ("a.mp4 3\n", "frames", "train.txt:1: 'a.mp4' is a video file but this is read as a frame list"),
    ("a.mp4 1 2 3\n", "video", "train.txt:1: malformed line 'a.mp4 1 2 3': too many fields"),
    # a frame list read by a video recipe: refused, never read as the path "abseiling/x 110"
    ("abseiling/x 110 0\n", "video", "train.txt:1: malformed line 'abseiling/x 110 0': more number fields "
     "than a video list line has ('PATH [LABEL]'); is this a frame list"),
])
def test_malformed_lines_name_file_line_and_layout(tmp_path, text, fmt, message):
    path = _write(tmp_path, "train.txt", text)
    with pytest.raises(DataError) as info:
        read_list(path, fmt)
    assert message in str(info.value)
    assert info.value.kind == "malformed"


def test_unknown_label_is_reported_with_its_line(tmp_path):
    path = _write(tmp_path, "val.txt", "a 3 1\nb 4 174\n")
    with pytest.raises(DataError, match=r"val.txt:2: label 174 is out of range for 174 classes") as info:
        read_list(path, "frames", num_classes=174)
    assert info.value.kind == "mislabelled"


def test_scan_list_collects_every_bad_line(tmp_path):
    path = _write(tmp_path, "l.txt", "a 3 1\nbad\nc 4 9\nd 5 2\n")
    fmt, good, problems = scan_list(path, "frames", num_classes=5)
    assert fmt == "frames"
    assert [r.path for r in good] == ["a", "d"]
    assert [(line, e.kind) for line, e in problems] == [(2, "malformed"), (3, "mislabelled")]


def test_missing_empty_and_binary_list_files(tmp_path):
    with pytest.raises(DataError, match="nope.txt: list file not found"):
        read_list(str(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match="the list has no entries"):
        read_list(_write(tmp_path, "empty.txt", "# nothing\n\n"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="bin.txt: not a UTF-8 text file"):
        read_list(str(tmp_path / "bin.txt"))


def test_write_then_read_round_trip_with_spaces(tmp_path):
    records = [VideoRecord("plain", 2, 10), VideoRecord("with space 12", 0, 30), VideoRecord("z", 1, 5)]
    path = tmp_path / "out.txt"
    assert write_list(path, records, "frames") == 3
    text = path.read_text()
    assert "plain 10 2\n" in text and "with space 12\t30\t0\n" in text
    back = read_list(path, "frames")
    assert [(r.path, r.num_frames, r.label) for r in back] == [(r.path, r.num_frames, r.label) for r in records]
    unlabelled = [VideoRecord("a.mp4"), VideoRecord("b c.mp4")]
    write_list(tmp_path / "u.txt", unlabelled, "video")
    assert (tmp_path / "u.txt").read_text() == "a.mp4\nb c.mp4\n"
    with pytest.raises(DataError, match="has a tab or a line break"):
        write_list(tmp_path / "bad.txt", [VideoRecord("a\tb", 0)], "video")


def test_class_names_text_and_json(tmp_path):
    names = ["Pushing something from left to right", "Pushing something from right to left", "Holding"]
    write_class_names(tmp_path / "c.txt", names)
    assert load_class_names(tmp_path / "c.txt") == names
    (tmp_path / "c.json").write_text(json.dumps({"b": "1", "a": "0", "c": "2"}))
    assert load_class_names(tmp_path / "c.json") == ["a", "b", "c"]
    (tmp_path / "l.json").write_text(json.dumps(["x", "y"]))
    assert load_class_names(tmp_path / "l.json") == ["x", "y"]


@pytest.mark.parametrize("name,content,message", [
    ("gap.txt", "a\n\nb\n", "gap.txt:2: empty line"),
    ("dup.txt", "a\nb\na\n", "class name 'a' appears twice (classes 0 and 2)"),
    ("idx.json", json.dumps({"a": "0", "b": "2"}), "class indices must be exactly 0..1"),
    ("broken.json", "{\"a\": ", "broken.json:1: not valid JSON"),
])
def test_bad_class_name_files(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_class_names(tmp_path / name)


def test_a_failed_list_write_leaves_no_temporary_file(tmp_path):
    # The destination is a folder, so the final rename fails; nothing may be left beside it.
    (tmp_path / "train.txt").mkdir()
    with pytest.raises(OSError, match="train.txt"):
        write_list(tmp_path / "train.txt", [VideoRecord("a", 0, 3, 1)], "frames")
    with pytest.raises(OSError, match="train.txt"):
        write_class_names(tmp_path / "train.txt", ["a", "b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.txt"]
    assert list((tmp_path / "train.txt").iterdir()) == []
