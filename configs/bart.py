"""BART (Lewis et al. 2020): encoder-decoder, post-norm, learned positions, embedding norms.

  ./launch.sh train --config configs/bart.py:tiny --workdir runs
  ./launch.sh summary --config configs/bart.py:base

Sizes: tiny (minutes on 2 CPU cores), base (140M), large (406M).
"""

from configs import common

SIZES = dict(
    tiny=dict(num_layers=2, d_model=128, num_heads=4, d_ff=512, max_len=256),
    base=dict(num_layers=6, d_model=768, num_heads=12, d_ff=3072),
    large=dict(num_layers=12, d_model=1024, num_heads=16, d_ff=4096),
)


def model(size):
  """The published BART hyperparameters at `size` (byte-level BPE vocab 50265, 1024 positions)."""
  published = dict(
      family='encoder_decoder', vocab_size=50265, max_len=1024, activation='gelu',
      norm='layernorm', norm_eps=1e-5, norm_position='post', embed_norm=True, final_norm=False,
      positions='learned', use_bias=True, tie_embeddings=True, lm_head_bias=True,
      dropout_rate=0.1, attention_dropout_rate=0.0, mlp_dropout=True, final_dropout=False)
  if size == 'tiny':
    published.update(vocab_size=0, dropout_rate=0.0)
  return common.sized_model_config(size, **{**published, **SIZES[size]})


def get_config(arg='tiny'):
  c = common.base_config()
  common.check_size(arg, SIZES, __name__)
  c.model = model(arg)
  c.objective = 'span_corruption'
  c.run_name = f'bart_{arg}'
  c.data.targets_len = 32 if arg == 'tiny' else 256
  c.opt.b2 = 0.98
  c.opt.weight_decay = 0.01
  if arg != 'tiny':
    c.data.seq_len = 512
    c.opt.learning_rate = 3e-4
  return c
