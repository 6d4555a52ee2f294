"""T5 Table 2 (Raffel et al. 2020, sec. 3.2): architectures x objectives at matched training FLOPs,
compared by their downstream scores after the same fine-tuning.

  ./launch.sh compare experiments/compare_t5_table2.py --workdir runs [--seeds 3] [--parallel 2]
  ./launch.sh compare experiments/compare_t5_table2.py --workdir runs --list     # the plan only
  ./launch.sh compare experiments/compare_t5_table2.py --workdir runs --results  # tables again
  ./launch.sh compare experiments/compare_t5_table2.py --workdir runs --scale small --slurm
  ./launch.sh tensorboard runs/compare_t5_table2         # pretraining and fine-tuning overlaid

Every cell is the T5 recipe (configs/t5.py: pre-norm RMSNorm, relative position bias, ReLU MLP,
Adafactor) at one scale, with the family and objective of its row; the sizes follow the paper's
table: the encoder-decoder has L + L layers (2P parameters), the shared encoder-decoder and the
decoder-only models L layers' worth (P), the decoder-only models read input and target as one
stream (seq_len + targets_len), so a step of the L-layer LM costs about what the
encoder-decoder's does; the comparison then gives every cell the steps that spend the
baseline's training FLOPs (`transformer.summary`'s count). The encoder-only MLM model (BERT) is
the extra row the paper discusses but leaves out of Table 2 because it cannot generate.

Scales: tiny runs on 2 CPU cores (README: Comparing architectures, with its measured time);
small and base are the published T5 sizes (60M, 220M with seq_len 512 / targets 114 and a
2^18-step-sized budget scaled down here to 2^16 and 2^15 steps), meant for accelerators through
--slurm. Tiny pretrains on the embedded corpus (comparisons/corpora.py); small and base on C4
(TFDS `c4/en`, as T5 did), which must be prepared in the TFDS data_dir first (`--corpus
embedded` pretrains them on the embedded text instead). The tokenizer learns from the embedded
text at every scale.
"""

from configs import t5
from transformer.comparisons import classification, generation

BASE = 'configs/t5.py'
EXPERIMENT = 'compare_t5_table2'
BASELINE = 'encdec_denoise'

_TINY_PRETRAIN = {'train.batch_size': 16, 'data.vocab_size': 2048, 'opt.warmup_steps': 20,
                  'train.eval_steps': 2, 'train.log_every': 10, 'log.samples': 0,
                  'log.attention_images': False}
_TINY_FINETUNE = {'train.batch_size': 16, 'train.steps': 60, 'train.eval_steps': 4,
                  'opt.schedule': 'constant', 'opt.learning_rate': 3e-3, 'opt.warmup_steps': 0,
                  'train.log_every': 10, 'log.samples': 0, 'log.attention_images': False}
# The tokenizer learns from the embedded text (a few MB) at every scale: an 8k vocabulary
# (T5: 32k on C4) is what it supports.
_LARGE_PRETRAIN = {'train.batch_size': 128, 'data.vocab_size': 8192, 'train.eval_steps': 10}
_LARGE_FINETUNE = {'train.batch_size': 128, 'train.steps': 2 ** 14, 'train.eval_steps': 8,
                   'opt.schedule': 'constant', 'opt.learning_rate': 1e-3, 'opt.warmup_steps': 0}
SCALES = {
    'tiny': {'size': 'tiny', 'pretrain_steps': 240, 'pretrain': _TINY_PRETRAIN,
             'finetune': _TINY_FINETUNE},
    'small': {'size': 'small', 'pretrain_steps': 2 ** 16, 'corpus': 'c4/en',
              'pretrain': _LARGE_PRETRAIN,
              'finetune': _LARGE_FINETUNE},
    'base': {'size': 'base', 'pretrain_steps': 2 ** 15, 'corpus': 'c4/en',
             'pretrain': _LARGE_PRETRAIN,
             'finetune': _LARGE_FINETUNE},
}

