"""One knob across sizes: which position encoding should a small decoder-only model use?

The template for asking one question of your own with `./launch.sh compare`: every cell is the
same model (configs/t5.py's recipe as a decoder-only causal LM) but for ONE variable, here
`model.positions`; every cell runs at three widths (SIZES), so the answer comes with how it
moves with compute (comparisons/scaling.py) instead of one point. Everything else - data,
tokenizer, budget, fine-tuning, test examples, statistics - is the comparison's protocol
(comparisons/tasks.py).

  ./launch.sh compare experiments/compare_positions.py --workdir runs --list
  ./launch.sh compare experiments/compare_positions.py --workdir runs --seeds 3 --parallel 2

To ask another question, copy this file and change VARIABLE and VALUES (e.g. 'model.norm':
('layernorm', 'rmsnorm'), 'model.activation': ('gelu', 'swiglu')); the cells, sizes and the
baseline follow from them.
"""

from transformer.comparisons import generation

BASE = 'configs/t5.py'
EXPERIMENT = 'compare_positions'
VARIABLE = 'model.positions'
# T5's relative bias first (the baseline), then ALiBi (Press et al. 2022) and NoPE (no
# positions: the causal mask alone; decoder-only, which every cell here is)
VALUES = ('relative', 'rotary', 'learned', 'alibi', 'none')
BASELINE = VALUES[0]

_PRETRAIN = {'train.batch_size': 16, 'data.vocab_size': 2048, 'opt.warmup_steps': 20,
             'train.eval_steps': 2, 'train.log_every': 10, 'log.samples': 0,
             'log.attention_images': False}
_FINETUNE = {'train.batch_size': 16, 'train.steps': 60, 'train.eval_steps': 2,
             'opt.schedule': 'constant', 'opt.learning_rate': 3e-3, 'opt.warmup_steps': 0,
             'train.log_every': 10, 'log.samples': 0, 'log.attention_images': False}
SCALES = {'tiny': {'size': 'tiny', 'pretrain_steps': 200, 'pretrain': _PRETRAIN,
                   'finetune': _FINETUNE}}
SIZES = {'tiny': {'xs': {'model.d_model': 64, 'model.num_heads': 2, 'model.d_ff': 256},
                  'm': {'model.d_model': 192, 'model.num_heads': 6, 'model.d_ff': 768}}}

_DECODER = {'model.family': 'decoder', 'objective': 'causal_lm', 'data.seq_len': 161,
            'model.max_len': 256, 'sizes': ('xs', 'm')}
CELLS = {value: {**_DECODER, VARIABLE: value} for value in VALUES}

TASKS = {'docstring': generation('python_stdlib/docstrings', metrics=('bleu', 'loss'))}
