"""Our train step against the Hugging Face PyTorch model of the same architecture and shape.

  python experiments/benchmark.py --vs_torch [--families decoder,encoder,encoder_decoder] \
      [--shapes issue,tiny] [--threads 2,1] [--rounds 4] [--steps 3] [--out vs_torch.json]

For each family (decoder = GPT2LMHeadModel vs configs/gpt2.py + causal LM, encoder =
BertForMaskedLM vs configs/bert.py + MLM, encoder_decoder = T5ForConditionalGeneration vs
configs/t5.py + span corruption) and shape ('issue': d_model 256, 4 layers, 4 heads, d_ff 1024,
vocab 8192, batch 16 x 256, T5 targets 64; 'tiny': the family's tiny config as it trains), both
sides train on THE SAME batch: one batch of our data pipeline (fully packed rows of the embedded
corpus), given to the torch model as plain rows (no segment masks: the peer does less work, not
more). float32, AdamW (lr 1e-4, weight decay 0.1), gradient clipping at 1.0, no dropout on either
side; the torch side is eager PyTorch with HF's default attention (`sdpa`). Timing alternates:
each round times --steps steps of ours, then of torch (the order flips every round), every step
waited for; the figures are medians over all rounds, so load on a shared machine hits both.

  tokens_per_s   ours: non-padding tokens of the batch (every stream) / median step time;
                 torch: every slot of the batch / its median step time (the peer is meant to
                 read full rows of a token stream, nanoGPT-style, so all its tokens count)
  ratio          our tokens/s / torch's (> 1: ours is faster); with full packing this is the
                 step-time ratio, with padded rows it also pays for the padding
  ceiling        the ratio our step would reach if everything but its matrix products took no
                 time: torch's step against the wall time of our step's matrix products alone
                 (from a jax.profiler trace of --steps more of our steps, read by
                 transformer.monitoring.op_profile), i.e. what XLA's matmul kernels allow
  mfu            our model FLOPs (transformer.monitoring.accounting) / step time / the measured
                 float32 matmul peak of this process (1 or 2 threads)

--threads 1 re-runs the comparison in a child process pinned to one core (taskset -c 0), with
torch.set_num_threads(1) and XLA's CPU thread pool limited to one thread.
torch and transformers come from requirements-test.txt; the package itself never imports torch.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from experiments.benchmark_configs import FAMILIES, family_config
from transformer import config as config_lib
from transformer.monitoring import accounting, op_profile, perf
from transformer.monitoring.perf import output_stream, tokens_in
from transformer.training import setup, sharding

ISSUE_SHAPE = {'model.d_model': 256, 'model.num_layers': 4, 'model.num_heads': 4,
               'model.head_dim': 64, 'model.d_ff': 1024, 'model.vocab_size': 8192,
               'model.max_len': 256, 'train.batch_size': 16, 'data.seq_len': 256,
               'data.targets_len': 64}
SHAPES = ('issue', 'tiny')
PEER = {'decoder': 'GPT2LMHeadModel', 'encoder': 'BertForMaskedLM',
        'encoder_decoder': 'T5ForConditionalGeneration'}
COMMON = {'opt.optimizer': 'adamw', 'opt.learning_rate': 1e-4, 'opt.weight_decay': 0.1,
          'opt.grad_clip_norm': 1.0, 'opt.accumulation_steps': 1, 'opt.warmup_steps': 0,
          'model.dropout_rate': 0.0,
          'model.attention_dropout_rate': 0.0, 'model.dtype': 'float32'}
_CHILD = 'TRANSFORMER_VS_TORCH_CHILD'


def one_thread_env():
  """The environment of a child that uses one CPU thread in XLA (and torch, set in the child)."""
  env = dict(os.environ, **{_CHILD: '1'}, CUDA_VISIBLE_DEVICES='', JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false '
                      'intra_op_parallelism_threads=1').strip()
  return env


def run_pinned(argv):
  """Re-run this comparison pinned to CPU 0 with one thread; returns the exit code."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run(['taskset', '-c', '0', sys.executable, '-m', 'experiments.benchmark',
                         *argv], env=one_thread_env(), cwd=repo, check=False).returncode


