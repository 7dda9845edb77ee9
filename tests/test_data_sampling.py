from fractions import Fraction

import pytest
import torch

from motionsqueeze.data.sampling import ClipSampler, dense_indices, segment_indices


def _segment_reference(n, t, offset):
    """Exact rational arithmetic: frame under position (i + offset) * n / t."""
    return [min(n - 1, int((i + Fraction(offset)) * n / t)) for i in range(t)]


@pytest.mark.parametrize("n,t,expected", [
    (10, 4, [1, 3, 6, 8]),
    (8, 8, [0, 1, 2, 3, 4, 5, 6, 7]),
    (16, 8, [1, 3, 5, 7, 9, 11, 13, 15]),
    (3, 8, [0, 0, 0, 1, 1, 2, 2, 2]),  # shorter than T: still T indices, in order
    (1, 4, [0, 0, 0, 0]),
    (47, 8, [2, 8, 14, 20, 26, 32, 38, 44]),
])
def test_validation_takes_segment_centres(n, t, expected):
    assert ClipSampler(t).even(n, 1) == [expected]
    assert expected == _segment_reference(n, t, Fraction(1, 2))
    # TSM's rule int(tick / 2 + tick * i), tick = n / T, gives the same frames.
    tick = n / t
    assert expected == [int(tick / 2.0 + tick * i) for i in range(t)]


def test_training_draws_one_frame_inside_each_segment():
    n, t = 10, 4
    allowed = [{0, 1, 2}, {2, 3, 4}, {5, 6, 7}, {7, 8, 9}]
    g = torch.Generator().manual_seed(0)
    seen = [set() for _ in range(t)]
    sampler = ClipSampler(t)
    for _ in range(400):
        idx = sampler.train(n, g)
        assert len(idx) == t
        for i, k in enumerate(idx):
            seen[i].add(k)
    assert seen == allowed  # every frame of each segment is reached, nothing outside


def test_training_with_fewer_frames_than_segments_keeps_order_and_length():
    g = torch.Generator().manual_seed(1)
    for n in (1, 2, 5):
        for _ in range(50):
            idx = ClipSampler(8).train(n, g)
            assert len(idx) == 8 and idx == sorted(idx) and 0 <= min(idx) and max(idx) < n


def test_segment_indices_with_explicit_offsets():
    assert segment_indices(10, 4, [0, 0, 0, 0]) == [0, 2, 5, 7]
    assert segment_indices(10, 4, 0.999) == [2, 4, 7, 9]
    with pytest.raises(ValueError, match="need 4 segment offsets"):
        segment_indices(10, 4, [0.5])
    with pytest.raises(ValueError, match="0 frames"):
        segment_indices(0, 4, 0.5)


def test_evenly_spaced_test_clips():
    # K = 2 clips: offsets 1/4 and 3/4 of each segment.
    assert ClipSampler(4).even(16, 2) == [_segment_reference(16, 4, Fraction(1, 4)),
                                          _segment_reference(16, 4, Fraction(3, 4))]
    assert ClipSampler(4).even(16, 2) == [[1, 5, 9, 13], [3, 7, 11, 15]]


def test_dense_indices_follow_the_formula():
    assert dense_indices(100, 8, 8, 18) == [18, 26, 34, 42, 50, 58, 66, 74]
    assert dense_indices(20, 8, 8, 0) == [0, 8, 16, 4, 12, 0, 8, 16]  # wraps around a short video


def test_dense_sampler_train_val_and_test_starts():
    s = ClipSampler(8, "dense")  # stride 64 // 8 = 8, S = n - 64
    assert s.dense_stride == 8
    assert s.even(100, 1) == [dense_indices(100, 8, 8, 18)]  # centre start (36 + 1) // 2
    # Ten evenly spaced starts over 0..36: floor((k + 1/2) * 37 / 10).
    starts = [c[0] for c in s.even(100, 10)]
    assert starts == [(2 * k + 1) * 37 // 20 for k in range(10)]
    assert starts[0] == 1 and starts[-1] == 35
    g = torch.Generator().manual_seed(0)
    seen = {s.train(100, g)[0] for _ in range(2000)}
    assert seen == set(range(37))  # uniform over 0..S, inclusive
    assert s.even(30, 1) == [[(i * 8) % 30 for i in range(8)]]  # S = 0
    assert ClipSampler(4, "dense", stride=2).train(3, g) in ([0, 2, 1, 0],)


def test_random_test_clips_are_independent_training_draws():
    s = ClipSampler(4)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert s.random(40, 3, g1) == [s.train(40, g2) for _ in range(3)]


def test_bad_sampler_settings():
    with pytest.raises(ValueError, match="sampling must be one of"):
        ClipSampler(8, "uniform")
    with pytest.raises(ValueError, match="set the stride"):
        ClipSampler(128, "dense")
    with pytest.raises(ValueError, match="num_clips must be >= 1"):
        ClipSampler(8).even(10, 0)
