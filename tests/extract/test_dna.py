"""One-hot DNA and the sliding windows of genomic models (gpu_matcher.extract.dna)."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_matcher.errors import ProjectError
from gpu_matcher.extract.dna import kept_rows, one_hot_table, plan_windows, window_batches


@pytest.mark.parametrize("length,window,stride", [(10_000, 1000, 500), (2_345, 1000, 500), (999, 1000, 500),
                                                  (1_001, 1000, 500), (5_000, 100, 100), (5_003, 100, 30),
                                                  (7, 3, 1)])
def test_kept_ranges_tile_the_contig_with_context_on_both_sides(length, window, stride):
    windows = plan_windows(length, window, stride)
    assert windows[0].keep_start == 0 and windows[-1].keep_stop == length
    for a, b in zip(windows, windows[1:]):
        assert a.keep_stop == b.keep_start and a.keep_start < a.keep_stop
    margin = (window - stride) // 2
    for w in windows:
        assert w.start <= w.keep_start < w.keep_stop <= w.stop == w.start + min(window, length)
        # Every kept base has the full margin of context, except near the contig's ends.
        assert w.keep_start - w.start >= margin or w.start == 0
        assert w.stop - w.keep_stop >= margin or w.stop == length


def test_bad_window_settings_are_one_line_errors():
    with pytest.raises(ProjectError, match="--window 100 --stride 200"):
        plan_windows(1000, 100, 200)
    with pytest.raises(ProjectError, match="stride 0"):
        plan_windows(1000, 100, 0)


def test_batches_keep_timeline_order_and_one_length():
    bounds = np.array([0, 2500, 2900, 6000])
    seen = []
    for group in window_batches(bounds, 1000, 500, 3):
        assert len({w.stop - w.start for _, w in group}) == 1 and len(group) <= 3
        values = np.stack([np.arange(lo + w.start, lo + w.stop) for lo, w in group])[..., None]
        seen.append(kept_rows(group, values)[:, 0])
    np.testing.assert_array_equal(np.concatenate(seen), np.arange(6000))


def test_one_hot_shares_iupac_codes():
    table = one_hot_table({1: "A", 2: "C", 3: "G", 4: "T", 5: "N", 6: "R", 7: "-", 9: "w"})
    np.testing.assert_array_equal(table[[1, 2, 3, 4]], np.eye(4))
    np.testing.assert_allclose(table[5], [0.25] * 4)
    np.testing.assert_allclose(table[6], [0.5, 0, 0.5, 0])
    np.testing.assert_allclose(table[9], [0.5, 0, 0, 0.5])
    assert not table[7].any() and not table[0].any() and not table[8].any()
