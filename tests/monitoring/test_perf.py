"""The throughput meter: token counts, rates and the packing fill ratio of a window."""

import numpy as np
import pytest

from transformer.monitoring import perf


def test_packing_efficiency_is_the_non_padding_share_of_every_stream():
  meter = perf.Throughput(0)
  full = {'inputs_segment_ids': np.ones((2, 8), np.int32),
          'targets_segment_ids': np.array([[1, 1, 2, 0], [1, 0, 0, 0]], np.int32)}
  half = {'inputs_segment_ids': np.array([[1, 1, 1, 1, 0, 0, 0, 0]] * 2, np.int32),
          'targets_segment_ids': np.zeros((2, 4), np.int32)}
  meter.add(full)
  meter.add(half)
  scalars, tokens = meter.report(2, peak=1e12, flops_per_token=1.0, sum_fn=lambda *c: c)
  assert tokens == 16 + 4 + 8
  assert scalars['perf/packing_efficiency'] == pytest.approx(28 / 48)
  scalars, _ = meter.report(3, peak=1e12, flops_per_token=1.0, sum_fn=lambda *c: c)
  assert scalars['perf/packing_efficiency'] == 0.0      # an empty window
