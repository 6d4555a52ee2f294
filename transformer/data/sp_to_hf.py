"""Our SentencePiece tokenizer as Hugging Face files: tokenizer.json + tokenizer_config.json.

  write_hf_files(tokenizer, out_dir)   # transformers.AutoTokenizer.from_pretrained(out_dir)

The recipe of tokenizer.py (unigram, identity normalization, whitespace kept, one dummy-prefix
'▁', byte fallback) is rebuilt with the `tokenizers` library: the same pieces and scores in a
Unigram model, so AutoTokenizer gives the ids we give for any text. One difference is Hugging
Face's contract, not ours: our structural symbols (<mask>, <sep>, <extra_id_N>, ...) become its
special tokens, so the literal text '<mask>' encodes to the mask id there and to ordinary pieces
here. Models of other recipes (a BPE model, another normalization, from `data.tokenizer`) are
refused in one line.

Byte pieces: SentencePiece keeps '<0x00>'..'<0xFF>' out of its lattice (only an unknown character
falls back to them), while a `tokenizers` Unigram matches every vocabulary entry in text, so the
text '<0x41>' would become the byte 'A'. No score keeps it out: an unknown character scores the
lowest score minus 10, below any byte piece, and '<0x41>' has an unknown character wherever '4' is
no piece. So a pre-tokenizer cuts text after each '<' that begins a byte piece's spelling: no
piece spans that cut (none holds '<0': split_digits keeps digits alone, and a model with such a
piece is refused), so the ids stay those of the whole text, and the byte pieces, at their ids for
byte fallback, never match text. Decoding the ids of any text gives the text; a run of
byte ids that is not UTF-8 decodes with one U+FFFD per byte there (the ByteFallback decoder), so
'<0xFF><0x41>' is '\ufffd\ufffd' there and '\ufffdA' here.
"""

import json
import os

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers
from sentencepiece import sentencepiece_model_pb2

from transformer.data import special_tokens
from transformer.errors import ConfigError

_UNIGRAM, _CONTROL, _UNKNOWN, _BYTE = 1, 3, 2, 6   # sentencepiece_model.proto enums
_SPACE = '\u2581'
_BYTE_SPELLING = tokenizers.Regex('<(?=0x[0-9A-F]{2}>)')   # the '<' of a literal '<0x41>'


def _proto(tokenizer):
  with open(tokenizer.model_path, 'rb') as f:
    return sentencepiece_model_pb2.ModelProto.FromString(f.read())


def _check_recipe(tokenizer, proto):
  normalizer, trainer = proto.normalizer_spec, proto.trainer_spec
  why = ('is a BPE model' if trainer.model_type != _UNIGRAM else
         f'normalizes text ({normalizer.name})' if normalizer.name != 'identity' or
         normalizer.precompiled_charsmap else
         'removes extra whitespace' if normalizer.remove_extra_whitespaces else
         'has no dummy prefix' if not normalizer.add_dummy_prefix else
         'has a piece holding "<0" (byte pieces\' spelling is cut there)' if any(
             '<0' in p.piece for p in proto.pieces if p.type not in (_CONTROL, _UNKNOWN, _BYTE))
         else None)
  if why:
    raise ConfigError(f'{tokenizer.model_path}: this SentencePiece model {why}; export-hf '
                      'writes Hugging Face files for the unigram models tokenizer.py trains '
                      '(data.tokenizer_model=unigram)')


def to_tokenizers(tokenizer):
  """A tokenizers.Tokenizer that encodes text exactly as our SentencePiece `tokenizer` does."""
  proto = _proto(tokenizer)
  _check_recipe(tokenizer, proto)
  vocab = [(p.piece, p.score) for p in proto.pieces]
  unk = next(i for i, p in enumerate(proto.pieces) if p.type == _UNKNOWN)
  tok = tokenizers.Tokenizer(models.Unigram(vocab, unk_id=unk,
                                            byte_fallback=proto.trainer_spec.byte_fallback))
  tok.normalizer = normalizers.Sequence([normalizers.Prepend(_SPACE),
                                         normalizers.Replace(' ', _SPACE)])
  tok.pre_tokenizer = pre_tokenizers.Split(_BYTE_SPELLING, 'merged_with_previous')
  tok.decoder = decoders.Sequence([decoders.Replace(_SPACE, ' '), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(' ', 1, 0)])
  tok.add_special_tokens([tokenizers.AddedToken(p.piece, special=True)
                          for p in proto.pieces if p.type in (_CONTROL, _UNKNOWN)])
  return tok


def write_hf_files(tokenizer, out_dir):
  """tokenizer.json and tokenizer_config.json into `out_dir`: the registry's special tokens, by
  role where Hugging Face names one, the others (the sentinels) as extra special tokens."""
  tok = to_tokenizers(tokenizer)
  os.makedirs(out_dir, exist_ok=True)
  tok.save(os.path.join(out_dir, 'tokenizer.json'))
  piece = tokenizer.id_to_piece
  config = {f'{token.name}_token': piece(ids[0]) for token in special_tokens.TOKENS
            if token.hf_role and (ids := special_tokens.ids_of(tokenizer, token.name))}
  extra = [piece(i) for token in special_tokens.TOKENS if not token.hf_role
           for i in special_tokens.ids_of(tokenizer, token.name)]
  config.update(tokenizer_class='TokenizersBackend', model_max_length=1 << 30,
                extra_special_tokens=extra)
  with open(os.path.join(out_dir, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
    json.dump(config, f, indent=2, ensure_ascii=False)
  return out_dir
