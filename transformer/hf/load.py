"""`from_pretrained`: a local Hugging Face checkpoint -> (our ConfigDict, our nnx model).

The steps: config.json -> the family's base config with `model` from config.json
(hf_config.py); read every tensor (reader.py); map them onto our parameter paths (mapping.py);
stack per-layer entries when the model scans over layers; check that every parameter of the
built model got exactly one tensor of its shape; write them into the model.
"""

import collections
import dataclasses
import logging
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer import config as config_lib
from transformer import models
from transformer.errors import ConfigError
from transformer.hf import hf_config, mapping, reader, tokenizer, vit

log = logging.getLogger(__name__)

_LAYER = re.compile(r'^(.*/layers)/(\d+)/(.*)$')


def build_config(c: hf_config.HFConfig, arch, weights: reader.Weights, *, dtype='float32',
                 **model_overrides):
  """Our full ConfigDict: the family's preset with `model` set from config.json and overrides."""
  spec, fields = hf_config.ARCHITECTURES[arch](c, weights)
  config = config_lib.load_file(spec)
  unknown = sorted(set(model_overrides) - set(models.HParams.defaults()))
  if unknown:
    raise ConfigError(f'from_pretrained: unknown model override {unknown[0]!r}; valid keys are '
                      'config.model keys (transformer/models/hparams.py)')
  # Unrolled unless asked (the per-layer layout of import-hf), whatever the preset's default.
  config.model.update(dict(fields, dtype=dtype, param_dtype=dtype,
                           **{'scan_layers': False, **model_overrides}))
  config.run_name = f'hf_{arch}'
  return config


def stack_layers(flat: dict) -> dict:
  """{'x/layers/<i>/p': a_i} -> {'x/layers/p': stack_i(a_i)}: the nnx.scan parameter layout."""
  out, groups = {}, collections.defaultdict(dict)
  for path, value in flat.items():
    match = _LAYER.match(path)
    if match:
      groups[(match.group(1), match.group(3))][int(match.group(2))] = value
    else:
      out[path] = value
  for (stack, rest), per_layer in groups.items():
    out[f'{stack}/{rest}'] = np.stack([per_layer[i] for i in sorted(per_layer)])
  return out


def _set(pure: dict, keys, value):
  for k in keys[:-1]:
    pure = pure[k]
  pure[keys[-1]] = value


RNG_SEEDS = {'params': 0, 'dropout': 1}  # the streams of nnx.Rngs(params=0, dropout=1)


def _concrete_rng(var):
  """A fresh value for a non-parameter variable of an abstract model (its RNG streams).

  Scanned layers hold stacked streams: keys and counts with a leading [num_layers] axis.
  """
  shape = tuple(var.get_value().shape)
  if isinstance(var, nnx.RngKey):
    key = jax.random.key(RNG_SEEDS.get(var.get_metadata('tag'), 0))
    return jax.random.split(key, shape) if shape else key
  if isinstance(var, nnx.RngCount):
    return jnp.zeros(shape, jnp.uint32)
  raise TypeError(f'cannot initialise {type(var).__name__} of an abstract model')


def build_with(hp: models.HParams, flat: dict, label: str):
  """Our model (head 'lm') holding the tensors `flat` {path: array}; every path checked.

  The model is built abstractly (nnx.eval_shape): random init of every parameter would compile
  one XLA program per distinct shape and cost more than the import itself.
  """
  abstract = nnx.eval_shape(lambda: models.build(hp, head='lm', rngs=nnx.Rngs(**RNG_SEEDS)))
  graphdef, state = nnx.split(abstract)
  pure = nnx.to_pure_dict(state)
  remaining = dict(flat)
  for keys, var in nnx.to_flat_state(state):
    path = models.path_name(keys)
    if not isinstance(var, nnx.Param):
      _set(pure, keys, _concrete_rng(var))
      continue
    if path not in remaining:
      raise ConfigError(f'{label}: no tensor maps to our parameter {path}; this checkpoint '
                        'variant is not supported')
    value, want = remaining.pop(path), var.get_value()
    if tuple(value.shape) != tuple(want.shape):
      raise ConfigError(f'{label}: the tensor for {path} has shape {tuple(value.shape)}, the model '
                        f'built from config.json needs {tuple(want.shape)}')
    _set(pure, keys, jnp.asarray(value, dtype=want.dtype))
  if remaining:
    raise ConfigError(f'{label}: converted tensor {sorted(remaining)[0]} has no place in the '
                      'model built from config.json')
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def param_shapes(hp: models.HParams, head='lm'):
  """{path: shape} of the parameters of our model `hp` with `head`, layers unstacked."""
  flat_hp = dataclasses.replace(hp, scan_layers=False)
  abstract = nnx.eval_shape(lambda: models.build(flat_hp, head=head,
                                                 rngs=nnx.Rngs(**RNG_SEEDS)))
  return {models.path_name(keys): tuple(var.get_value().shape)
          for keys, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}


