from collections import Counter

import pytest

from fashion_bench.data.samplers import EpochShuffleSampler, IdentityBatchSampler


def test_shuffle_is_deterministic_per_epoch_and_resumable():
    state = {"epoch": 0, "done": 0}
    sampler = EpochShuffleSampler(20, 4, seed=3, progress=lambda: (state["epoch"], state["done"]))
    first = list(sampler)
    assert [e for _, e in first] == [0] * 20 and sorted(i for i, _ in first) == list(range(20))
    assert list(sampler) == first
    state["epoch"] = 1
    assert list(sampler) != first
    state["done"] = 2  # resume after two completed batches of epoch 1
    assert list(sampler) == list(EpochShuffleSampler(20, 4, seed=3, progress=lambda: (1, 0)))[8:]


def test_ranks_take_disjoint_slices():
    a = [i for i, _ in EpochShuffleSampler(20, 4, seed=0, num_replicas=2, rank=0)]
    b = [i for i, _ in EpochShuffleSampler(20, 4, seed=0, num_replicas=2, rank=1)]
    assert len(a) == len(b) == 8 and not set(a) & set(b)


def test_pk_batches_hold_p_identities_with_k_images():
    identities = [f"id{i // 5}" for i in range(60)]  # 12 identities x 5 images
    sampler = IdentityBatchSampler(identities, p=4, k=2, seed=0)
    order = [i for i, _ in sampler]
    assert len(order) % 8 == 0 and len(order) > 0
    for start in range(0, len(order), 8):
        counts = Counter(identities[i] for i in order[start : start + 8])
        assert len(counts) == 4 and set(counts.values()) == {2}


def test_pk_needs_enough_identities():
    with pytest.raises(ValueError, match="at least P=8 identities"):
        IdentityBatchSampler(["a", "b"], p=8, k=2, seed=0)
