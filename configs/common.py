"""The config schema shared by every family: one place that names every key.

A family file (`configs/gpt2.py`, `configs/bert.py`, ...) starts from `base_config()` and sets
`model` to one of its named sizes and the objective and data that suit it. Every key here can be
overridden on the command line, e.g. `--config.train.steps=100 --config.model.num_layers=4`;
an unknown key or a value of the wrong type is an error before anything runs.
"""

import ml_collections

# Model hyperparameters. Values here are the 'tiny' decoder defaults; family files overwrite them.
MODEL_DEFAULTS = dict(
    family='decoder',            # 'encoder' | 'decoder' | 'encoder_decoder'
    vocab_size=0,                # 0: take it from the tokenizer (data.vocab_size)
    num_layers=2,                # encoder layers (encoder family) or decoder layers (decoder family)
    num_decoder_layers=0,        # encoder_decoder only; 0: same as num_layers
    d_model=128,
    num_heads=4,
    num_kv_heads=0,              # 0: same as num_heads (multi-head); smaller: grouped-query attention
    head_dim=0,                  # 0: d_model // num_heads
    d_ff=512,
    activation='gelu',           # relu | gelu | gelu_tanh | geglu | swiglu | reglu
    norm='layernorm',            # layernorm | rmsnorm
    norm_eps=1e-5,
    norm_position='pre',         # pre | post
    embed_norm=False,            # a norm right after the embeddings (BERT, BART)
    final_norm=True,             # a norm after the last block (pre-norm models)
    positions='learned',         # learned | sinusoidal | relative | rotary
    max_len=512,                 # rows of a learned position table
    relative_buckets=32,         # T5 relative position bias
    relative_max_distance=128,
    rotary_base=10000.0,
    type_vocab_size=0,           # BERT token-type (segment A/B) embeddings; 0: none
    use_bias=True,               # biases in attention and MLP projections
    scale_attention=True,        # q.k / sqrt(head_dim); T5 folds the scale into its init (False)
    scale_embeddings=False,      # multiply token embeddings by sqrt(d_model) (2017 Transformer)
    tie_embeddings=True,         # output projection shares the token embedding matrix
    scale_tied_logits=False,     # T5 v1.0: decoder output * d_model**-0.5 before tied logits
    lm_head_bias=False,          # a bias on the vocabulary logits (BERT, BART)
    mlm_transform=False,         # BERT: dense + activation + norm before the MLM logits
    num_classes=2,               # classification head
    classifier_pooler=False,     # BERT pooler (dense + tanh on the first token) before classifier
    decoder_start_id=0,          # encoder_decoder: the decoder's first input (T5 0; HF BART 2 = </s>)
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    mlp_dropout=True,            # dropout also after the MLP activation (T5, BART); not BERT, GPT-2
    final_dropout=True,          # dropout also after the final norm (T5); not GPT-2
    dtype='float32',             # compute dtype: float32 | bfloat16 (params stay param_dtype)
    param_dtype='float32',
    attention_impl='auto',       # auto | xla | cudnn | reference
    scan_layers=False,           # nnx.scan over layers: compile time flat in depth
    remat='none',                # none | full | dots (save matmul outputs, recompute the rest)
    init_std=0.02,
)


def model_config(**overrides):
  """A model ConfigDict: the defaults above with `overrides` applied (unknown keys rejected)."""
  unknown = set(overrides) - set(MODEL_DEFAULTS)
  if unknown:
    raise KeyError(f'unknown model keys {sorted(unknown)}')
  return ml_collections.ConfigDict({**MODEL_DEFAULTS, **overrides})


def base_config():
  """Every top-level section with its defaults: tiny decoder-only LM on the embedded corpus."""
  c = ml_collections.ConfigDict()
  c.experiment = 'default'       # runs live in <workdir>/<experiment>/<run_name>/
  c.run_name = ''                # '' : derived from the config name and size
  c.model = model_config()
  c.objective = 'causal_lm'      # mlm | causal_lm | prefix_lm | span_corruption | seq2seq | classification

  c.data = ml_collections.ConfigDict(dict(
      source='python_stdlib/text',   # a TFDS name[/config], 'text:/glob', or 'jsonl:/glob'
      data_dir='',                   # TFDS data_dir; '' : ~/tensorflow_datasets (or $TFDS_DATA_DIR)
      train_split='train',
      eval_split='validation',
      text_key='',                   # '' : the source's default text field
      inputs_key='',                 # pairs: source field (e.g. 'en')
      targets_key='',                # pairs: target field (e.g. 'de')
      label_key='',                  # classification label field
      vocab_size=2048,               # SentencePiece vocabulary trained on the train split
      tokenizer='',                  # '' : train one and cache it beside the data; or a .model path
      tokenizer_model='unigram',     # unigram | bpe (SentencePiece model type)
      tokenizer_train_examples=20000,
      seq_len=128,                   # length of the (encoder / only) token stream
      targets_len=0,                 # encoder_decoder target stream; 0 : same as seq_len
      pack=True,                     # sequence packing (segment ids + positions)
      shuffle_buffer=1000,
      mlm_probability=0.15,
      noise_density=0.15,            # span corruption
      mean_noise_span_length=3.0,
      prefix_fraction=0.5,           # prefix_lm: split point as a fraction of each example
  ))

  c.train = ml_collections.ConfigDict(dict(
      steps=1000,                    # training steps (ignored when tokens > 0)
      tokens=0,                      # duration in tokens (non-padding target tokens), 0 : use steps
      batch_size=32,                 # global batch size, in sequences
      eval_every=200,
      eval_steps=10,                 # batches per eval; 0 : no eval (nor samples)
      seed=0,
      log_every=20,
      z_loss=0.0,                    # auxiliary log(Z)^2 loss weight (PaLM-style); 0 : off
  ))

  c.opt = ml_collections.ConfigDict(dict(
      optimizer='adamw',             # adamw | adafactor
      learning_rate=3e-3,
      schedule='cosine',             # cosine | linear | rsqrt | constant (all after a linear
                                     # warmup) | constant_rsqrt (flat for warmup_steps, then
                                     # lr * sqrt(warmup / step): T5)
      warmup_steps=100,
      end_lr_fraction=0.1,
      weight_decay=0.1,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      grad_clip_norm=1.0,            # 0 : no clipping
      accumulation_steps=1,          # gradient accumulation micro-steps per update
  ))

  c.mesh = ml_collections.ConfigDict(dict(
      shape=(-1, 1, 1),              # (data, fsdp, tensor); one -1 is filled from the device count
      preset='data',                 # data | fsdp | tensor | fsdp_tensor | data_tensor
      rules=(),                      # extra (logical axis, mesh axis or None) pairs over the
                                     # preset, e.g. --config.mesh.rules="(('mlp', 'tensor'),)"
  ))

  c.checkpoint = ml_collections.ConfigDict(dict(
      every=200,
      keep=3,
      keep_best=True,
      async_save=True,
      init_from='',                  # a checkpoint dir (ours or from import-hf): weights, fresh head
  ))

  c.log = ml_collections.ConfigDict(dict(
      samples=2,                     # text samples written at each eval
      sample_length=48,
      attention_images=True,
  ))
  return c


def check_size(arg, sizes, module):
  """Fail with one line naming the valid sizes when `arg` is not one of them."""
  if arg not in sizes:
    raise ValueError(f'{module}: unknown size {arg!r}; choose one of {", ".join(sizes)} '
                     f'(e.g. --config {module.replace(".", "/")}.py:{next(iter(sizes))})')