def _other_head_shapes(arch, hp, weights):
  """Shapes of mapping.OTHER_HEADS parameters whose tensors the file has (BERT's pooler)."""
  wanted = mapping.OTHER_HEADS.get(arch, ())
  if not wanted:
    return {}
  shapes = param_shapes(dataclasses.replace(hp, classifier_pooler=True), 'classification')
  return {p: shapes[p] for p in wanted if weights.has(mapping.rule_for(arch, p)[1])}


def _import(path, dtype, model_overrides):
  """(config, model with head 'lm', {path: array} of other heads' pretrained parameters,
  {name: array} of the tensors an export must give back)."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  c = hf_config.HFConfig(reader.read_config(path), os.path.join(path, 'config.json'))
  arch = hf_config.model_type(c)
  tensors, label = reader.read_weights(path)
  weights = reader.Weights(tensors, label, hf_config.WEIGHT_PREFIXES[arch])
  config = build_config(c, arch, weights, dtype=dtype, **model_overrides)
  if arch == 'vit':   # the image processor's size, mean and std (hf/vit.py)
    vit.apply_processor(config, path)
  hp = models.HParams.from_config(config.model, vocabulary=bool(config.model.vocab_size))
  try:
    shapes = param_shapes(hp)
    flat = mapping.import_tensors(arch, weights, shapes)
    other = mapping.import_tensors(arch, weights, _other_head_shapes(arch, hp, weights))
  except ConfigError as e:
    raise ConfigError(str(e) if str(e).startswith(label) else f'{label}: {e}') from None
  if arch in ('t5', 'mt5') and not hp.tie_embeddings and hf_config.t5_head(c, weights)[1]:
    flat['lm_head/kernel/kernel'] = flat['lm_head/kernel/kernel'] * hp.d_model ** -0.5  # scaled
  if hp.scan_layers:
    flat = stack_layers(flat)
  model = build_with(hp, flat, label)
  unused = sorted(set(weights.tensors) - weights.used)
  if unused:
    log.info('%s: %d tensors not used (e.g. %s)', label, len(unused), unused[:3])
  other = {k: jnp.asarray(v, dtype=hp.params_dtype) for k, v in other.items()}
  return config, model, other, mapping.kept_rows(arch, weights, shapes)


def from_pretrained(path, *, dtype='float32', with_tokenizer=False, **model_overrides):
  """Loads a local Hugging Face checkpoint directory -> (config, model with head 'lm'), or
  (config, model, tokenizer) `with_tokenizer` (the checkpoint's own, hf/tokenizer.py).

  Args:
    path: a directory with config.json and model.safetensors (or sharded safetensors, or
      pytorch_model.bin); model_type bert, distilbert, gpt2, bart, t5, mt5 or vit (the 'lm'
      model of an image model is its encoder's features, Hugging Face's ViTModel).
    dtype: compute and parameter dtype of the model ('float32', 'bfloat16', 'float16').
    **model_overrides: any config.model key, e.g. scan_layers=True, attention_impl='reference',
      dropout_rate=0.0.

  Raises:
    ConfigError: one line naming the file or config.json field that is missing, unsupported,
      malformed (a truncated weights file, a value of the wrong JSON type) or inconsistent with
      the weights.
  """
  config, model, _, _ = _import(path, dtype, model_overrides)
  if with_tokenizer:
    return config, model, tokenizer.read_tokenizer(path, config.model.vocab_size)
  return config, model


def import_params(path, *, dtype='float32', **model_overrides):
  """(config, nested parameter dict, kept tensors) for a checkpoint that `init_from` reads: the
  parameters of `from_pretrained`'s model plus the pretrained parameters of other heads (BERT's
  pooler at classifier/pooler, loaded by a classification model with model.classifier_pooler),
  and {name: array} of the tensors the model leaves out that an export gives back."""
  config, model, other, kept = _import(path, dtype, model_overrides)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  for name, value in other.items():
    node = params
    *parents, leaf = name.split('/')
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return config, params, kept
