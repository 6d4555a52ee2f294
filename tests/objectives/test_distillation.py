"""objective=distillation: DistilBERT's loss (soft targets at T as Hugging Face's KLDivLoss x T^2,
the MLM loss, the cosine between last hidden states), the student from every other teacher
layer, and a teacher that does not fit refused in one line naming the key, nothing written."""

import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from transformer import config as config_lib
from transformer import models, objectives
from transformer.errors import ConfigError
from transformer.objectives import mlm
from transformer.training import loop, setup, sharding
from transformer.training.trainer import Trainer

from tests.e2e.sharding_helper import FakeTokenizer
from tests.hf import builders
from tests.hf.test_export import make_run, sp_tokenizer  # noqa: F401  (a fixture)

torch = pytest.importorskip('torch')

TINY = {'model.d_model': '32', 'model.num_heads': '4', 'model.d_ff': '64', 'model.max_len': '32',
        'model.vocab_size': '100', 'data.seq_len': '16', 'train.batch_size': '4',
        'model.dropout_rate': '0.0', 'model.attention_dropout_rate': '0.0'}


def _config(layers=2, **overrides):
  return config_lib.load('configs/bert.py:tiny', {
      **TINY, 'objective': 'distillation', 'distill.teacher': 'teacher', 'model.num_layers':
      str(layers), **overrides})


def _split(model):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def _with_teacher(student_config, teacher_layers=4, seed=1, **teacher_model):
  """(objective, teacher model) for a random teacher encoder of `teacher_layers` layers."""
  obj = objectives.get(student_config, FakeTokenizer())
  hp = models.HParams.from_config({**student_config.model, 'num_layers': teacher_layers,
                                   **teacher_model})
  teacher = models.build(hp, head='lm', rngs=nnx.Rngs(seed))
  obj.set_teacher(hp, *_split(teacher))
  return obj, teacher


def _batch(obj, rows=4, seed=0):
  rng = np.random.default_rng(seed)
  feats = [obj.features({'text': rng.integers(39, 100, 14)}, rng) for _ in range(rows)]
  batch = {k: np.stack([f[k] for f in feats]) for k in feats[0]}
  batch['inputs_segment_ids'] = np.ones_like(batch['inputs'])
  batch['inputs_positions'] = np.broadcast_to(np.arange(16, dtype=np.int32), (rows, 16))
  return {k: jnp.asarray(v) for k, v in batch.items()}


def _ratio(metrics, name):
  total, count = metrics[name]
  return float(total) / float(count)


def test_a_student_equal_to_its_teacher_only_has_the_mlm_loss():
  obj, teacher = _with_teacher(_config(), teacher_layers=2)
  batch = _batch(obj)
  loss, metrics = nnx.jit(obj.loss_and_metrics)(teacher, batch)
  plain, plain_metrics = nnx.jit(lambda m, b: mlm.MaskedLM.loss_and_metrics(obj, m, b))(
      teacher, batch)
  assert abs(_ratio(metrics, 'distill_kl')) < 1e-5 and abs(_ratio(metrics, 'distill_cos')) < 1e-5
  np.testing.assert_allclose(float(loss), 2.0 * float(plain), rtol=1e-5)   # alpha_mlm = 2
  np.testing.assert_allclose(_ratio(metrics, 'loss'), _ratio(plain_metrics, 'loss'), rtol=1e-6)


