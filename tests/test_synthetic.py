import math

import pytest
import torch

from motionsqueeze.data.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticDataConfig,
    SyntheticMotion,
    SyntheticMotionConfig,
    build_synthetic_dataset,
    render_clip,
)


def _moments(alpha):
    """Per frame: area, centroid (x, y) and principal-axis angle of the coverage mask."""
    t, h, w = alpha.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    area = alpha.sum((1, 2))
    cx = (alpha * xs).sum((1, 2)) / area
    cy = (alpha * ys).sum((1, 2)) / area
    mxx = (alpha * (xs - cx[:, None, None]) ** 2).sum((1, 2))
    myy = (alpha * (ys - cy[:, None, None]) ** 2).sum((1, 2))
    mxy = (alpha * (xs - cx[:, None, None]) * (ys - cy[:, None, None])).sum((1, 2))
    angle = 0.5 * torch.atan2(2 * mxy, mxx - myy)
    return area, cx, cy, angle


def _wrapped(d):
    return (d + math.pi / 2) % math.pi - math.pi / 2  # principal axes are defined modulo pi


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_class_moves_the_object_as_its_name_says(seed):
    cfg = SyntheticMotionConfig(frames=6, size=64, object_size=(0.5, 0.6))
    for label, name in enumerate(SYNTHETIC_CLASSES):
        clip, alpha = render_clip(label, torch.Generator().manual_seed(seed * 10 + label), cfg, return_alpha=True)
        assert clip.shape == (6, 3, 64, 64) and clip.dtype == torch.uint8
        area, cx, cy, angle = _moments(alpha)
        dx, dy = (cx[1:] - cx[:-1]).mean().item(), (cy[1:] - cy[:-1]).mean().item()
        growth = (area[1:] / area[:-1]).mean().item()
        turn = _wrapped(angle[1:] - angle[:-1]).mean().item()
        if name == "moving right":
            assert dx > 2 and abs(dy) < 1, (name, dx, dy)
        elif name == "moving left":
            assert dx < -2 and abs(dy) < 1, (name, dx, dy)
        elif name == "moving down":
            assert dy > 2 and abs(dx) < 1, (name, dx, dy)
        elif name == "moving up":
            assert dy < -2 and abs(dx) < 1, (name, dx, dy)
        elif name == "rotating clockwise":  # y points down: clockwise on screen is a growing angle
            assert turn > 0.1 and abs(dx) < 1 and abs(growth - 1) < 0.05, (name, turn)
        elif name == "rotating counter-clockwise":
            assert turn < -0.1 and abs(dx) < 1 and abs(growth - 1) < 0.05, (name, turn)
        elif name == "growing":
            assert growth > 1.1, (name, growth)
        elif name == "shrinking":
            assert growth < 0.95, (name, growth)


def test_clips_are_deterministic_and_seeds_differ():
    a = SyntheticMotion(16, seed=4)
    b = SyntheticMotion(16, seed=4, cache=True)
    assert torch.equal(a[5]["clip"], b[5]["clip"]) and torch.equal(b[5]["clip"], b[5]["clip"])
    assert not torch.equal(a[5]["clip"], SyntheticMotion(16, seed=5)[5]["clip"])
    assert [a[i]["label"] for i in range(16)] == [i % 8 for i in range(16)]


def test_single_frames_do_not_reveal_the_class():
    # Pairs of opposite classes render the same kind of frames: the mean per-frame object
    # area and position must not separate them.
    cfg = SyntheticMotionConfig(frames=8, size=48)
    stats = {}
    for label in range(8):
        rows = []
        for s in range(24):
            _, alpha = render_clip(label, torch.Generator().manual_seed(1000 + 8 * s + label), cfg, return_alpha=True)
            area, cx, cy, _ = _moments(alpha)
            rows.append(torch.stack([area / 48**2, cx / 48, cy / 48], 1))
        stats[label] = torch.cat(rows).mean(0)
    for a, b in [(0, 1), (2, 3), (4, 5), (6, 7)]:
        assert (stats[a] - stats[b]).abs().max() < 0.06, (a, b, stats[a], stats[b])


def test_dataset_layouts_and_bad_arguments():
    cfg = SyntheticDataConfig(train_clips=10, val_clips=4, num_segments=3, size=32)
    train, val = build_synthetic_dataset(cfg, "train"), build_synthetic_dataset(cfg, "val")
    assert train[0]["clip"].shape == (3, 3, 32, 32) and val[0]["clip"].shape == (1, 3, 3, 32, 32)
    assert len(train) == 10 and len(val) == 4 and train[0]["skipped"] == []
    with pytest.raises(ValueError, match="split must be"):
        build_synthetic_dataset(cfg, "dev")
    with pytest.raises(IndexError):
        train[10]
    with pytest.raises(ValueError, match="num_clips must be positive"):
        SyntheticMotion(0)


def test_cached_datasets_are_shared_within_a_process():
    cfg = SyntheticDataConfig(train_clips=6, val_clips=2, num_segments=2, size=32)
    assert build_synthetic_dataset(cfg, "train") is build_synthetic_dataset(SyntheticDataConfig(**vars(cfg)), "train")
    assert build_synthetic_dataset(cfg, "val") is not build_synthetic_dataset(cfg, "train")
    other = SyntheticDataConfig(**{**vars(cfg), "seed": 9})
    assert build_synthetic_dataset(other, "train") is not build_synthetic_dataset(cfg, "train")
    fresh = SyntheticDataConfig(**{**vars(cfg), "cache": False})
    assert build_synthetic_dataset(fresh, "train") is not build_synthetic_dataset(fresh, "train")
