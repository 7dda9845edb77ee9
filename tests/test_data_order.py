"""The resumable, rank-split data order (engine/data_order.py)."""

from motionsqueeze.engine.data_order import ResumableSampler


def test_sampler_is_resumable_and_splits_across_ranks():
    s = ResumableSampler(10, seed=5)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=4)
    assert list(s) == full[4:] and len(s) == 6
    shares = []
    for rank in range(3):
        r = ResumableSampler(10, seed=5, rank=rank, world_size=3)
        r.set_epoch(2)
        shares.append([i for _, i in r])
    assert sorted(set(sum(shares, []))) == list(range(10)) and all(len(x) == 4 for x in shares)