@pytest.mark.parametrize('restrict', [False, True])
def test_losses_equal_hugging_face_distiller_terms(restrict):
  """KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T)) * T^2 over the selected positions,
  CosineEmbeddingLoss over real tokens, and the weighted sum with alphas 5, 2, 1."""
  config = _config(**{'distill.restrict_ce_to_mask': str(restrict), 'distill.temperature': '3.0'})
  obj, teacher = _with_teacher(config)
  student = models.build(obj.student_hp, head='lm', rngs=nnx.Rngs(7))
  batch = _batch(obj)
  loss, metrics = nnx.jit(obj.loss_and_metrics)(student, batch)
  args = (batch['inputs'], batch['inputs_segment_ids'], batch['inputs_positions'])
  encode = nnx.jit(lambda m: (m.encode(*args), m.mlm_head(m.encode(*args), m.token_embed)))
  (h_s, s_logits), (h_t, t_logits) = (jax.tree.map(np.asarray, encode(m))
                                      for m in (student, teacher))
  chosen = np.asarray(batch['inputs_labels']) > 0
  select = chosen if restrict else np.ones_like(chosen)
  s, t = torch.tensor(s_logits[select]), torch.tensor(t_logits[select])
  kl = torch.nn.KLDivLoss(reduction='batchmean')(
      torch.log_softmax(s / 3.0, -1), torch.softmax(t / 3.0, -1)) * 9.0
  d = h_s.shape[-1]
  cos = torch.nn.CosineEmbeddingLoss()(torch.tensor(h_s.reshape(-1, d)),
                                       torch.tensor(h_t.reshape(-1, d)), torch.ones(h_s.size // d))
  mlm_loss = torch.nn.functional.cross_entropy(
      torch.tensor(s_logits[chosen]),
      torch.tensor(np.asarray(batch['inputs_labels'])[chosen], dtype=torch.long))
  np.testing.assert_allclose(_ratio(metrics, 'distill_kl'), float(kl), rtol=1e-4)
  np.testing.assert_allclose(_ratio(metrics, 'distill_cos'), float(cos), rtol=1e-4)
  np.testing.assert_allclose(_ratio(metrics, 'loss'), float(mlm_loss), rtol=1e-4)
  np.testing.assert_allclose(float(loss), 5 * float(kl) + 2 * float(mlm_loss) + float(cos),
                             rtol=1e-4)


def test_only_the_student_gets_gradients():
  obj, _ = _with_teacher(_config())
  student = models.build(obj.student_hp, head='lm', rngs=nnx.Rngs(7))
  graphdef, params, rest = _split(student)
  batch = _batch(obj)
  grads = jax.jit(jax.grad(
      lambda p: obj.loss_and_metrics(nnx.merge(graphdef, p, rest), batch)[0]))(params)
  norms = [float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and sum(n > 0 for n in norms) > len(norms) // 2


def _large_constants(hlo):
  """The constants of more than 256 elements in a compiled program's HLO text."""
  shapes = re.findall(r'= \w+\[([\d,]*)\]\S* constant\(', hlo)
  return [s for s in shapes if math.prod(int(d) for d in s.split(',') if d) > 256]


@pytest.mark.slow   # four compiles, the closed-over one slow to fold (~20 s on 2 cores)
def test_the_teacher_is_an_argument_of_the_steps_not_a_constant_compiled_in():
  """Trainer.compile passes the teacher's parameters to the step (Objective.frozen); closed
  over, jit compiled them into the program as constants, the whole teacher in every
  compile. The step and the eval step compute what the closed-over teacher gives."""
  config = _config(layers=1)
  obj, _ = _with_teacher(config, teacher_layers=2)
  trainer = Trainer.create(config, obj, sharding.make_mesh(config.mesh, jax.devices()[:1]),
                           total_steps=10)
  state, batch = trainer.init_state(), _batch(obj)
  closed_over = jax.jit(trainer.train_step).lower(state, batch).compile()
  assert _large_constants(closed_over.as_text())   # the teacher's embedding, its layers, ...
  want_state, want = closed_over(state, batch)
  want_eval = jax.jit(trainer.eval_step)(state['params'], batch)
  step = trainer.compile(state, batch)
  assert _large_constants(step.as_text()) == []
  got_eval = trainer.eval_fn()(state['params'], batch)
  got_state, got = step(state, batch)   # donates `state`
  for name in ('distill_kl', 'distill_cos', 'loss', 'distill_total'):
    np.testing.assert_allclose(_ratio(got, name), _ratio(want, name), rtol=1e-4)
    np.testing.assert_allclose(_ratio(got_eval, name), _ratio(want_eval, name), rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               got_state['params'], want_state['params'])


def _flat(params):
  return {models.path_name(kp): np.asarray(v)
          for kp, v in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.mark.slow
@pytest.mark.parametrize('student_scan,teacher_scan',
                         [(False, False), (True, False), (False, True)])
def test_the_student_starts_from_every_other_teacher_layer(student_scan, teacher_scan):
  config = _config(**{'model.scan_layers': str(student_scan)})
  obj, teacher = _with_teacher(config, teacher_layers=4, scan_layers=teacher_scan)
  student = models.build(obj.student_hp, head='lm', rngs=nnx.Rngs(7))
  started = obj.init_student(_split(student)[1])
  # Its own buffers: the train step donates the student's state, never the teacher's arrays.
  teacher_buffers = {x.unsafe_buffer_pointer() for x in jax.tree.leaves(obj.teacher[2])}
  assert not teacher_buffers & {x.unsafe_buffer_pointer() for x in jax.tree.leaves(started)}
  got = _flat(started)
  want = _flat(_split(teacher)[1])
  if teacher_scan:
    want = {**{k: v for k, v in want.items() if '/layers/' not in k},
            **{k.replace('/layers/', f'/layers/{i}/'): v[i] for k, v in want.items()
               if '/layers/' in k for i in range(4)}}
  if student_scan:
    got = {**{k: v for k, v in got.items() if '/layers/' not in k},
           **{k.replace('/layers/', f'/layers/{i}/'): v[i] for k, v in got.items()
              if '/layers/' in k for i in range(2)}}
  assert 'token_type_embed/embedding' in got and 'encoder/layers/1/mlp/wi/kernel' in got
  for path, value in got.items():
    source = path.replace('/layers/1/', '/layers/2/')   # student layer i <- teacher layer 2i
    np.testing.assert_array_equal(value, want[source], err_msg=path)


def test_a_wider_or_deeper_student_is_refused_naming_the_key():
  obj, _ = _with_teacher(_config(**{'model.d_ff': '128'}), d_ff=64)
  student = models.build(obj.student_hp, head='lm', rngs=nnx.Rngs(7))
  with pytest.raises(ConfigError, match='distill.init_from_teacher=True.*d_ff'):
    obj.init_student(_split(student)[1])
  obj, _ = _with_teacher(_config(layers=4), teacher_layers=2)
  with pytest.raises(ConfigError, match='more layers'):
    obj.init_student(_split(models.build(obj.student_hp, head='lm', rngs=nnx.Rngs(7)))[1])


def test_a_teacher_with_another_vocabulary_size_is_refused():
  with pytest.raises(ConfigError) as e:
    _with_teacher(_config(), vocab_size=120)
  message = str(e.value)
  assert '\n' not in message and 'distill.teacher' in message and 'model.vocab_size' in message


@pytest.mark.parametrize('key,value,needle', [
    ('distill.temperature', '0.0', '`distill.temperature=0.0`'),
    ('distill.alpha_cos', '-1.0', '`distill.alpha_cos=-1.0`'),
])
def test_bad_distill_keys_are_one_line(key, value, needle):
  with pytest.raises(ConfigError) as e:
    objectives.get(_config(**{key: value}), FakeTokenizer())
  assert '\n' not in str(e.value) and needle in str(e.value)


# --- with a teacher run on disk: setup.prepare loads it -----------------------------------------

def _student(tmp_path, teacher_dir, tokenizer_path, **overrides):
  text = tmp_path / 'train.txt'
  text.write_text('\n'.join(f'line {i} of some text to read' for i in range(200)))
  return config_lib.load('configs/bert.py:tiny', {
      **{k: v for k, v in TINY.items() if k != 'model.vocab_size'}, 'objective': 'distillation',
      'model.num_layers': '1', 'model.type_vocab_size': '0', 'distill.teacher': str(teacher_dir),
      'data.source': f'text:{text}', 'data.tokenizer': str(tokenizer_path), **overrides})


@pytest.mark.slow   # ~15 s alone, a minute on the shared 2 cores
def test_a_teacher_run_is_loaded_and_the_student_starts_from_it(tmp_path, sp_tokenizer):
  teacher_dir = tmp_path / 'teacher'
  _, teacher = make_run(str(teacher_dir), 'configs/bert.py:tiny', sp_tokenizer, d_model=32,
                        num_heads=4, d_ff=64, max_len=32)
  run = setup.prepare(_student(tmp_path, teacher_dir, teacher_dir / 'tokenizer.model'),
                      str(tmp_path / 'runs'))
  state = loop.restore_or_init(run, None)[0]
  np.testing.assert_array_equal(
      np.asarray(state['params']['encoder']['layers'][0]['mlp']['wi']['kernel']),
      np.asarray(teacher.encoder.layers[0].mlp.wi.kernel.value))
  batch = next(run.pipeline('train').iterator((0, 0)))
  _, metrics = jax.jit(run.trainer.train_step)(state, batch)
  assert np.isfinite(_ratio(metrics, 'distill_total')) and _ratio(metrics, 'distill_kl') > 0


@pytest.mark.parametrize('case', ['other_tokenizer', 'empty', 'not_a_run'])
def test_bad_teachers_are_refused_in_one_line_and_nothing_is_written(tmp_path, sp_tokenizer,
                                                                    case):
  teacher_dir = tmp_path / 'teacher'
  make_run(str(teacher_dir), 'configs/bert.py:tiny', sp_tokenizer, d_model=32, num_heads=4,
           d_ff=64, max_len=32)
  other = builders.bert_tokenizer(str(tmp_path / 'wordpiece'))   # a WordPiece vocabulary
  tokenizer, where, needles = {
      'other_tokenizer': (other, teacher_dir, (f'`distill.teacher={teacher_dir}`',
                                               'another vocabulary', '--config.data.tokenizer=')),
      'empty': (teacher_dir / 'tokenizer.model', '', ('`distill.teacher`: empty',)),
      'not_a_run': (teacher_dir / 'tokenizer.model', tmp_path / 'wordpiece',
                    (f'`distill.teacher={tmp_path / "wordpiece"}`', 'no run there')),
  }[case]
  with pytest.raises(ConfigError) as e:
    setup.prepare(_student(tmp_path, where, tokenizer), str(tmp_path / 'runs'))
  message = str(e.value)
  assert '\n' not in message and all(n in message for n in needles), message
  assert sorted(os.listdir(tmp_path)) == ['teacher', 'train.txt', 'wordpiece']
