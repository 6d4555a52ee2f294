"""GPT-3 (Brown et al. 2020): GPT-2 style blocks at eight sizes, context 2048, Table 2.1's recipe.

  ./launch.sh train --config configs/gpt3.py:tiny --workdir runs
  ./launch.sh summary --config configs/gpt3.py:175b
  ./launch.sh eval --workdir runs/default/gpt3_tiny --task stdlib_docstrings --fewshot 3

Sizes (Table 2.1: layers, d_model, heads, head size, batch in tokens, learning rate): small
(125M), medium (350M), large (760M), xl (1.3B), 2.7b, 6.7b, 13b, 175b, and tiny (trains in
minutes on 2 CPU cores). The batch in tokens becomes train.batch_size = tokens / 2048
sequences; the paper's batch ramp (from 32k tokens over the first 4-12B tokens) is left out.
Two rows of the table do not add up, and heads x head size = d_model decides: XL's 24 heads
x 128 = 3072 is not its d_model 2048 (it would make 1.52B, not 1.3B), so XL has 2048 / 128 =
16 heads; 13B's d_model 5140 is not 40 x 128 = 5120, so 13B is 5120 wide. Every size trains
300B tokens: Adam (0.9, 0.95, 1e-8), weight decay 0.1, gradient clipping 1.0, a warmup over
375M tokens, cosine decay to 10% (the paper decays over 260B tokens and then holds; here over
the whole run).

Attention alternates dense and locally banded layers ("similar to the Sparse Transformer").
The paper gives neither the band nor the order: BANDED holds GPT-Neo's choice (dense first,
a 256-token window; tiny: 32), declared with `model.local_window` / `model.attention_pattern`.
SWITCH: it is applied only where models/hparams.py has both keys (LOCAL_ATTENTION below), as
it has since the banded kernel (issue 27's knobs) landed; without them every layer is dense.
"""

from configs import common
from configs import gpt2
from transformer.models.hparams import HParams

CONTEXT = 2048
VOCAB = 50257
M = 2 ** 20   # the table's 0.5M, 1M, 2M tokens are 256, 512, 1024 sequences of 2048; 3.2M: 1536
# name: (layers, d_model, heads, head size, batch in tokens, learning rate): Table 2.1
TABLE = {
    'small': (12, 768, 12, 64, M // 2, 6.0e-4),
    'medium': (24, 1024, 16, 64, M // 2, 3.0e-4),
    'large': (24, 1536, 16, 96, M // 2, 2.5e-4),
    'xl': (24, 2048, 24, 128, M, 2.0e-4),
    '2.7b': (32, 2560, 32, 80, M, 1.6e-4),
    '6.7b': (32, 4096, 32, 128, 2 * M, 1.2e-4),
    '13b': (40, 5120, 40, 128, 2 * M, 1.0e-4),
    '175b': (96, 12288, 96, 128, 1536 * CONTEXT, 0.6e-4),
}
PAPER_PARAMS = {'small': 125e6, 'medium': 350e6, 'large': 760e6, 'xl': 1.3e9, '2.7b': 2.7e9,
                '6.7b': 6.7e9, '13b': 13.0e9, '175b': 175.0e9}
SIZES = dict(
    tiny=dict(num_layers=2, d_model=128, num_heads=4, head_dim=32, d_ff=512, max_len=256),
    **{name: dict(num_layers=n, d_model=d, num_heads=d // dh, head_dim=dh, d_ff=4 * d)
       for name, (n, d, _, dh, _, _) in TABLE.items()},
)
# The alternating dense / banded pattern ('gl': global, local, repeated).
BANDED = dict(local_window=256, attention_pattern='gl')
TINY_BANDED = dict(local_window=32, attention_pattern='gl')
# SWITCH: on once models/hparams.py declares the banded-attention keys (the kernel's own work).
LOCAL_ATTENTION = set(BANDED) <= set(HParams.defaults())


def model(size):
  """GPT-2's published blocks (configs/gpt2.py) at a GPT-3 size, context 2048."""
  published = {k: v for k, v in gpt2.model('small').items() if k != 'scan_layers'}
  published.update(max_len=CONTEXT, vocab_size=VOCAB)
  if size == 'tiny':
    published.update(vocab_size=0, dropout_rate=0.0, attention_dropout_rate=0.0)
  if LOCAL_ATTENTION:
    published.update(TINY_BANDED if size == 'tiny' else BANDED)
  return common.sized_model_config(size, **{**published, **SIZES[size]})


def get_config(arg='tiny'):
  c = common.base_config()
  common.check_size(arg, SIZES, __name__)
  c.model = model(arg)
  c.objective = 'causal_lm'
  c.run_name = f'gpt3_{arg}'
  if arg == 'tiny':   # as configs/gpt2.py:tiny, a few minutes on 2 CPU cores
    c.train.steps = 600
    return c
  *_, batch_tokens, lr = TABLE[arg]
  c.data.seq_len = CONTEXT
  c.train.batch_size = batch_tokens // CONTEXT
  c.train.tokens = 300 * 10 ** 9
  c.opt.learning_rate = lr
  c.opt.warmup_steps = round(375e6 / (c.train.batch_size * CONTEXT))
  c.opt.update(b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip_norm=1.0,
               schedule='cosine', end_lr_fraction=0.1)
  return c
