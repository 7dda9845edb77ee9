import pytest
import torch
import torch.nn.functional as F

from motionsqueeze.data.transforms import (
    EvalTransform,
    FlipPolicy,
    TrainTransform,
    center_crop_box,
    crop_resize,
    direction_partners,
    multi_scale_crop_box,
    normalize_clip,
    resized_shape,
    three_crop_boxes,
)

SS_NAMES = [
    "Holding something",
    "Pulling something from left to right",
    "Pulling something from right to left",
    "Pushing something from left to right",
    "Pushing something from right to left",
    "Turning the camera left while filming something",
    "Turning the camera right while filming something",
    "Plugging something into something but pulling it right out as you remove your hand",  # no mirror
    "Spinning something so it continues spinning",
]


def _ramp_frames(t=4, h=60, w=80):
    """Frames that differ only by a per-frame offset: f_k(y, x) = x + 2y + 20k."""
    y = torch.arange(h).view(h, 1)
    x = torch.arange(w).view(1, w)
    base = (x + 2 * y).clamp(max=150)
    frames = torch.stack([base + 20 * k for k in range(t)]).to(torch.uint8)
    return frames.unsqueeze(-1).expand(t, h, w, 3).contiguous()


def test_resized_shape_fixed_short_side_and_none():
    assert resized_shape(100, 176, (240, 320)) == (240, 320)
    assert resized_shape(240, 427, 256) == (256, 455)
    assert resized_shape(480, 270, 128) == (228, 128)
    assert resized_shape(33, 44, None) == (33, 44)


def test_multi_scale_crop_boxes_are_those_of_the_tsn_recipe():
    h, w, size = 240, 320, 224
    sizes = [224 if abs(int(240 * s) - 224) < 3 else int(240 * s) for s in (1, 0.875, 0.75, 0.66)]
    assert sizes == [240, 210, 180, 158]
    expected = set()
    for i, ch in enumerate(sizes):
        for j, cw in enumerate(sizes):
            if abs(i - j) <= 1:
                hs, ws = (h - ch) // 4, (w - cw) // 4
                for py, px in [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2),
                               (1, 1), (1, 3), (3, 1), (3, 3)]:
                    expected.add((py * hs, px * ws, ch, cw))
    g = torch.Generator().manual_seed(0)
    seen = {multi_scale_crop_box(h, w, size, generator=g) for _ in range(4000)}
    assert seen == expected


def test_centre_and_three_crops():
    assert center_crop_box(240, 320, 224) == (8, 48, 224, 224)
    assert three_crop_boxes(256, 340, 256) == [(0, 0, 256, 256), (0, 42, 256, 256), (0, 84, 256, 256)]
    assert three_crop_boxes(340, 256, 256) == [(0, 0, 256, 256), (42, 0, 256, 256), (84, 0, 256, 256)]
    assert center_crop_box(100, 50, 64) == (18, 0, 64, 50)  # clipped to a narrow image


def test_crop_resize_matches_resize_then_crop():
    torch.manual_seed(0)
    clip = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
    # Resizing 48x64 -> 96x128 then cropping (10, 20, 40, 60) is the source region (5, 10, 20, 30).
    fused = crop_resize(clip, (10, 20, 40, 60), (40, 60), from_size=(96, 128))
    direct = F.interpolate(clip[..., 5:25, 10:40].float(), size=(40, 60), mode="bilinear",
                           align_corners=False, antialias=True)
    assert fused.dtype == torch.uint8 and fused.shape == (2, 3, 40, 60)
    assert (fused.float() - direct.round()).abs().max() <= 1


def test_training_crop_is_the_same_for_every_frame():
    frames = _ramp_frames()
    tf = TrainTransform(resize=(90, 120), crop_size=32, flip=FlipPolicy("plain"))
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        clip, label = tf(frames, 7, g)
        assert clip.shape == (4, 3, 32, 32) and clip.dtype == torch.uint8 and label == 7
        # Same geometry for every frame: frames still differ by exactly 20 per step.
        diff = clip[1:].int() - clip[:-1].int()
        assert (diff == 20).all()


def test_eval_transform_three_crops_along_the_longer_side():
    frames = _ramp_frames(t=2, h=40, w=80)
    out = EvalTransform(resize=None, crop_size=40, num_crops=3)(frames)
    assert out.shape == (3, 2, 3, 40, 40)
    # x grows left to right, so the three crops start at x = 0, 20, 40.
    assert [int(out[k, 0, 0, 0, 0]) for k in range(3)] == [0, 20, 40]
    centre = EvalTransform(resize=None, crop_size=40, num_crops=1)(frames)
    assert torch.equal(centre[0], out[1])


def test_direction_partners_from_class_names():
    partners = direction_partners(SS_NAMES)
    assert partners == {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5}  # "right out" is not a direction


def _flip_outcomes(policy, label, draws=200):
    g = torch.Generator().manual_seed(0)
    return {policy.decide(label, g) for _ in range(draws)}


def test_flip_policies():
    partners = direction_partners(SS_NAMES)
    assert _flip_outcomes(FlipPolicy("none"), 3) == {(False, 3)}
    assert _flip_outcomes(FlipPolicy("plain"), 3) == {(False, 3), (True, 3)}
    skip = FlipPolicy("direction-aware", "skip", partners)
    assert _flip_outcomes(skip, 3) == {(False, 3)}
    assert _flip_outcomes(skip, 0) == {(False, 0), (True, 0)}
    swap = FlipPolicy("direction-aware", "swap", partners)
    assert _flip_outcomes(swap, 3) == {(False, 3), (True, 4)}
    assert _flip_outcomes(swap, 6) == {(False, 6), (True, 5)}
    assert _flip_outcomes(swap, 7) == {(False, 7), (True, 7)}  # not direction-dependent
    explicit = FlipPolicy("direction-aware", "swap", {7: None})
    assert _flip_outcomes(explicit, 7) == {(False, 7)}  # listed without a mirror: never flipped
    with pytest.raises(ValueError, match="flip must be one of"):
        FlipPolicy("random")


def test_flipped_training_clip_is_mirrored_and_relabelled():
    frames = _ramp_frames(t=2, h=40, w=40)
    tf = TrainTransform(resize=None, crop_size=40, scales=(1.0,),
                        flip=FlipPolicy("direction-aware", "swap", direction_partners(SS_NAMES)))
    g = torch.Generator().manual_seed(0)
    results = [tf(frames, 1, g) for _ in range(30)]
    flipped = [(c, lab) for c, lab in results if c[0, 0, 0, 0] > c[0, 0, 0, -1]]
    kept = [(c, lab) for c, lab in results if c[0, 0, 0, 0] < c[0, 0, 0, -1]]
    assert flipped and kept
    assert all(lab == 2 for _, lab in flipped) and all(lab == 1 for _, lab in kept)
    assert torch.equal(flipped[0][0], kept[0][0].flip(-1))


def test_normalize_clip_any_leading_shape():
    clip = torch.randint(0, 256, (2, 3, 4, 3, 5, 5), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = normalize_clip(clip, mean, std)
    ref = (clip.double() / 255 - torch.tensor(mean).double().view(3, 1, 1)) / torch.tensor(std).double().view(3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == clip.shape
    assert torch.allclose(out.double(), ref, atol=1e-5)
    assert torch.allclose(normalize_clip(clip.float() / 255, mean, std), out, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        normalize_clip(torch.zeros(2, 4, 5, 5, dtype=torch.uint8))