# --lr_grid (comparisons/lr_grid.py): each cell's learning rates chosen on dev data from these
# around the fixed rates: Adafactor pretraining at 1e-2 (configs/t5.py, T5's), fine-tuning at
# 3e-3 (tiny) and 1e-3 (small, base: T5's).
LR_GRID = {'tiny': {'pretrain': (3e-3, 1e-2, 3e-2), 'finetune': (1e-3, 3e-3, 1e-2)},
           'small': {'pretrain': (3e-3, 1e-2, 3e-2), 'finetune': (3e-4, 1e-3, 3e-3)},
           'base': {'pretrain': (3e-3, 1e-2, 3e-2), 'finetune': (3e-4, 1e-3, 3e-3)}}

# Scaling (comparisons/scaling.py): the baseline and the decoder LM also run at these widths
# (the tiny size is 128 wide), each at the baseline's steps, so compute grows with width.
SIZES = {'tiny': {'xs': {'model.d_model': 64, 'model.num_heads': 2, 'model.d_ff': 256},
                  'm': {'model.d_model': 192, 'model.num_heads': 6, 'model.d_ff': 768}}}

# Stream lengths (inputs, targets): the decoder-only models read both as one stream.
LENGTHS = {'tiny': (128, 32), 'small': (512, 114), 'base': (512, 114)}


def cells(scale):
  """T5 Table 2's ten cells (5 architectures x {denoising, LM objective}) and the BERT row.

  The LM objective: seq2seq on (prefix, continuation) pairs for the encoder-decoders and the
  prefix LM (the plan turns 'prefix_lm' on either family into that: the same cut of each
  text, data.prefix_pairs), causal_lm on the decoder. Denoising on a decoder-only model is
  span corruption in one stream, its inputs read left to right (LM) or bidirectionally
  (prefix LM): data.denoise_attention. The L/2 + L/2
  encoder-decoder costs half the baseline's FLOPs per step, so it declares cost 0.5 and runs the
  baseline's steps (T5's "cost M/2")."""
  inputs, targets = LENGTHS[scale]
  half = max(1, t5.SIZES[SCALES[scale]['size']]['num_layers'] // 2)
  enc_dec = {'model.family': 'encoder_decoder', 'data.seq_len': inputs,
             'data.targets_len': targets}
  # sharing needs unrolled layers (scan is the default above tiny)
  shared = {**enc_dec, 'model.share_encoder_decoder': True, 'model.scan_layers': False}
  enc_dec_half = {**enc_dec, 'model.num_layers': half, 'cost': 0.5}
  # one stream [bos] input [sep] target [eos]: the encoder-decoder's two streams + 1
  decoder = {'model.family': 'decoder', 'data.seq_len': inputs + targets + 1}
  denoise, lm = {'objective': 'span_corruption'}, {'objective': 'prefix_lm'}
  sizes = {'sizes': tuple(SIZES.get(scale, {}))}
  return {
      'encdec_denoise': {**enc_dec, **denoise, **sizes},
      'encdec_lm': {**enc_dec, **lm},
      'encdec_shared_denoise': {**shared, **denoise},
      'encdec_shared_lm': {**shared, **lm},
      'encdec_half_denoise': {**enc_dec_half, **denoise},
      'encdec_half_lm': {**enc_dec_half, **lm},
      'decoder_denoise': {**decoder, **denoise, 'data.denoise_attention': 'causal'},
      'decoder_lm': {**decoder, 'objective': 'causal_lm', **sizes},
      'prefix_denoise': {**decoder, **denoise, 'data.denoise_attention': 'prefix'},
      # the encoder-decoder LM's pairs with its cut: source <= inputs - 1, target <= targets - 1
      'prefix_lm': {**decoder, 'objective': 'prefix_lm', 'data.targets_len': targets},
      'encoder_mlm': {'model.family': 'encoder', 'data.seq_len': inputs, 'objective': 'mlm'},
      # controls: the same fine-tuning from random init (what the tasks alone teach)
      'control_encdec': {**enc_dec, **denoise, 'pretrain': False},
      'control_decoder': {**decoder, 'objective': 'causal_lm', 'pretrain': False},
  }


TASKS = {
    'docstring': generation('python_stdlib/docstrings', metrics=('bleu', 'exact_match', 'loss')),
    'translate': generation('gettext_catalogs/en_de', metrics=('bleu', 'loss')),
    'package': classification(classes=6, per_class=400),            # text-to-text, ranked
    'package_head': classification(classes=6, per_class=400, head=True),   # a fresh head
}
