"""BERT (Devlin et al. 2019): encoder-only, post-norm, learned positions + token types, MLM head.

  ./launch.sh train --config configs/bert.py:tiny --workdir runs
  ./launch.sh summary --config configs/bert.py:base

Sizes: tiny (minutes on 2 CPU cores), base (110M), large (340M).
"""

from configs import common

SIZES = dict(
    tiny=dict(num_layers=2, d_model=128, num_heads=2, d_ff=512, max_len=256),
    base=dict(num_layers=12, d_model=768, num_heads=12, d_ff=3072),
    large=dict(num_layers=24, d_model=1024, num_heads=16, d_ff=4096),
)


def model(size):
  """The published BERT hyperparameters at `size` (uncased WordPiece vocab 30522, 512 positions)."""
  published = dict(
      family='encoder', vocab_size=30522, max_len=512, type_vocab_size=2, activation='gelu',
      norm='layernorm', norm_eps=1e-12, norm_position='post', embed_norm=True, final_norm=False,
      positions='learned', use_bias=True, tie_embeddings=True, lm_head_bias=True,
      mlm_transform=True, classifier_pooler=True, dropout_rate=0.1, attention_dropout_rate=0.1,
      mlp_dropout=False, final_dropout=False)
  if size == 'tiny':
    published.update(vocab_size=0, dropout_rate=0.0, attention_dropout_rate=0.0)
  return common.sized_model_config(size, **{**published, **SIZES[size]})


def get_config(arg='tiny'):
  c = common.base_config()
  common.check_size(arg, SIZES, __name__)
  c.model = model(arg)
  c.objective = 'mlm'
  c.run_name = f'bert_{arg}'
  c.opt.b2 = 0.999
  c.opt.weight_decay = 0.01
  if arg != 'tiny':
    c.data.seq_len = 512
    c.opt.learning_rate = 1e-4
  return c
