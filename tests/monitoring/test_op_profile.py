"""transformer.monitoring.op_profile and `python -m transformer.profile_report`: XLA op time by
kind from a jax.profiler trace."""

import jax
import jax.numpy as jnp
import pytest

from transformer.errors import ConfigError
from transformer import profile_report
from transformer.monitoring import op_profile as pr


@pytest.mark.parametrize('op, kind', [
    ('ynn_fusion.12', 'matrix products'), ('dot_general.3', 'matrix products'),
    ('dot.1', 'matrix products'), ('convolution.2', 'matrix products'),
    ('cublas-gemm.4', 'matrix products'), ('triton_gemm_fusion', 'matrix products'),
    ('transpose_copy_fusion.3', 'copies and transposes'), ('copy.5', 'copies and transposes'),
    ('wrapped_reduce-window', 'reductions'), ('broadcast_select_fusion.3', 'other fusions'),
    ('wrapped_scatter', 'other ops')])
def test_ops_are_sorted_by_their_hlo_name(op, kind):
  assert pr.kind(op) == kind


def test_ops_side_by_side_count_once():
  assert pr._covered([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17
  assert pr._covered([]) == 0


def _events(module, run, op, start, end):
  return (module, run, op, start, end)


def test_summary_is_per_execution_of_the_busiest_program():
  events = [_events('jit_step', 1, 'dot.1', 0, 4e6), _events('jit_step', 1, 'copy.2', 4e6, 5e6),
            _events('jit_step', 2, 'dot.1', 10e6, 14e6),
            _events('jit_step', 2, 'fusion.3', 14e6, 16e6),
            _events('jit_small', 7, 'dot.9', 20e6, 21e6)]
  s = pr.summarize(events)
  assert s['module'] == 'jit_step' and s['executions'] == 2
  assert s['by_kind']['matrix products'] == pytest.approx(4e-3)
  assert s['by_kind']['copies and transposes'] == pytest.approx(0.5e-3)
  assert s['by_kind']['other fusions'] == pytest.approx(1e-3)
  assert s['ops_s'] == pytest.approx(5.5e-3)
  assert pr.summarize(events, 'jit_small')['op_s'] == {'dot.9': pytest.approx(1e-3)}


def test_a_traced_matmul_is_found_as_a_product(tmp_path, capsys):
  f = jax.jit(lambda a, b: jnp.tanh(a @ b) * 2.0)
  a = jnp.ones((384, 384))
  f(a, a).block_until_ready()
  jax.profiler.start_trace(str(tmp_path))
  for _ in range(3):
    f(a, a).block_until_ready()
  jax.profiler.stop_trace()
  s = pr.summarize(pr.op_events(pr.trace_file(str(tmp_path))))
  assert s['executions'] == 3
  assert 0 < s['by_kind']['matrix products'] <= s['ops_s']
  assert any(pr.kind(op) == 'matrix products' for op in s['op_s'])
  assert profile_report.main([str(tmp_path)]) == 0
  assert '(3 traced;' in capsys.readouterr().out


def test_no_trace_is_a_one_line_error(tmp_path, capsys):
  with pytest.raises(ConfigError, match='log.profile_steps') as e:
    pr.trace_file(str(tmp_path))
  assert '\n' not in str(e.value)
  assert profile_report.main([str(tmp_path)]) == 2
  assert capsys.readouterr().err.startswith('error: no jax.profiler trace')
