"""The ablation knobs beside the schema (issue 27): their values, the local/global layer pattern
and their one-line validation (HParams.validate calls `validate`).

  model.positions          ... | alibi (Press et al. 2022) | none (NoPE: decoder family only)
  model.qk_norm            none | rmsnorm | layernorm on each head's queries and keys
  model.attention_softcap  0 off; attention logits -> cap * tanh(logits / cap) (Gemma 2)
  model.local_window       0 off; w: a query sees keys less than w positions away (causal:
                           i - w < j <= i; bidirectional: |i - j| < w), self-attention only
  model.attention_pattern  which layers are local: 'local' (all), 'K:M' (K local then M global,
                           repeated: Gemma 2 '1:1', Gemma 3 '5:1'), or a cycle of l/g letters
                           ('gll': ModernBERT's global layer every third, first)
  model.parallel_block     attention and MLP read one norm output and both add to the residual
  model.logit_softcap      0 off; output logits -> cap * tanh(logits / cap)
  model.moe_*              mixture-of-experts MLPs (models/moe.py): moe_experts (0 off),
                           moe_top_k, moe_every, moe_capacity_factor (0: dropless),
                           moe_shared_experts, and the weights moe_aux_loss / moe_z_loss
"""

import math
import re

QK_NORMS = ('none', 'rmsnorm', 'layernorm')
PATTERN_HELP = ("use local, K:M (K local layers then M global, repeated, e.g. 5:1) or a cycle of "
                "l/g letters (e.g. gll)")


def local_layers(pattern, num_layers):
  """Per layer, True where it attends locally under `pattern`; None when `pattern` is not one."""
  match = re.fullmatch(r'(\d+):(\d+)', pattern)
  if pattern == 'local':
    cycle = 'l'
  elif match and int(match.group(1)) > 0:
    cycle = 'l' * int(match.group(1)) + 'g' * int(match.group(2))
  elif re.fullmatch(r'[lg]+', pattern):
    cycle = pattern
  else:
    return None
  return tuple(cycle[i % len(cycle)] == 'l' for i in range(num_layers))


def layer_windows(hp, num_layers):
  """The self-attention window of each of `num_layers` layers (0: global attention)."""
  if not hp.local_window:
    return (0,) * num_layers
  return tuple(hp.local_window if local else 0
               for local in local_layers(hp.attention_pattern, num_layers))


def validate(hp):
  """The knobs above, each problem one ConfigError naming the key (HParams._bad)."""
  if hp.qk_norm not in QK_NORMS:
    hp._bad('qk_norm', f'choose one of {", ".join(QK_NORMS)}')
  for key in ('attention_softcap', 'logit_softcap'):
    value = getattr(hp, key)
    if not (math.isfinite(value) and value >= 0):
      hp._bad(key, 'must be a finite number >= 0 (0: off; Gemma 2 uses 50 for attention, '
              '30 for the logits)')
  if hp.local_window < 0:
    hp._bad('local_window', 'must be >= 0 (0: every layer attends globally)')
  if local_layers(hp.attention_pattern, 1) is None:
    hp._bad('attention_pattern', f'not a layer pattern; {PATTERN_HELP}')
  if hp.attention_pattern != 'local' and not hp.local_window:
    hp._bad('attention_pattern', 'only applies with model.local_window > 0; set the window too')
  if hp.positions == 'none' and hp.family != 'decoder':
    hp._bad('positions', f'NoPE needs a causal stack, and model.family={hp.family} has a '
            'bidirectional encoder that cannot tell positions apart; use model.family=decoder '
            'or other positions (alibi, rotary, ...)')
  if hp.parallel_block and hp.norm_position != 'pre':
    hp._bad('parallel_block', 'attention and MLP read one pre-norm output; set '
            'model.norm_position=pre')
  validate_moe(hp)


def validate_moe(hp):
  """The mixture-of-experts keys, each problem one line naming the key (and the other key)."""
  for key in ('moe_experts', 'moe_shared_experts'):
    if getattr(hp, key) < 0:
      hp._bad(key, 'must be >= 0 (0: none)')
  for key in ('moe_capacity_factor', 'moe_aux_loss', 'moe_z_loss'):
    value = getattr(hp, key)
    if not (math.isfinite(value) and value >= 0):
      hp._bad(key, 'must be a finite number >= 0 (capacity 0: dropless; Switch uses 1.25 '
              'capacity, 0.01 aux loss; ST-MoE 0.001 z-loss)')
  if hp.moe_every < 1:
    hp._bad('moe_every', 'must be >= 1 (1: every MLP is MoE, 2: every other one)')
  if not hp.moe_experts:
    return
  if not 1 <= hp.moe_top_k <= hp.moe_experts:
    hp._bad('moe_top_k', f'must be between 1 and model.moe_experts={hp.moe_experts}; lower '
            'it or add experts')
  for key in ('num_layers', 'num_decoder_layers'):
    layers = getattr(hp, key) or hp.num_layers
    if hp.moe_every > layers:
      hp._bad('moe_every', f'exceeds model.{key}={layers}, so no layer would be MoE; '
              'lower it')
    if hp.scan_layers and layers % hp.moe_every:
      hp._bad('moe_every', f'must divide model.{key}={layers} when model.scan_layers=True '
              '(a scanned unit holds one dense/MoE period); change one or unroll')
  if hp.share_encoder_decoder:
    hp._bad('share_encoder_decoder', 'cannot share MoE layers between encoder and decoder '
            '(each records its own routing statistics); set it False or model.moe_experts=0')
