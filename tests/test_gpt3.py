"""configs/gpt3.py: Table 2.1 of Brown et al. 2020 (layers, width, heads, head size, batch in
tokens, learning rate, context 2048) and each size's parameter count, by our accounting with the
paper's 50257-token vocabulary, within a few % of the size's name. Shapes only: nothing is
allocated, so 175B counts in a second."""

import pytest

from configs import gpt3
from transformer import config as config_lib
from transformer.models.hparams import HParams
from transformer.monitoring import accounting

SIZES = list(gpt3.PAPER_PARAMS)


@pytest.mark.parametrize('size', SIZES)
def test_parameter_count_is_the_papers_name(size):
  config = config_lib.load(f'configs/gpt3.py:{size}')
  assert config.model.vocab_size == 50257
  total = accounting.count_params(accounting.abstract_model(config))['total']
  assert abs(total / gpt3.PAPER_PARAMS[size] - 1) < 0.03, f'{size}: {total:,}'


@pytest.mark.parametrize('size', SIZES)
def test_sizes_follow_table_2_1(size):
  layers, d_model, heads, d_head, batch_tokens, lr = gpt3.TABLE[size]
  c = config_lib.load(f'configs/gpt3.py:{size}')
  m = c.model
  assert (m.num_layers, m.d_model, m.head_dim, m.d_ff) == (layers, d_model, d_head, 4 * d_model)
  assert m.num_heads * m.head_dim == m.d_model
  assert m.num_heads == heads or size == 'xl'   # the table's 24 x 128 is not XL's 2048
  assert c.data.seq_len == m.max_len == 2048
  assert c.train.batch_size * c.data.seq_len == batch_tokens
  assert abs(batch_tokens / {'small': 0.5e6, 'medium': 0.5e6, 'large': 0.5e6, 'xl': 1e6,
                             '2.7b': 1e6, '6.7b': 2e6, '13b': 2e6, '175b': 3.2e6}[size] - 1) < 0.05
  assert c.opt.learning_rate == lr and c.train.tokens == 300 * 10 ** 9
  assert (m.norm_position, m.positions, m.tie_embeddings, m.activation) == (
      'pre', 'learned', True, 'gelu_tanh')   # GPT-2's blocks


def test_tiny_is_small_enough_to_train_here():
  c = config_lib.load('configs/gpt3.py:tiny')
  total = accounting.count_params(accounting.abstract_model(c))['total']
  assert total < 2e6 and c.train.steps == 600 and not c.model.scan_layers


def test_banded_layers_only_once_the_kernel_has_the_keys():
  """The dense / banded alternation is declared with model.local_window and
  model.attention_pattern, and switched on exactly when models/hparams.py has them."""
  has_keys = {'local_window', 'attention_pattern'} <= set(HParams.defaults())
  assert gpt3.LOCAL_ATTENTION is has_keys
  small, tiny = (config_lib.load(f'configs/gpt3.py:{s}').model for s in ('small', 'tiny'))
  if has_keys:
    assert (small.local_window, small.attention_pattern) == (256, 'gl')
    assert (tiny.local_window, tiny.attention_pattern) == (32, 'gl')
  else:
    assert 'local_window' not in small and 'attention_pattern' not in tiny