def hf_model(family, hp):
  """The Hugging Face PyTorch model of `hp`'s architecture (random init, dropout 0)."""
  import transformers  # pylint: disable=import-outside-toplevel
  if family == 'decoder':
    cfg = transformers.GPT2Config(
        vocab_size=hp.vocab_size, n_positions=hp.max_len, n_embd=hp.d_model,
        n_layer=hp.num_layers, n_head=hp.num_heads, n_inner=hp.d_ff,
        activation_function='gelu_new', layer_norm_epsilon=hp.norm_eps, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    return transformers.GPT2LMHeadModel(cfg)
  if family == 'encoder':
    cfg = transformers.BertConfig(
        vocab_size=hp.vocab_size, hidden_size=hp.d_model, num_hidden_layers=hp.num_layers,
        num_attention_heads=hp.num_heads, intermediate_size=hp.d_ff, hidden_act='gelu',
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=hp.max_len, type_vocab_size=max(hp.type_vocab_size, 1),
        layer_norm_eps=hp.norm_eps)
    return transformers.BertForMaskedLM(cfg)
  cfg = transformers.T5Config(
      vocab_size=hp.vocab_size, d_model=hp.d_model, d_kv=hp.head_dim, d_ff=hp.d_ff,
      num_layers=hp.num_layers, num_decoder_layers=hp.decoder_layers, num_heads=hp.num_heads,
      relative_attention_num_buckets=hp.relative_buckets,
      relative_attention_max_distance=hp.relative_max_distance, dropout_rate=0.0,
      feed_forward_proj='relu', tie_word_embeddings=True, decoder_start_token_id=0,
      pad_token_id=0, layer_norm_epsilon=hp.norm_eps)
  return transformers.T5ForConditionalGeneration(cfg)


def torch_inputs(family, batch):
  """Our host batch as the keyword arguments of the HF model's forward (with its labels): every
  slot is attended (full rows); padding, if any, is only left out of the loss."""
  import torch  # pylint: disable=import-outside-toplevel
  t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.long)
  if family == 'decoder':
    labels = np.where(batch['targets_segment_ids'] > 0, batch['targets'], -100)
    return {'input_ids': t(batch['targets']), 'labels': t(labels)}
  if family == 'encoder':
    labels = np.where(batch['inputs_labels'] > 0, batch['inputs_labels'], -100)
    return {'input_ids': t(batch['inputs']), 'labels': t(labels)}
  labels = np.where(batch['targets_segment_ids'] > 0, batch['targets'], -100)
  return {'input_ids': t(batch['inputs']), 'labels': t(labels)}


class TorchStep:
  """One AdamW step of the HF model on fixed inputs: forward, backward, clip, update."""

  def __init__(self, family, hp, batch, threads):
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    self.torch = torch
    self.model = hf_model(family, hp).train()
    self.inputs = torch_inputs(family, batch)
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.1)
    self.attention = getattr(self.model.config, '_attn_implementation', 'default')

  def __call__(self):
    loss = self.model(**self.inputs).loss
    loss.backward()
    self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
    self.opt.step()
    self.opt.zero_grad(set_to_none=True)
    return float(loss.detach())


class OurStep:
  """Our compiled train step on one batch of the real pipeline, state carried along."""

  def __init__(self, config):
    run = setup.prepare(config, 'unused')
    self.config, self.hp = run.config, run.trainer.hp
    self.state = run.trainer.init_state()
    self.host_batch = next(run.pipeline('train').iterator(0))
    self.batch = sharding.global_batch(self.host_batch, run.mesh)
    t0 = time.perf_counter()
    self.step_fn = run.trainer.compile(self.state, self.batch)
    self.compile_s = time.perf_counter() - t0

  def __call__(self):
    self.state, metrics = self.step_fn(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))
    return float(metrics['loss'][0]) / max(float(metrics['loss'][1]), 1e-9)


def _timed(fn, steps):
  out = []
  for _ in range(steps):
    t0 = time.perf_counter()
    loss = fn()
    out.append(time.perf_counter() - t0)
    if not np.isfinite(loss):
      raise RuntimeError(f'non-finite loss {loss} in the benchmarked step')
  return out


def products_seconds(step, steps):
  """Wall time per step of the matrix products of `steps` traced calls of `step`."""
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp)
    for _ in range(steps):
      step()
    jax.profiler.stop_trace()
    events = op_profile.op_events(op_profile.trace_file(tmp))
  return op_profile.summarize(events)['by_kind']['matrix products']


def alternate(ours, theirs, rounds, steps):
  """(our step times, torch step times): `rounds` alternations of `steps` timed steps each,
  after one untimed step of each side."""
  ours(), theirs()
  mine, peer = [], []
  for r in range(rounds):
    for side in ((ours, mine), (theirs, peer))[::1 if r % 2 == 0 else -1]:
      side[1].extend(_timed(side[0], steps))
  return mine, peer


def shape_overrides(family, shape):
  """The config keys of `shape` for `family`: the issue's shape, or the tiny config's own batch
  and lengths (the benchmark would otherwise cut them on CPU)."""
  if shape == 'issue':
    out = dict(ISSUE_SHAPE)
    if family != 'encoder_decoder':
      del out['data.targets_len']
    return out
  tiny = config_lib.load_file(f'{FAMILIES[family]}:tiny')
  return {'train.batch_size': tiny.train.batch_size, 'data.seq_len': tiny.data.seq_len,
          'data.targets_len': tiny.data.targets_len}


