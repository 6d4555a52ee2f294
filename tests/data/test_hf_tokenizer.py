"""Hugging Face tokenizers through our interface: ids equal transformers.AutoTokenizer's for every
family and file format, the special ids each objective needs, and one-line refusals."""

import json
import os

import pytest

from transformer import data, objectives
from transformer.data import hf_tokenizer
from transformer.errors import ConfigError

from tests.data.conftest import make_config
from tests.hf import builders

transformers = pytest.importorskip('transformers')

FORMATS = [('bert', {}), ('bert', {'vocab_files': True}), ('gpt2', {}),
           ('gpt2', {'vocab_files': True}), ('bart', {}), ('bart', {'vocab_files': True}),
           ('t5', {}), ('t5', {'tokenizer_json': True})]


@pytest.fixture(scope='module', params=FORMATS, ids=lambda p: p[0] + ''.join(f'-{k}' for k in p[1]))
def built(request, tmp_path_factory):
  family, kw = request.param
  directory = builders.TOKENIZERS[family](str(tmp_path_factory.mktemp(family)), **kw)
  return family, directory


def test_ids_equal_autotokenizer(built, tmp_path):
  """Through the pipeline's own resolution (data.tokenizer = the directory): accents, whitespace
  runs, code, emoji, unknown characters and the special-token strings themselves."""
  family, directory = built
  config = make_config(tmp_path, source='text:/nonexistent/*', tokenizer=directory)
  ours = data.get_tokenizer(config)
  reference = transformers.AutoTokenizer.from_pretrained(directory)
  assert ours.vocab_size == len(reference)
  for text in builders.SENTENCES:
    expected = reference(text, add_special_tokens=False)['input_ids']
    assert ours.encode(text) == expected, (family, text, [ours.id_to_piece(i) for i in expected])
  assert ours.encode_batch(builders.SENTENCES) == [ours.encode(t) for t in builders.SENTENCES]
  for role in ('pad', 'eos', 'unk', 'bos', 'mask', 'sep', 'cls'):
    hf_id = getattr(reference, f'{role}_token_id')
    if hf_id is not None:
      assert getattr(ours, f'{role}_id') == hf_id, role


EXPECTED_IDS = {  # role -> token of each family (None: the family has no such token)
    'bert': dict(pad='[PAD]', eos='[SEP]', bos='[CLS]', sep='[SEP]', cls='[CLS]', mask='[MASK]'),
    'gpt2': dict(pad=None, eos='<|endoftext|>', bos='<|endoftext|>', sep='<|endoftext|>',
                 cls='<|endoftext|>', mask=None),
    'bart': dict(pad='<pad>', eos='</s>', bos='<s>', sep='</s>', cls='<s>', mask='<mask>'),
    't5': dict(pad='<pad>', eos='</s>', bos=None, sep='</s>', cls=None, mask=None),
}


def test_special_ids_and_sentinels(built):
  family, directory = built
  tok = hf_tokenizer.HFTokenizer(directory)
  for role, token in EXPECTED_IDS[family].items():
    got = getattr(tok, f'{role}_id')
    if token is None and role == 'pad':
      assert got == 0 and not tok.has_pad
    else:
      assert (got if token is None else tok.id_to_piece(got)) == token, role
  if family == 't5':   # <extra_id_0> is the last id, counted down from there
    assert tok.sentinel_ids == list(range(tok.vocab_size - 1, tok.vocab_size - 9, -1))
    assert [tok.id_to_piece(i) for i in tok.sentinel_ids[:2]] == ['<extra_id_0>', '<extra_id_1>']
  else:
    assert tok.sentinel_ids == []


def test_decode_round_trips_and_stops_at_eos(built):
  family, directory = built
  tok = hf_tokenizer.HFTokenizer(directory)
  reference = transformers.AutoTokenizer.from_pretrained(directory)
  text = 'def f(x): return x'
  ids = tok.encode(text)
  assert tok.decode(ids) == reference.decode(ids)
  framed = ([tok.bos_id] if tok.bos_id is not None else []) + ids + [tok.eos_id] + ids
  assert tok.decode(framed) == reference.decode(ids)


def test_decode_skips_ids_past_the_vocabulary(built):
  """A model may have more rows than its tokenizer has ids (T5: 32,128 for 32,100): such an id
  decodes to nothing, as in transformers (the spiece backend raised a bare StopIteration)."""
  family, directory = built
  tok = hf_tokenizer.HFTokenizer(directory)
  reference = transformers.AutoTokenizer.from_pretrained(directory)
  ids = tok.encode('def f(x): return x')
  past = ids[:2] + [tok.vocab_size, tok.vocab_size + 27] + ids[2:] + [tok.vocab_size + 1]
  assert tok.decode(past) == tok.decode(ids) == reference.decode(past), family
  assert tok.id_to_piece(tok.vocab_size) is None


