"""The config schema shared by every family: every key of every section but `model`, whose keys
and meanings are the fields of `transformer.models.hparams.HParams`.

A family file (`configs/gpt2.py`, `configs/bert.py`, ...) starts from `base_config()` and sets
`model` to one of its named sizes and the objective and data that suit it. Every key here can be
overridden on the command line, e.g. `--config.train.steps=100 --config.model.num_layers=4`;
an unknown key or a value of the wrong type is an error before anything runs.
"""

import ml_collections

from transformer.models.hparams import HParams

def model_config(**overrides):
  """A model ConfigDict: the schema's defaults (transformer/models/hparams.py, the 'tiny'
  decoder) with `overrides` applied; unknown keys are rejected."""
  defaults = HParams.defaults()
  unknown = set(overrides) - set(defaults)
  if unknown:
    raise KeyError(f'unknown model keys {sorted(unknown)}')
  return ml_collections.ConfigDict({**defaults, **overrides})


def sized_model_config(size, **overrides):
  """model_config for the named size `size` of a family: every size but the tiny ones scans over
  its layers (model.scan_layers: compile time flat in depth, the step as fast as unrolled;
  README "Speed"); an explicit scan_layers in `overrides` wins."""
  return model_config(**{'scan_layers': not size.endswith('tiny'), **overrides})


