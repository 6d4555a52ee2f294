"""Our SentencePiece model as Hugging Face files (data/sp_to_hf.py): transformers.AutoTokenizer
gives our ids and our decoded text, byte fallback included, and never matches a byte piece
('<0x41>') from text that spells one, as SentencePiece never does."""

import pytest
from sentencepiece import sentencepiece_model_pb2

import transformer.data as data_lib
from transformer.data import sp_to_hf
from transformer.data import tokenizer as tokenizer_lib
from transformer.errors import ConfigError

from tests.data.conftest import make_config

transformers = pytest.importorskip('transformers')

LITERALS = ['byte <0x41> literal', 'x<0x41>y', '<0xE4><0xB8><0xAD>', '<<0x0A>>', '<0x4a> <0x4G>',
            ''.join(f'<0x{b:02X}>' for b in range(256)), 'a <0x00>\n<0xFF> b']
FALLBACK = ['emoji 🙂🎉 and 中文字符', 'unseen ßŧřäñģé ☃ characters', '<0x中>🙂<0x41>',
            'tab\there\x00nul\x7fdel', 'Ωmega façade 0x41 <0x', '']


@pytest.fixture(scope='module')
def exported(tmp_path_factory, english_file):
  """A 600-piece tokenizer (byte fallback on) and AutoTokenizer of its exported files."""
  c = make_config(tmp_path_factory.mktemp('tok'), source=f'text:{english_file}', vocab_size=600,
                  tokenizer_train_examples=2000)
  tok = data_lib.get_tokenizer(c)
  out = sp_to_hf.write_hf_files(tok, str(tmp_path_factory.mktemp('hf')))
  return tok, transformers.AutoTokenizer.from_pretrained(out)


def test_the_model_falls_back_to_bytes_and_lacks_some_literal_characters(exported):
  """The cases below are the hard ones: the byte pieces exist, and some characters of the
  literals are no piece (so a byte piece matched from text would compete with an unknown)."""
  tok, _ = exported
  assert all(tok.sp.is_byte(tok.sp.piece_to_id(f'<0x{b:02X}>')) for b in range(256))
  unknown = [c for c in '<>x0123456789ABCDEF' if tok.sp.piece_to_id(c) == tok.unk_id]
  assert unknown, 'every character of the literals is a piece: the test lost its edge'


@pytest.mark.parametrize('text', LITERALS + FALLBACK, ids=lambda text: ascii(text)[1:-1][:30])
def test_ids_and_decoded_text_equal_autotokenizer(exported, text):
  tok, hf = exported
  ids = tok.encode(text)
  assert hf(text, add_special_tokens=False)['input_ids'] == ids
  assert hf.decode(ids) == tok.decode(ids) == text


def test_decoding_bytes_that_are_not_utf8_equals_ours(exported):
  """Generated ids need not be UTF-8. (Not here: a run mixing invalid and valid bytes, e.g.
  '<0xFF><0x41>', which HF's ByteFallback decoder makes two U+FFFD; see sp_to_hf.py.)"""
  tok, hf = exported
  vocabulary = tok.vocabulary()
  for pieces in (['<0xE4>'], ['<0xE4>', '<0xB8>'], ['a', '<0xE4>', 'b'], ['<0xC3>', '▁']):
    ids = [vocabulary.index(p) for p in pieces if p in vocabulary]
    assert hf.decode(ids) == tok.decode(ids), pieces


def test_a_model_with_a_piece_across_the_cut_is_refused_in_one_line(exported, tmp_path):
  """A piece holding '<0' would span the cut before a byte piece's spelling: refused, not
  exported with other ids."""
  tok, _ = exported
  proto = sentencepiece_model_pb2.ModelProto.FromString(open(tok.model_path, 'rb').read())
  proto.pieces[-1].piece = 'a<0'
  path = tmp_path / 'other.model'
  path.write_bytes(proto.SerializeToString())
  with pytest.raises(ConfigError, match=r'other.model: .* holding "<0"') as e:
    sp_to_hf.write_hf_files(tokenizer_lib.Tokenizer(str(path)), str(tmp_path / 'out'))
  assert '\n' not in str(e.value) and not (tmp_path / 'out').exists()
