"""Chunked exact nearest neighbours against torch.cdist + topk, and the uint8 conversion."""
import numpy as np
import pytest
import torch

import ganlab


@pytest.mark.parametrize("k, query_chunk, reference_chunk", [(1, 7, 5), (3, 64, 64), (5, 3, 1000)])
def test_chunked_neighbours_equal_cdist_topk(k, query_chunk, reference_chunk):
    gen = torch.Generator().manual_seed(0)
    queries, references = torch.randn(37, 3, 4, 4, generator=gen), torch.randn(53, 3, 4, 4, generator=gen)
    dist, idx = ganlab.nearest_neighbours(queries, references.numpy(), k, query_chunk=query_chunk,
                                          reference_chunk=reference_chunk)
    full = torch.cdist(queries.flatten(1).double(), references.flatten(1).double())
    want_d, want_i = full.topk(k, dim=1, largest=False)
    assert torch.equal(idx, want_i)
    torch.testing.assert_close(dist.double(), want_d, rtol=1e-5, atol=1e-5)


def test_reported_distances_are_exact_and_a_copy_is_at_zero():
    """Large, nearly equal vectors: the float32 expansion |a|^2 - 2ab + |b|^2 cancels most digits; the distances
    returned are float64 ones from the difference (an exact copy: 0), as scipy's cdist gives them."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(2)
    references = (100 + rng.normal(size=(300, 3072))).astype(np.float32)
    queries = np.concatenate([references[[5, 17, 250]], references[:4] + np.float32(1e-2)])
    dist, idx = ganlab.nearest_neighbours(queries, references, 3, query_chunk=4, reference_chunk=128)
    want = cdist(queries.astype(np.float64), references.astype(np.float64))
    assert dist[:3, 0].tolist() == [0.0, 0.0, 0.0] and idx[:3, 0].tolist() == [5, 17, 250]
    np.testing.assert_allclose(dist.numpy(), np.take_along_axis(want, idx.numpy(), 1), rtol=1e-6)
    assert torch.equal(idx, torch.from_numpy(np.argsort(want, 1, kind="stable")[:, :3]))


def test_exclude_self_skips_each_points_own_entry():
    points = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    dist, idx = ganlab.nearest_neighbours(points, points, 2, query_chunk=9, reference_chunk=11, exclude_self=True)
    full = torch.cdist(torch.from_numpy(points).double(), torch.from_numpy(points).double())
    full.fill_diagonal_(float("inf"))
    assert torch.equal(idx, full.topk(2, dim=1, largest=False).indices)
    assert (idx != torch.arange(40)[:, None]).all()


def test_bad_k_is_refused():
    with pytest.raises(ValueError, match="more than the 3 references"):
        ganlab.nearest_neighbours(torch.zeros(2, 4), torch.zeros(3, 4), k=4)


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.003, 1.0, 1.5])
    assert ganlab.to_uint8(x).tolist() == [0, 0, 128, 128, 255, 255]  # 127.5 rounds half to even: 128