@pytest.mark.parametrize('family,objective,model_family,missing', [
    ('gpt2', 'mlm', 'encoder', 'mask'), ('t5', 'causal_lm', 'decoder', 'bos'),
    ('bart', 'span_corruption', 'encoder_decoder', 'sentinel'),
    ('t5', 'classification', 'encoder', 'cls')])
def test_objectives_refuse_a_missing_token_in_one_line(tmp_path, family, objective, model_family,
                                                       missing):
  tok = hf_tokenizer.HFTokenizer(builders.TOKENIZERS[family](str(tmp_path / family)))
  config = make_config(tmp_path, source='text:/x')
  config.objective, config.model.family = objective, model_family
  config.model.vocab_size = tok.vocab_size
  with pytest.raises(ConfigError) as e:
    objectives.get(config, tok)
  message = str(e.value)
  assert '\n' not in message and f'`objective={objective}`' in message, message
  assert f'needs a {missing} token' in message and str(tmp_path / family) in message, message


@pytest.mark.parametrize('family', ['bert', 'gpt2', 'bart', 't5'])
def test_every_objective_of_the_family_that_fits_builds(tmp_path, family):
  """The objectives each checkpoint's family is fine-tuned with accept its tokenizer."""
  tok = hf_tokenizer.HFTokenizer(builders.TOKENIZERS[family](str(tmp_path / family)))
  usable = {'bert': [('mlm', 'encoder'), ('classification', 'encoder')],
            'gpt2': [('causal_lm', 'decoder'), ('prefix_lm', 'decoder'), ('seq2seq', 'decoder'),
                     ('classification', 'decoder')],
            'bart': [('seq2seq', 'encoder_decoder'), ('mlm', 'encoder')],
            't5': [('seq2seq', 'encoder_decoder'), ('span_corruption', 'encoder_decoder')]}
  for objective, model_family in usable[family]:
    config = make_config(tmp_path, source='text:/x')
    config.objective, config.model.family = objective, model_family
    config.model.vocab_size = tok.vocab_size
    assert objectives.get(config, tok).name == objective


def test_bad_tokenizer_files_are_one_line(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ConfigError, match='no tokenizer files') as e:
    hf_tokenizer.HFTokenizer(empty)
  assert str(empty) in str(e.value) and '\n' not in str(e.value)
  bpe = builders.gpt2_tokenizer(str(tmp_path / 'bpe'), vocab_files=True)
  os.remove(os.path.join(bpe, 'merges.txt'))
  with pytest.raises(ConfigError, match='merges.txt: missing'):
    hf_tokenizer.HFTokenizer(bpe)
  bert = builders.bert_tokenizer(str(tmp_path / 'bert'))
  config_path = os.path.join(bert, 'tokenizer_config.json')
  with open(config_path) as f:
    config = json.load(f)
  config['mask_token'] = '<not-there>'
  with open(config_path, 'w') as f:
    json.dump(config, f)
  with pytest.raises(ConfigError, match="mask_token '<not-there>'.*not in the vocabulary"):
    hf_tokenizer.HFTokenizer(bert)
  with open(os.path.join(bert, 'tokenizer.json'), 'w') as f:
    f.write('{not json')
  with pytest.raises(ConfigError, match='tokenizer.json: cannot be read') as e:
    hf_tokenizer.HFTokenizer(bert)
  assert '\n' not in str(e.value)


def test_stored_tokenizer_loads_the_same(built, tmp_path):
  """save_to (what a run and an import keep) gives the same ids and special ids."""
  _, directory = built
  tok = hf_tokenizer.HFTokenizer(directory)
  stored = hf_tokenizer.HFTokenizer(tok.save_to(str(tmp_path)))
  assert stored.vocabulary() == tok.vocabulary()
  for text in builders.SENTENCES:
    assert stored.encode(text) == tok.encode(text)
  assert (stored.pad_id, stored.eos_id, stored.bos_id, stored.mask_id, stored.sentinel_ids) == (
      tok.pad_id, tok.eos_id, tok.bos_id, tok.mask_id, tok.sentinel_ids)


def test_truncation_in_tokenizer_json_is_ignored(tmp_path):
  """A tokenizer.json saved with truncation (many Hub files cut at 512) still encodes whole
  texts: the objectives chunk and truncate them."""
  directory = builders.bert_tokenizer(str(tmp_path / 'bert'))
  path = os.path.join(directory, 'tokenizer.json')
  with open(path) as f:
    config = json.load(f)
  config['truncation'] = {'direction': 'Right', 'max_length': 8, 'strategy': 'LongestFirst',
                          'stride': 0}
  with open(path, 'w') as f:
    json.dump(config, f)
  tok = hf_tokenizer.HFTokenizer(directory)
  assert len(tok.encode(' '.join(['film'] * 50))) == 50 * len(tok.encode('film')) > 8
