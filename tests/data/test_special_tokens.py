"""The special-token registry (data/special_tokens.py): one table entry is all a new token takes
for both tokenizer kinds, the objectives' checks and export-hf; the existing ids stay."""

import json

import pytest

from tests.data.conftest import make_config
import transformer.data as data_lib
from transformer import objectives
from transformer.data import hf_files, sp_to_hf, special_tokens
from transformer.data.hf_tokenizer import HFTokenizer
from transformer.objectives import base

NEW = special_tokens.Special('fim', 'control', '<fim>')   # a token registered after today's
MODES = ['[R]', '[X]', '[S]']                              # UL2's mode tokens, ids 39, 40, 41


@pytest.fixture
def with_new_token(monkeypatch):
  monkeypatch.setattr(special_tokens, 'TOKENS', special_tokens.TOKENS + (NEW,))


def _config(tmp_path, english_file):
  return make_config(tmp_path, source=f'text:{english_file}', vocab_size=400,
                     tokenizer_train_examples=2000)


def test_the_registry_holds_todays_tokens_in_id_order():
  assert [t.name for t in special_tokens.TOKENS] == ['pad', 'eos', 'unk', 'bos', 'mask', 'sep',
                                                     'cls', 'sentinel', 'mode_r', 'mode_x',
                                                     'mode_s']
  assert special_tokens.control_pieces() == (['<mask>', '<sep>', '<cls>'] +
                                             [f'<extra_id_{i}>' for i in range(32)] + MODES)
  assert hf_files.ROLES == ('pad', 'eos', 'unk', 'bos', 'mask', 'sep', 'cls')


def test_a_registered_token_is_known_to_both_tokenizer_kinds(with_new_token, tmp_path,
                                                            english_file):
  sp = data_lib.get_tokenizer(_config(tmp_path, english_file))
  assert (sp.pad_id, sp.eos_id, sp.unk_id, sp.bos_id) == (0, 1, 2, 3)
  assert (sp.mask_id, sp.sep_id, sp.cls_id, sp.sentinel_ids) == (4, 5, 6, list(range(7, 39)))
  assert (sp.mode_r_id, sp.mode_x_id, sp.mode_s_id) == (39, 40, 41)
  assert sp.fim_id == 42 and sp.id_to_piece(42) == '<fim>' and sp.id_to_piece(39) == '[R]'
  assert 42 not in sp.encode('a <fim> b') and '<fim>' in sp.decode(sp.encode('a') + [42])
  assert {39, 40, 41, 42} <= set(base.special_ids(sp))

  out = sp_to_hf.write_hf_files(sp, str(tmp_path / 'hf'))
  with open(tmp_path / 'hf' / 'tokenizer_config.json') as f:
    config = json.load(f)
  assert config['extra_special_tokens'] == ([f'<extra_id_{i}>' for i in range(32)] + MODES +
                                            ['<fim>'])
  hf = HFTokenizer(out)
  assert (hf.mode_r_id, hf.fim_id) == (39, 42) and hf.sentinel_ids == sp.sentinel_ids
  assert 42 in hf.encode('a <fim> b') and 42 in base.special_ids(hf)


def test_an_objective_needing_a_registered_token_refuses_a_tokenizer_without_it(
    with_new_token, small_tokenizer):
  class FillInTheMiddle(objectives.Objective):
    name = 'fill_in_the_middle'
    tokens = ('eos', 'fim')
  lacks = objectives._lacks  # pylint: disable=protected-access
  assert lacks(FillInTheMiddle, 'decoder', small_tokenizer) == ['fim']


def test_a_cached_tokenizer_without_a_registered_token_is_not_reused(monkeypatch, tmp_path,
                                                                   english_file):
  before = data_lib.tokenizer.cache_path(_config(tmp_path, english_file))
  monkeypatch.setattr(special_tokens, 'TOKENS', special_tokens.TOKENS + (NEW,))
  assert data_lib.tokenizer.cache_path(_config(tmp_path, english_file)) != before
