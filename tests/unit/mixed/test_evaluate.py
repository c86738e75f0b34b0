"""The mixed-modal scores' interval: how far a measured edit rate may sit from the true one."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.mixed.evaluate import wilson_interval


def test_wilson_interval_matches_the_textbook_values():
    # 115 of 198 (the shapes report's held-out edits, 58.1%): 51.1-64.7% (Wilson, z = 1.96)
    assert wilson_interval(115, 198) == pytest.approx((0.5113, 0.6474), abs=5e-4)
    # none right of 10 still leaves room above zero; all right, below one
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-4)


def test_wilson_interval_narrows_with_more_items_and_holds_the_rate():
    widths = []
    for n in (50, 200, 800):
        lo, hi = wilson_interval(int(0.6 * n), n)
        assert lo < 0.6 < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert np.isclose(widths[1] / widths[2], 2.0, rtol=0.05)  # about 1 / sqrt(n)
    assert wilson_interval(0, 0) == (0.0, 1.0)
