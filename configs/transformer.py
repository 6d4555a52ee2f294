"""The 2017 Transformer (Vaswani et al., "Attention Is All You Need"): encoder-decoder, post-norm,
sinusoidal positions, embeddings scaled by sqrt(d_model), shared source/target vocabulary.

  ./launch.sh train --config configs/transformer.py:tiny --workdir runs
  ./launch.sh summary --config configs/transformer.py:base

Sizes: tiny (minutes on 2 CPU cores), base (65M in the paper), big (213M). The tiny size trains
English -> German on the system's gettext catalogs (`gettext_catalogs/en_de`; a machine without
them says so in one line: use --config.data.source=python_stdlib/docstrings there), base and big
on WMT'14 English -> German as in the paper (`wmt14_translate/de-en`, downloaded by TFDS).
"""

from configs import common

SIZES = dict(
    tiny=dict(num_layers=2, d_model=128, num_heads=4, d_ff=512, dropout_rate=0.1),
    base=dict(num_layers=6, d_model=512, num_heads=8, d_ff=2048, dropout_rate=0.1),
    big=dict(num_layers=6, d_model=1024, num_heads=16, d_ff=4096, dropout_rate=0.3),
)


def model(size):
  """The paper's hyperparameters at `size` (shared BPE vocabulary of 37000 tokens, EN-DE)."""
  published = dict(
      family='encoder_decoder', vocab_size=37000, activation='relu', norm='layernorm',
      norm_eps=1e-6, norm_position='post', final_norm=False, positions='sinusoidal',
      use_bias=True, scale_embeddings=True, tie_embeddings=True, mlp_dropout=True,
      final_dropout=False, init='fan_in')
  if size == 'tiny':
    published.update(vocab_size=0)
  return common.model_config(**{**published, **SIZES[size]})


def get_config(arg='tiny'):
  c = common.base_config()
  common.check_size(arg, SIZES, __name__)
  c.model = model(arg)
  c.objective = 'seq2seq'
  c.run_name = f'transformer_{arg}'
  c.data.source = 'gettext_catalogs/en_de' if arg == 'tiny' else 'wmt14_translate/de-en'
  c.data.pack = False
  c.data.targets_len = 64
  c.opt.schedule = 'rsqrt'
  c.opt.b2 = 0.98
  c.opt.eps = 1e-9
  c.opt.weight_decay = 0.0
  c.opt.learning_rate = 2e-3
  c.opt.warmup_steps = 400 if arg == 'tiny' else 4000
  if arg != 'tiny':  # the paper's run lengths (sec. 5.2): 100k steps base, 300k big
    c.train.steps = 100_000 if arg == 'base' else 300_000
  # BLEU at every eval, decoded as in the paper (sec. 6.1): beam 4, length penalty alpha 0.6.
  c.log.decode.update(strategy='beam', beam_size=4, alpha=0.6, length_norm='gnmt')
  return c
