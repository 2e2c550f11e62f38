from __future__ import annotations

import numpy as np
import pytest

from mlwarden.core.errors import ParameterError
from mlwarden.defenses.federated.partition import Partition, partition_indices

LABELS = np.repeat(np.arange(10), 60)


def test_iid_covers_every_sample_once():
    shards = partition_indices(LABELS, 20, Partition.parse("iid"), seed=1)
    joined = np.concatenate(shards)
    assert len(shards) == 20
    assert sorted(joined.tolist()) == list(range(len(LABELS)))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_dirichlet_is_seeded_and_skewed():
    small = partition_indices(LABELS, 10, Partition.parse("dirichlet:0.1"), seed=4)
    again = partition_indices(LABELS, 10, Partition.parse("dirichlet:0.1"), seed=4)
    other = partition_indices(LABELS, 10, Partition.parse("dirichlet:0.1"), seed=5)
    large = partition_indices(LABELS, 10, Partition.parse("dirichlet:100"), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(small, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(small, other, strict=True))
    assert sorted(np.concatenate(small).tolist()) == list(range(len(LABELS)))

    def classes(shards):
        return np.mean([len(np.unique(LABELS[s])) for s in shards])

    assert classes(small) < classes(large) - 3  # alpha 0.1: few classes per client


@pytest.mark.parametrize("text", ["dirichlet:0", "dirichlet:-1", "dirichlet:x", "shards", "iid:2"])
def test_bad_partitions_are_refused(text):
    with pytest.raises(ParameterError, match="partition"):
        Partition.parse(text)


def test_too_many_clients_for_the_data():
    with pytest.raises(ParameterError, match="two each"):
        partition_indices(LABELS[:10], 6, Partition.parse("iid"))
