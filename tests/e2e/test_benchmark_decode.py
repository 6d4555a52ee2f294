"""experiments/benchmark_decode.py: a tiny run end to end, its JSON, and its input errors."""

import json

import pytest

from experiments import benchmark_decode


def test_tiny_rows_and_speedups(tmp_path, capsys):
  out = tmp_path / 'decode.json'
  assert benchmark_decode.main(['--models', 't5:tiny,gpt2:tiny', '--strategies', 'greedy',
                                '--batch', '2', '--prompt_len', '8', '--new_tokens', '4',
                                '--repeats', '1', '--out', str(out)]) == 0
  result = json.loads(out.read_text())
  rows = {(r['model'], r['cache']): r for r in result['rows']}
  assert set(rows) == {('t5:tiny', 'full'), ('t5:tiny', 'self'), ('gpt2:tiny', 'full')}
  for r in rows.values():
    assert r['tokens_per_s'] == pytest.approx(2 * 4 / r['seconds'])
    assert r['params'] > 0 and r['compile_s'] > 0
  assert result['speedups']['t5:tiny/greedy'] == pytest.approx(
      rows['t5:tiny', 'full']['tokens_per_s'] / rows['t5:tiny', 'self']['tokens_per_s'])
  assert '| t5:tiny | greedy | self |' in capsys.readouterr().out


@pytest.mark.parametrize('argv,fragment', [(['--models', 'bert:tiny'], 'bert:tiny'),
                                           (['--strategies', 'topk'], 'topk'),
                                           (['--cache_modes', 'half'], 'half')])
def test_bad_arguments_are_one_line_errors(argv, fragment, capsys):
  assert benchmark_decode.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error:') and fragment in err and '\n' not in err
