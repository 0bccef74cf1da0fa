"""Top-K predictions from logits."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_matcher import ProjectError
from gpu_matcher.io import topk_from_logits


@pytest.mark.parametrize("V, k", [(8, 5), (1000, 5), (6, 6)])
def test_topk_matches_a_full_sort(V, k):
    rng = np.random.default_rng(V)
    logits = rng.normal(size=(40, V)) * 3
    ids, probs = topk_from_logits(logits, k)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    expected = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(probs, np.take_along_axis(softmax, expected, 1), rtol=1e-6)
    assert np.all(np.diff(probs, axis=1) <= 0)


def test_ties_go_to_the_lower_column_and_ids_are_mapped():
    ids, probs = topk_from_logits(np.array([[1.0, 2.0, 2.0, 0.0]]), 2, token_ids=[10, 11, 12, 13])
    assert ids.tolist() == [[11, 12]] and probs[0, 0] == probs[0, 1]


def test_bad_arguments():
    with pytest.raises(ProjectError, match="k=9 must be between 1 and the vocabulary size 4"):
        topk_from_logits(np.zeros((2, 4)), 9)
    with pytest.raises(ProjectError, match=r"token_ids has shape \(3,\); expected \(4,\)"):
        topk_from_logits(np.zeros((2, 4)), 2, token_ids=[1, 2, 3])
