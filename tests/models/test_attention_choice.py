"""attention.choose on GPU: cuDNN or XLA decided up front from what cuDNN takes (dtype, head
dimension, lengths with a mask, dropout), with the reason; an explicit 'cudnn' that cannot run
is one line naming the key. (attend no longer tries cuDNN and falls back on an exception.)"""

import inspect

import pytest

from transformer.errors import ConfigError
from transformer.models import attention

GPU = dict(platform='gpu', dtype='bfloat16', head_dim=64, lengths=(1024,), capability=(8, 0))


def test_auto_takes_cudnn_on_gpu_where_it_can_run():
  assert attention.choose('auto', **GPU) == ('cudnn', 'auto on gpu')
  assert attention.choose('auto', **{**GPU, 'bias': True})[0] == 'cudnn'   # T5's bias: taken


@pytest.mark.parametrize('change,reason', [
    (dict(dtype='float32'), 'bfloat16 or float16 inputs, not float32'),
    (dict(head_dim=160), 'head dimension of at most 128 and a multiple of 8, not 160'),
    (dict(head_dim=60), 'not 60'),
    (dict(lengths=(1023,)), 'even sequence lengths with a mask, not 1023'),
    (dict(dropout=True), 'attention dropout > 0'),
])
def test_auto_takes_xla_where_cudnn_cannot_and_explicit_cudnn_is_an_error(change, reason):
  impl, why = attention.choose('auto', **{**GPU, **change})
  assert impl == 'xla' and why.startswith('auto: not cudnn, ') and reason in why
  with pytest.raises(ConfigError) as e:
    attention.choose('cudnn', **{**GPU, **change})
  assert str(e.value).startswith('`model.attention_impl=cudnn`: ') and reason in str(e.value)


def test_hopper_takes_head_dimensions_up_to_256():
  assert attention.choose('auto', **{**GPU, 'head_dim': 160, 'capability': (9, 0)})[0] == 'cudnn'


def test_attend_has_no_silent_fallback():
  assert 'except' not in inspect.getsource(attention.attend)
