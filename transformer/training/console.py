"""What a training run prints around its steps (process 0 only); the bar is monitoring/progress.py.

Before the first step, one line each for the data, the model and the mesh, then the run:

  data   python_stdlib/text: 7,844 train / 410 eval examples; tokenizer ~/tensorflow_datasets/
         tokenizers/python-stdlib-text_2048_7e97c281e2.model (2,048 pieces); 32 x 128 tokens a
         step, packed, 84.6% of token slots filled
  model  decoder, causal_lm: 691,712 parameters (396,800 non-embedding), 4.33M FLOPs/token
         (train); attention xla (auto: no fused kernel on cpu)
  mesh   {'data': 1, 'fsdp': 1, 'tensor': 1} over 1 cpu device, preset 'data'; --show_sharding ...
  Training runs/default/gpt2_tiny: 600 steps (train step compiled in 3.7s); MFU against ...

(each a single line). The per-parameter sharding table follows the mesh line when the mesh spans
more than one device or with --show_sharding. After the last step: the final eval metrics, where
the logs and checkpoints are, and the command that opens TensorBoard on them.
"""

import os

import jax
import tqdm

from transformer.data import packing
from transformer.monitoring import accounting
from transformer.training.distributed import print_once


def _home(path):
  """`path` with the home directory written as ~ (shorter, and still a path a shell takes)."""
  home = os.path.expanduser('~')
  path = os.fspath(path)
  return '~' + path[len(home):] if home != os.sep and path.startswith(home + os.sep) else path


def tokenizer_text(tokenizer):
  """'<where it lives> (N pieces)' for any tokenizer of the data interface."""
  where = getattr(tokenizer, 'model_path', None) or getattr(tokenizer, 'name', None)
  where = _home(where) if where else type(tokenizer).__name__
  return f'{where} ({tokenizer.vocab_size:,} pieces)'


def data_line(run, train_pipeline, eval_pipeline, first_batch):
  """Source, examples per split, tokenizer, the step's shape and how full its rows are."""
  config = run.config
  evals = f' / {eval_pipeline.epoch_length:,} eval' if config.train.eval_steps else ''
  shard = ' (this process)' if jax.process_count() > 1 else ''
  if run.tokenizer is None and hasattr(run.objective, 'count'):
    return _image_data_line(run, train_pipeline, first_batch, evals + ' images' + shard)
  lengths = ' + '.join(str(n) for n in train_pipeline.stream_lengths.values())
  if len(train_pipeline.stream_lengths) > 1:
    lengths = f'({lengths})'
  return (f'data   {train_pipeline.source.name}: {train_pipeline.epoch_length:,} train{evals} '
          f'examples{shard}; '
          f'tokenizer {tokenizer_text(run.tokenizer)}; {config.train.batch_size} x {lengths} '
          f'tokens a step, {"packed" if train_pipeline.pack else "not packed"}, '
          f'{100 * packing.fill(first_batch):.1f}% of token slots filled')


def _image_data_line(run, pipeline, first_batch, examples):
  """The data line of an image run: the images a step, their patches and how many are real."""
  m, image = run.config.model, first_batch['image']
  images, used, slots = run.objective.count(first_batch)
  cls = ' + a class token' if m.pooling == 'cls' else ''
  return (f'data   {pipeline.source.name}: {pipeline.epoch_length:,} train{examples}; '
          f'{image.shape[0]} x {"x".join(map(str, image.shape[1:]))} images a step '
          f'({(image.shape[1] // m.patch_size) * (image.shape[2] // m.patch_size)} patches of '
          f'{m.patch_size}x{m.patch_size}{cls}), not packed, {100 * used / max(slots, 1):.1f}% '
          f'of patch slots filled')


def model_line(config, counts, flops_per_token, attention=None):
  """`attention` (backend, why) as the trainer chose it (attention.choose)."""
  chosen = f'; attention {attention[0]} ({attention[1]})' if attention else ''
  active = f', {counts["active"]:,} active' if 'active' in counts else ''   # mixture of experts
  return (f'model  {config.model.family}, {config.objective}: {counts["total"]:,} parameters '
          f'({counts["non_embedding"]:,} non-embedding{active}), '
          f'{tqdm.tqdm.format_sizeof(flops_per_token)} FLOPs/{accounting.unit(config)[0]} '
          f'(train){chosen}')


def mesh_line(run, show_table):
  devices, processes = jax.device_count(), jax.process_count()
  where = (f'{devices} {jax.devices()[0].platform} device{"s" if devices > 1 else ""}' +
           (f' ({processes} processes)' if processes > 1 else ''))
  hint = '' if show_table else "; --show_sharding prints every parameter's placement"
  return f"mesh   {dict(run.mesh.shape)} over {where}, preset '{run.config.mesh.preset}'{hint}"


def announce(run, pipelines, first_batch, counts, flops_per_token, *, show_sharding=False):
  """The data, model and mesh lines (and the sharding table when it says something)."""
  show_table = show_sharding or jax.device_count() > 1
  print_once(data_line(run, *pipelines, first_batch))
  print_once(model_line(run.config, counts, flops_per_token, run.trainer.attention))
  print_once(mesh_line(run, show_table))
  if show_table:
    print_once(run.trainer.sharding_table)


def training_line(run, compile_s, peak, peak_name):
  """The last line before the progress: the run directory and length (sweeps wait for it)."""
  return (f'Training {run.dir}: {run.steps} steps (train step compiled in {compile_s:.1f}s); '
          f'MFU against {peak_name} ({peak / 1e12:.2f} TFLOP/s per device)')


def eval_line(step, scalars):
  return f'step {step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in scalars.items())


def finished(run, final):
  """The end of a completed run: final eval metrics, logs, checkpoints, the TensorBoard command."""
  metrics = f' ({", ".join(f"{k} {v:.4f}" for k, v in final.items())})' if final else ''
  experiment = os.path.dirname(run.dir)
  print_once(f'Finished {run.steps} steps{metrics}.\n'
             f'  TensorBoard logs: {run.dir}  (./launch.sh tensorboard {experiment})\n'
             f'  checkpoints:      {run.checkpoint_dir}')
