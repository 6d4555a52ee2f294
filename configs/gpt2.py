"""GPT-2 (Radford et al. 2019): decoder-only, pre-norm, learned positions, tied LM head.

  ./launch.sh train --config configs/gpt2.py:tiny --workdir runs
  ./launch.sh summary --config configs/gpt2.py:small

Sizes: tiny (trains in minutes on 2 CPU cores), small (124M), medium (355M), large (774M).
"""

from configs import common

SIZES = dict(
    tiny=dict(num_layers=2, d_model=128, num_heads=4, d_ff=512, max_len=256),
    small=dict(num_layers=12, d_model=768, num_heads=12, d_ff=3072),
    medium=dict(num_layers=24, d_model=1024, num_heads=16, d_ff=4096),
    large=dict(num_layers=36, d_model=1280, num_heads=20, d_ff=5120),
)
# The first remat policy that fits a v5e-8 at bfloat16 with FSDP, 32 x 1024 tokens (README
# "Accelerators": experiments/benchmark_plan.py; compiler figures, not hardware measurements).
REMAT = dict(small='dots', medium='dots', large='full')


def model(size):
  """The published GPT-2 hyperparameters at `size` (vocab 50257, context 1024)."""
  published = dict(
      family='decoder', vocab_size=50257, max_len=1024, activation='gelu_tanh',
      norm='layernorm', norm_eps=1e-5, norm_position='pre', final_norm=True,
      positions='learned', use_bias=True, tie_embeddings=True, dropout_rate=0.1,
      attention_dropout_rate=0.1, mlp_dropout=False, final_dropout=False,
      classifier_bias=False)   # a linear classifier without bias (GPT-1's W_y, HF's score)
  if size == 'tiny':
    published.update(vocab_size=0, dropout_rate=0.0, attention_dropout_rate=0.0)
  return common.sized_model_config(size, **{**published, 'remat': REMAT.get(size, 'none'),
                                            **SIZES[size]})


def get_config(arg='tiny'):
  c = common.base_config()
  common.check_size(arg, SIZES, __name__)
  c.model = model(arg)
  c.objective = 'causal_lm'
  c.run_name = f'gpt2_{arg}'
  if arg == 'tiny':   # the README's first command: a few minutes on 2 CPU cores
    c.train.steps = 600
  else:
    c.data.seq_len = 1024
    c.opt.learning_rate = 6e-4
  return c