def compare(family, shape, args, overrides, peak, threads):
  """One row: our step vs the HF torch step of `family` at `shape` with `threads` threads."""
  ours_overrides = {**COMMON, **shape_overrides(family, shape)}
  ours_overrides = {k: str(v) for k, v in ours_overrides.items()}
  spec, config = family_config(family, 'tiny', args, 'data',
                                         {**ours_overrides, **overrides})
  ours = OurStep(config)
  theirs = TorchStep(family, ours.hp, ours.host_batch, threads)
  mine, peer = alternate(ours, theirs, args.rounds, args.steps)
  products_s = products_seconds(ours, args.steps)
  batch = ours.host_batch
  tokens = tokens_in(batch)
  slots = sum(np.size(v) for k, v in batch.items() if k.endswith('_segment_ids'))
  our_s, peer_s = statistics.median(mine), statistics.median(peer)
  flops = accounting.flops_per_token(ours.config)['total_train'] * tokens_in(
      batch, (output_stream(batch),))
  return {'family': family, 'shape': shape, 'config': spec, 'peer': PEER[family],
          'peer_attention': theirs.attention, 'threads': threads,
          'batch': int(ours.config.train.batch_size), 'seq_len': int(ours.config.data.seq_len),
          'targets_len': int(ours.config.data.targets_len), 'd_model': ours.hp.d_model,
          'num_layers': ours.hp.num_layers, 'vocab_size': ours.hp.vocab_size,
          'tokens_per_step': tokens, 'slots_per_step': slots, 'packing_efficiency': tokens / slots,
          'ours_step_s': our_s, 'torch_step_s': peer_s, 'ours_tokens_per_s': tokens / our_s,
          'torch_tokens_per_s': slots / peer_s, 'ratio': (tokens / our_s) / (slots / peer_s),
          'ours_products_s': products_s,
          'ceiling_ratio': (tokens / products_s) / (slots / peer_s),
          'ours_compile_s': ours.compile_s, 'mfu': flops / our_s / peak[0],
          'peak_name': peak[1], 'ours_step_times': mine, 'torch_step_times': peer}


def run(args, overrides):
  """Every (shape, family) row at this process's thread count."""
  threads = 1 if os.environ.get(_CHILD) else 2
  peak = perf.peak_flops('float32')
  rows = []
  for shape in args.shapes:
    for family in args.families:
      print(f'vs torch: {family} {shape}, {threads} thread(s) ...', file=sys.stderr, flush=True)
      rows.append(compare(family, shape, args, overrides, peak, threads))
  return rows


def markdown(rows, meta):
  lines = [f'### Train step vs Hugging Face PyTorch (eager, {rows[0]["peer_attention"]} '
           f'attention) on {meta["device_kind"]}, jax {meta["jax_version"]}, torch '
           f'{meta["torch_version"]}, float32, AdamW',
           f'Same batch on both sides (our fully packed rows); medians of alternated rounds. '
           f'Load average {"/".join(f"{x:.2f}" for x in meta["load_average_start"])} at start, '
           f'{"/".join(f"{x:.2f}" for x in meta["load_average_end"])} at end.', '',
           '| family | shape | threads | batch x len | packing | ours step s | torch step s | '
           'ours tokens/s | torch tokens/s | ratio | ceiling | our MFU |', '|' + '---|' * 12]
  for r in rows:
    length = (f'{r["seq_len"]}+{r["targets_len"]}' if r['family'] == 'encoder_decoder'
              else str(r['seq_len']))
    lines.append(
        f'| {r["family"]} ({r["peer"]}) | {r["shape"]} | {r["threads"]} | {r["batch"]} x '
        f'{length} | {r["packing_efficiency"]:.3f} | {r["ours_step_s"]:.3f} | '
        f'{r["torch_step_s"]:.3f} | {r["ours_tokens_per_s"]:,.0f} | '
        f'{r["torch_tokens_per_s"]:,.0f} | {r["ratio"]:.2f}x | {r["ceiling_ratio"]:.2f}x | '
        f'{100 * r["mfu"]:.1f}% |')
  return '\n'.join(lines)


def meta(load_start):
  import torch  # pylint: disable=import-outside-toplevel
  return {'device_kind': jax.devices()[0].device_kind, 'jax_version': jax.__version__,
          'torch_version': torch.__version__, 'load_average_start': list(load_start),
          'load_average_end': list(os.getloadavg())}
