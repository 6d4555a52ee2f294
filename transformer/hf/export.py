"""One of our runs (or an import-hf output) as a Hugging Face directory.

  export_run('runs/default/bert_sst2', 'exported/')   # config.json, model.safetensors, tokenizer

The run's config.json gives the model, its checkpoints the latest parameters, and the tokenizer
recorded beside them the tokenizer files: a Hugging Face one as it was imported, our SentencePiece
model converted (data/sp_to_hf.py). architectures.py picks the Hugging Face class (BERT,
DistilBERT, GPT-2, BART, T5 v1.0 / v1.1; *ForSequenceClassification for classification runs) or
refuses a model it cannot express, naming the knob; mapping.py's table turns every parameter
into its tensor (and derived_tensors adds what our model computes instead of storing; an image
model: ViTModel / ViTForImageClassification with its preprocessor_config.json). The
directory is written under a temporary name and renamed at the end, so a refused or failed
export leaves nothing behind.
"""

import json
import os
import re
import shutil
import tempfile

import jax
import ml_collections
import numpy as np
import safetensors.flax
from flax import nnx

from transformer import models
from transformer.data import hf_files
from transformer.data import sp_to_hf
from transformer.data import tokenizer as tokenizer_lib
from transformer.errors import ConfigError
from transformer import objectives
from transformer.hf import architectures, mapping, vit
from transformer.training import checkpoint, setup

KEPT_TENSORS = 'hf_kept.safetensors'   # written by import-hf: tensors our model leaves out
_STACKED = re.compile(r'^(.*/layers)/([^0-9/][^/]*/.*)$')


def _check_target(out):
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ConfigError(f'--to {out}: exists and is not empty; give a new or empty directory')


def read_run(run_dir):
  """(config, checkpoint dir) of a run directory, its checkpoints/ or an import-hf output."""
  ckpt_dir, config_path = setup.pretrained_paths(run_dir)
  if not os.path.isdir(run_dir) or config_path is None:
    raise ConfigError(f'--workdir {run_dir}: no config.json there; give a run directory '
                      '(<workdir>/<experiment>/<run_name>) or an import-hf output')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  return config, ckpt_dir


def unstack_layers(flat):
  """{'x/layers/p': a[L, ...]} -> {'x/layers/<i>/p': a[i]}: the inverse of load.stack_layers."""
  out = {}
  for path, value in flat.items():
    match = _STACKED.match(path)
    if match:
      for i in range(value.shape[0]):
        out[f'{match.group(1)}/{i}/{match.group(2)}'] = value[i]
    else:
      out[path] = value
  return out


def load_params(hp, head, ckpt_dir):
  """Our flat parameters {path: np.ndarray} (layers unstacked) from the latest checkpoint."""
  abstract = nnx.eval_shape(lambda: models.build(hp, head=head, rngs=nnx.Rngs(0)))
  wanted = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
  params, missing, _ = checkpoint.load_pretrained(ckpt_dir, wanted)
  if missing:
    raise ConfigError(f'--workdir {ckpt_dir}: the checkpoint has no {missing[0]} for the '
                      f'{head} model its config.json describes ({len(missing)} missing)')
  flat = {models.path_name(kp): np.asarray(jax.device_get(v))
          for kp, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  return unstack_layers(flat) if hp.scan_layers else flat


def _has_classifier(hp, ckpt_dir):
  abstract = nnx.eval_shape(lambda: models.build(hp, head='classification', rngs=nnx.Rngs(0)))
  wanted = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
  _, missing, _ = checkpoint.load_pretrained(ckpt_dir, {'classifier': wanted['classifier']})
  return not missing


def _kept(run_dir, config):
  """Tensors an import kept aside: beside the run, else beside its checkpoint.init_from."""
  for home in (run_dir, config.checkpoint.get('init_from', '') or ''):
    path = os.path.join(os.path.abspath(os.path.expanduser(home)), KEPT_TENSORS) if home else ''
    if path and os.path.isfile(path):
      with safetensors.safe_open(path, framework='np') as f:
        return {k: f.get_tensor(k) for k in f.keys()}
  return {}


def write_tokenizer(tokenizer, out):
  """The tokenizer files AutoTokenizer reads: a Hugging Face one's own, or ours converted."""
  if tokenizer.kind == 'sentencepiece':
    return sp_to_hf.write_hf_files(tokenizer, out)
  for name in hf_files.TOKENIZER_FILES:
    source = os.path.join(tokenizer.directory, name)
    if os.path.isfile(source):
      shutil.copyfile(source, os.path.join(out, name))
  if tokenizer.built is not None and not os.path.isfile(os.path.join(out, 'tokenizer.json')):
    tokenizer.built.save(os.path.join(out, 'tokenizer.json'))
  return out


def export_run(run_dir, out):
  """Write `run_dir`'s model as a Hugging Face directory `out` (new or empty); returns the
  Hugging Face class name."""
  run_dir = os.path.abspath(os.path.expanduser(os.fspath(run_dir)))
  out = os.path.abspath(os.path.expanduser(os.fspath(out)))
  _check_target(out)
  config, ckpt_dir = read_run(run_dir)
  text = objectives.reads_text(config.get('objective', ''))   # else an image model
  hp = models.HParams.from_config(config.model, vocabulary=text)
  head = getattr(objectives.REGISTRY.get(config.get('objective')), 'head', 'lm')
  arch, hf_class = architectures.architecture(hp, head)
  recorded = tokenizer_lib.recorded_tokenizer(run_dir) if text else None
  if recorded is None and text:
    raise ConfigError(f'--workdir {run_dir}: no tokenizer recorded beside it (tokenizer.model '
                      'or tokenizer/), so the exported model would have no token ids')
  tokenizer = tokenizer_lib.load(recorded) if text else None
  if arch == 'vit' and head == 'classification' and not _has_classifier(hp, ckpt_dir):
    head = 'lm'   # an import of a ViTModel: no classifier, exported as one again
    arch, hf_class = architectures.architecture(hp, head)
  params = load_params(hp, head, ckpt_dir)
  scope = '' if hf_class == 'ViTModel' else architectures.SCOPES[arch]   # a base model: none
  tensors = mapping.export_tensors(arch, params, scope, _kept(run_dir, config))
  tensors.update(mapping.derived_tensors(arch, hp, architectures.SCOPES[arch]))
  values = architectures.hf_config_json(arch, hf_class, hp, tokenizer)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.export-', dir=parent)
  try:
    safetensors.flax.save_file({k: jax.numpy.asarray(v) for k, v in tensors.items()},
                               os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
    with open(os.path.join(tmp, 'config.json'), 'w') as f:
      json.dump(values, f, indent=2, sort_keys=True)
    if tokenizer is not None:
      write_tokenizer(tokenizer, tmp)
    else:   # an image model: its image processor instead
      vit.write_processor(config, tmp)
    if os.path.isdir(out):
      os.rmdir(out)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return hf_class