def base_config():
  """Every top-level section with its defaults: tiny decoder-only LM on the embedded corpus."""
  c = ml_collections.ConfigDict()
  c.experiment = 'default'       # runs live in <workdir>/<experiment>/<run_name>/
  c.run_name = ''                # '' : derived from the config name and size
  c.model = model_config()
  c.objective = 'causal_lm'      # mlm | causal_lm | prefix_lm | span_corruption | ul2 | seq2seq |
                                 # classification

  c.data = ml_collections.ConfigDict(dict(
      source='python_stdlib/text',   # a TFDS name[/config], 'text:/glob', or 'jsonl:/glob'
      data_dir='',                   # TFDS data_dir; '' : ~/tensorflow_datasets (or $TFDS_DATA_DIR)
      train_split='train',
      eval_split='validation',
      text_key='',                   # '' : the source's default text field
      inputs_key='',                 # pairs: source field (e.g. 'en')
      targets_key='',                # pairs: target field (e.g. 'de')
      text_pair_key='',              # sentence pairs: the second text's field ('' : none, or
                                     # the source's own: GLUE pair tasks, data/glue.py)
      label_key='',                  # classification label field (a number for regression)
      text_to_text='',               # a GLUE task name: read inputs/targets in T5's format
                                     # (e.g. 'mnli hypothesis: .. premise: ..' -> 'neutral')
      prefix_pairs=False,            # read each text as (prefix, continuation): inputs and
                                     # targets, cut once per text (T5's prefix LM as seq2seq)
      vocab_size=2048,               # SentencePiece vocabulary trained on the train split
      tokenizer='',                  # '' : train one and cache it beside the data; or a .model
                                     # path, or a directory of Hugging Face tokenizer files
      tokenizer_model='unigram',     # unigram | bpe (SentencePiece model type)
      tokenizer_train_examples=20000,
      seq_len=128,                   # length of the (encoder / only) token stream
      targets_len=0,                 # encoder_decoder target stream; 0 : same as seq_len
      pack=True,                     # sequence packing (segment ids + positions)
      shuffle_buffer=1000,
      mlm_probability=0.15,
      noise_density=0.15,            # span corruption
      mean_noise_span_length=3.0,
      denoise_attention='prefix',    # span corruption on a decoder: the corrupted inputs read
                                     # bidirectionally (prefix) or left to right (causal)
      prefix_fraction=0.5,           # prefix_lm: split point as a fraction of each example
      # ul2: the denoisers, (mode R | X | S, mean span, rate), and their probabilities (one
      # each, summing to 1; () : uniform); objectives/ul2.py. The paper's seven:
      ul2_denoisers=(('R', 3.0, 0.15), ('R', 8.0, 0.15), ('X', 3.0, 0.5), ('X', 8.0, 0.5),
                     ('X', 64.0, 0.15), ('X', 64.0, 0.5), ('S', 0.0, 0.5)),
      ul2_proportions=(),
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
      optimizer='adamw',             # adamw | adafactor | muon (AdamW for embeddings, heads,
                                     # norms, biases) | lion | schedule_free_adamw (schedule
                                     # constant; eval at its average): training/optim.py
      learning_rate=3e-3,
      schedule='cosine',             # cosine | linear | rsqrt | constant | wsd (all after a
                                     # linear warmup) | constant_rsqrt (flat for warmup_steps,
                                     # then lr * sqrt(warmup / step): T5)
      warmup_steps=100,
      end_lr_fraction=0.1,
      decay_fraction=0.2,            # wsd: the last fraction of the steps decays (20% matches
                                     # cosine: Hägele et al. 2024); in (0, 1]
      decay_shape='1-sqrt',          # wsd's decay: linear | cosine | 1-sqrt (Hägele et al.)
      weight_decay=0.1,
      b1=0.9,                        # Adam's, Lion's; schedule_free_adamw: its interpolation
      b2=0.95,                       # (Muon's matrices: optax's momentum 0.95)
      eps=1e-8,
      grad_clip_norm=1.0,            # 0 : no clipping
      accumulation_steps=1,          # gradient accumulation micro-steps per update
  ))

  c.mesh = ml_collections.ConfigDict(dict(
      shape=(-1, 1, 1),              # (data, fsdp, tensor); one -1 is filled from the device count
      preset='data',                 # data | fsdp | tensor | fsdp_tensor | data_tensor | expert
                                     # | expert_tensor (MoE experts over data: sharding.py)
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

  # objective=distillation (DistilBERT, Sanh et al. 2019; transformer/objectives/distillation.py).
  # The weights are the Hugging Face distillation example's DistilBERT command
  # (examples/research_projects/distillation/README.md), T its train.py default.
  c.distill = ml_collections.ConfigDict(dict(
      teacher='',                    # a run directory or an import-hf output: an MLM encoder
                                     # with the student's tokenizer
      temperature=2.0,               # soft targets softmax(logits / T), the loss x T^2
      alpha_ce=5.0,                  # soft-target cross-entropy (KL to the teacher)
      alpha_mlm=2.0,                 # the MLM loss
      alpha_cos=1.0,                 # 1 - cos(student, teacher last hidden states)
      restrict_ce_to_mask=False,     # soft targets on the masked positions only; False: every
                                     # real token (Hugging Face's default)
      init_from_teacher=True,        # the student starts from the teacher's embeddings, heads
                                     # and every other layer
  ))

  c.log = ml_collections.ConfigDict(dict(
      samples=2,                     # text samples written at each eval
      sample_length=48,
      attention_images=True,         # one picture per layer and head of an eval example, each eval
      attention_stats=True,          # attention entropy / distance scalars per layer and head
      stability=False,               # per layer, every train.log_every steps: max attention
                                     # logit, query/key norms, residual RMS, gradient, parameter
                                     # and update/parameter norms (monitoring/stability.py)
      hparams_first=(),              # config keys the HParams dashboard lists first (a sweep
                                     # sets its swept keys), e.g. ('opt.learning_rate',)
      # Generation metrics at each eval (objectives that generate, i.e. seq2seq): the first
      # `examples` eval examples are decoded and scored (eval/bleu; eval/rouge1/2/L), and
      # written to <run>/decodes/step_<N>.jsonl. The strategy keys are those of
      # transformer/models/decoding/spec.py:Spec.
      decode=ml_collections.ConfigDict(dict(
          examples=128,              # eval examples decoded; 0 : no generation metrics
          max_new_tokens=0,          # 0 : data.targets_len (or data.seq_len)
          metrics='auto',            # auto (bleu, + rouge for summarisation data) | bleu |
                                     # rouge | bleu,rouge
          strategy='greedy',         # greedy | sample | beam
          temperature=1.0,
          top_k=0,
          top_p=1.0,
          seed=0,
          beam_size=4,
          alpha=0.6,                 # beam length penalty; length_norm gnmt | length (HF)
          length_norm='gnmt',
          early_stopping='never',    # never (exact) | false (HF heuristic) | true
      )),
      # A fixed test list scored example by example at the last step (training/scoring.py):
      # <run>/scores/step_<N>.jsonl and test/* scalars; a comparison's protocol.
      score=ml_collections.ConfigDict(dict(
          file='',                   # jsonl, one example with a unique "id" per line; '' : off
          choices='',                # JSON list of strings: rank them as targets (text-to-text
                                     # classification); '' : decode instead
      )),
      profile_steps=(0, 0),          # (START, COUNT): a jax.profiler trace of COUNT steps from
                                     # step START into the run directory (TensorBoard's profile
                                     # tab), e.g. --config.log.profile_steps=10,5; COUNT 0: off
  ))
  return c


def check_size(arg, sizes, module):
  """Fail with one line naming the valid sizes when `arg` is not one of them."""
  if arg not in sizes:
    raise ValueError(f'{module}: unknown size {arg!r}; choose one of {", ".join(sizes)} '
                     f'(e.g. --config {module.replace(".", "/")}.py:{next(iter(sizes))})')
