"""ViT (Dosovitskiy et al. 2021): images cut into patches, read by the pre-norm encoder.

  ./launch.sh train --config configs/vit.py:tiny --workdir runs        # embedded digits, CPU
  ./launch.sh train --config configs/vit.py:b16 --config.data.source=imagenet2012
  ./launch.sh summary --config configs/vit.py:b16

Sizes (Table 1 of the paper; Ti/16 from DeiT), parameters at 224 x 224 with a 1000-class head
(tests/models/test_vit.py holds them):
  tiny   8 x 8 grey digits, 2 x 2 patches, 4 layers of 64         136,138  (10 classes)
  ti16   12 layers, d_model 192,  3 heads, MLP  768            5,717,416
  s16    12 layers, d_model 384,  6 heads, MLP 1536           22,050,664
  b16    12 layers, d_model 768, 12 heads, MLP 3072           86,567,656  (the paper's 86M)
  l16    24 layers, d_model 1024, 16 heads, MLP 4096         304,326,632  (the paper's 307M)

The sequence is the patches plus a class token, so data.seq_len follows data.image_size and
model.patch_size (a reference, updated by an override of either); fine-tuning at another
resolution is --config.data.image_size=384 with --config.checkpoint.init_from=<run>: the
position table is interpolated in 2-D (models/patches.py).
"""

from configs import common

SIZES = dict(
    tiny=dict(num_layers=4, d_model=64, num_heads=4, d_ff=128, patch_size=2, image_size=8,
              num_channels=1, num_classes=10, image_mean=(0.5,), image_std=(0.5,)),
    ti16=dict(num_layers=12, d_model=192, num_heads=3, d_ff=768),
    s16=dict(num_layers=12, d_model=384, num_heads=6, d_ff=1536),
    b16=dict(num_layers=12, d_model=768, num_heads=12, d_ff=3072),
    l16=dict(num_layers=24, d_model=1024, num_heads=16, d_ff=4096),
)


def model(size):
  """The paper's ViT at `size`: pre-norm, exact GELU, a class token, learned 2-D positions."""
  published = dict(
      family='encoder', vocab_size=0, patch_size=16, image_size=224, num_channels=3,
      num_classes=1000, pooling='cls', positions='learned_2d', activation='gelu',
      norm='layernorm', norm_eps=1e-6, norm_position='pre', embed_norm=False, final_norm=True,
      use_bias=True, classifier_pooler=False, dropout_rate=0.0, attention_dropout_rate=0.0,
      mlp_dropout=False, final_dropout=False, image_mean=(0.5, 0.5, 0.5),
      image_std=(0.5, 0.5, 0.5))
  return common.sized_model_config(size, **{**published, **SIZES[size]})


def get_config(arg='tiny'):
  c = common.base_config()
  common.check_size(arg, SIZES, __name__)
  c.model = model(arg)
  c.objective = 'image_classification'
  c.run_name = f'vit_{arg}'
  c.data.source = 'digits' if arg == 'tiny' else 'imagenet2012'
  c.data.image_key = ''              # '' : the source's image field
  c.data.image_size = c.model.image_size   # images are resized to this side
  c.data.crop_scale = 1.0            # training crops of area in [crop_scale, 1]; 1: none
  c.data.flip = arg != 'tiny'        # random left-right flips in training (not for digits)
  c.data.label_smoothing = 0.0 if arg == 'tiny' else 0.1
  c.data.pack = False
  side = c.data.get_ref('image_size') // c.model.get_ref('patch_size')
  c.data.seq_len = side * side + 1   # the patches and the class token
  c.log.samples = 8                  # misclassified eval images shown at each eval
  c.opt.b2 = 0.999
  if arg == 'tiny':
    c.train.update(steps=1500, batch_size=64, eval_every=250, eval_steps=10, log_every=50)
    c.opt.update(learning_rate=2e-3, warmup_steps=100, weight_decay=0.05)
    c.checkpoint.every = 500
  else:
    c.data.crop_scale = 0.08
    c.train.update(batch_size=4096, steps=90000)
    c.opt.update(learning_rate=3e-3, warmup_steps=10000, weight_decay=0.3)
  return c
