"""Sentence pairs of the classification objective equal Hugging Face's pair encoding: BERT's
`[CLS] a [SEP] b [SEP]` ids and token types (BertTokenizerFast, truncation 'longest_first'), and
GPT-2's pair (its tokenizer adds no special tokens: the two texts' ids) with our separators
around them. Tokenizers are built offline in the test (tests/hf/builders.py)."""

import pytest

from transformer import data, objectives

from tests.data.conftest import make_config
from tests.hf import builders

transformers = pytest.importorskip('transformers')

PAIRS = [('The film was wonderful.', 'A dull, tedious and boring mess.'),
         ('Hello world', 'x'),
         ('Return a new dictionary initialized from an optional positional argument and a '
          'possibly empty set of keyword arguments.', 'short one'),
         ('short', 'Return the lowest index in the string where substring sub is found within '
          'the slice s[start:end]. Optional arguments start and end are interpreted.'),
         ('Café naïve résumé déjà vu: Ärger über Öl, façade, señor, Ωmega and more words here',
          'emoji 🙂🎉 and 中文字符 mixed with ASCII, also long enough to be cut somewhere')]
SEQ_LEN = 24


def _objective(tmp_path, directory, family, **model):
  config = make_config(tmp_path, source='text:/nonexistent/*', tokenizer=directory,
                       seq_len=SEQ_LEN, text_pair_key='text_pair')
  config.objective, config.model.family = 'classification', family
  for key, value in model.items():
    config.model[key] = value
  tokenizer = data.get_tokenizer(config)
  return objectives.get(config, tokenizer), tokenizer


def _features(obj, tokenizer, a, b):
  return obj.features({'text': tokenizer.encode(a), 'text_pair': tokenizer.encode(b), 'label': 1})


def test_bert_pairs_equal_bert_tokenizer_fast(tmp_path):
  directory = builders.bert_tokenizer(str(tmp_path / 'bert'))
  obj, tokenizer = _objective(tmp_path, directory, 'encoder', type_vocab_size=2)
  reference = transformers.BertTokenizerFast.from_pretrained(directory)
  for a, b in PAIRS:
    ours = _features(obj, tokenizer, a, b)
    theirs = reference(a, b, truncation='longest_first', max_length=SEQ_LEN)
    assert ours['inputs'].tolist() == theirs['input_ids'], (a, b)
    assert ours['inputs_token_types'].tolist() == theirs['token_type_ids'], (a, b)


def test_gpt2_pairs_are_its_pair_encoding_with_separators(tmp_path):
  directory = builders.gpt2_tokenizer(str(tmp_path / 'gpt2'))
  obj, tokenizer = _objective(tmp_path, directory, 'decoder')
  reference = transformers.GPT2TokenizerFast.from_pretrained(directory)
  eot = reference.convert_tokens_to_ids('<|endoftext|>')
  assert (tokenizer.bos_id, tokenizer.sep_id, tokenizer.cls_id) == (eot, eot, eot)
  for a, b in PAIRS:
    ours = _features(obj, tokenizer, a, b)['inputs'].tolist()
    theirs = reference(a, b, truncation='longest_first', max_length=SEQ_LEN - 3,
                       return_token_type_ids=True)
    n1 = theirs['token_type_ids'].count(0)   # their first text, as cut
    ids = theirs['input_ids']
    assert ours == [eot] + ids[:n1] + [eot] + ids[n1:] + [eot], (a, b)
