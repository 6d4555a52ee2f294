"""T5 (Raffel et al. 2020): encoder-decoder, pre-norm RMSNorm, relative position bias, no biases.

  ./launch.sh train --config configs/t5.py:tiny --workdir runs
  ./launch.sh summary --config configs/t5.py:v1_1_base

Sizes: tiny, small (60M), base (220M), large (738M) are T5 v1.0 (ReLU MLP, tied logits);
v1_1_tiny, v1_1_small (77M), v1_1_base (248M) and v1_1_large (783M) are T5 v1.1 (gated-GELU MLP,
untied logits, no dropout in pretraining).
"""

from configs import common

V1_0 = dict(
    tiny=dict(num_layers=2, d_model=128, num_heads=4, head_dim=32, d_ff=512),
    small=dict(num_layers=6, d_model=512, num_heads=8, head_dim=64, d_ff=2048),
    base=dict(num_layers=12, d_model=768, num_heads=12, head_dim=64, d_ff=3072),
    large=dict(num_layers=24, d_model=1024, num_heads=16, head_dim=64, d_ff=4096),
)
V1_1 = dict(
    tiny=dict(num_layers=2, d_model=128, num_heads=4, head_dim=32, d_ff=384),
    small=dict(num_layers=8, d_model=512, num_heads=6, head_dim=64, d_ff=1024),
    base=dict(num_layers=12, d_model=768, num_heads=12, head_dim=64, d_ff=2048),
    large=dict(num_layers=24, d_model=1024, num_heads=16, head_dim=64, d_ff=2816),
)
SIZES = {**V1_0, **{f'v1_1_{k}': v for k, v in V1_1.items()}}


def model(size):
  """The published T5 hyperparameters at `size` (SentencePiece vocab 32128)."""
  published = dict(
      family='encoder_decoder', vocab_size=32128, activation='relu', norm='rmsnorm',
      norm_eps=1e-6, norm_position='pre', final_norm=True, positions='relative',
      relative_buckets=32, relative_max_distance=128, use_bias=False, scale_attention=False,
      tie_embeddings=True, scale_tied_logits=True, dropout_rate=0.1, mlp_dropout=True,
      final_dropout=True, init='fan_in')
  if size.startswith('v1_1_'):
    published.update(activation='geglu', tie_embeddings=False, scale_tied_logits=False,
                     dropout_rate=0.0)
  if size.endswith('tiny'):
    published.update(vocab_size=0, dropout_rate=0.0)
  return common.sized_model_config(size, **{**published, **SIZES[size]})


def get_config(arg='tiny'):
  c = common.base_config()
  common.check_size(arg, SIZES, __name__)
  c.model = model(arg)
  c.objective = 'span_corruption'
  c.run_name = f't5_{arg}'
  c.data.targets_len = 32 if arg.endswith('tiny') else 114
  c.opt.optimizer = 'adafactor'
  c.opt.schedule = 'rsqrt'
  c.opt.learning_rate = 1e-2
  c.opt.weight_decay = 0.0
  if not arg.endswith('tiny'):  # the paper's lr = 1 / sqrt(max(step, 10^4)): flat for 10k steps
    c.data.seq_len = 512
    c.opt.schedule = 'constant_rsqrt'
    c.opt.warmup_steps = 10_000
  return c
