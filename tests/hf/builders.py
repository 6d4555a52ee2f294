"""Small Hugging Face tokenizers and models built offline, for the tokenizer, export and
fine-tuning tests: each family's tokenizer is trained with `tokenizers` (SentencePiece for T5) on
embedded text and saved with transformers' save_pretrained, as a checkpoint on the Hub ships it.
"""

import io
import json
import os

import sentencepiece as spm
import tokenizers
from tokenizers import models, normalizers, pre_tokenizers, trainers

# Standard-library docstrings plus lines with accents, emoji and code: every family sees them.
EXTRA = ['Café naïve résumé déjà vu: Ärger über Öl, façade, señor, Ωmega.',
         'emoji 🙂🎉 and 中文字符 mixed with ASCII.',
         'def f(x):\n    return {"a": x ** 2}  # ok',
         'The film was wonderful and moving.', 'A dull, tedious and boring mess.']
SENTENCES = ['Hello world', 'Café naïve résumé — déjà vu, Ärger über Öl',
             '  lots   of\tspace\n\nand  new  lines  ', 'def f(x):\n    return {"a": x**2}  # ok',
             'emoji 🙂🎉 and 中文字符', 'unseen ßŧřäñģé ☃ characters', '',
             '[CLS] a [SEP] b [MASK] c [PAD] [UNK]', '<|endoftext|>hello<|endoftext|> world',
             '<s> a <mask> b </s> <pad> <unk>', '<extra_id_0> x <extra_id_3></s> <pad> <unk>',
             'x[MASK]y <mask>z']


def corpus():
  """A few thousand lines of embedded English text and code (stdlib docstrings)."""
  import collections, re, string, textwrap  # pylint: disable=import-outside-toplevel
  lines = []
  for module in (collections, json, os, re, string, textwrap, io):
    for name in dir(module):
      doc = getattr(getattr(module, name), '__doc__', None)
      if isinstance(doc, str):
        lines += [l for l in doc.splitlines() if l.strip()]
  return sorted(set(lines)) + EXTRA * 20


def _train_bpe(vocab_size, special):
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.train_from_iterator(corpus(), trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=special, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return tok


def _vocab_merges(tok, directory):
  """vocab dict and merges list of a trained BPE (through its own vocab.json / merges.txt)."""
  os.makedirs(directory, exist_ok=True)
  tok.model.save(str(directory))
  with open(os.path.join(directory, 'vocab.json'), encoding='utf-8') as f:
    vocab = json.load(f)
  with open(os.path.join(directory, 'merges.txt'), encoding='utf-8') as f:
    merges = [tuple(l.split()) for l in f.read().splitlines()[1:] if l]
  return vocab, merges


def bert_tokenizer(directory, vocab_size=400, vocab_files=False):
  """A WordPiece BertTokenizer in `directory`; `vocab_files`: vocab.txt, no tokenizer.json."""
  import transformers  # pylint: disable=import-outside-toplevel
  tok = tokenizers.Tokenizer(models.WordPiece(unk_token='[UNK]'))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(
      vocab_size=vocab_size, show_progress=False,
      special_tokens=['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']))
  vocab = tok.get_vocab()
  transformers.BertTokenizer(vocab=vocab).save_pretrained(directory)
  if vocab_files:
    os.remove(os.path.join(directory, 'tokenizer.json'))
    with open(os.path.join(directory, 'vocab.txt'), 'w', encoding='utf-8') as f:
      f.write(''.join(t + '\n' for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])))
  return directory


def gpt2_tokenizer(directory, vocab_size=400, vocab_files=False):
  """A byte-level BPE GPT2Tokenizer (<|endoftext|> only) in `directory`."""
  import transformers  # pylint: disable=import-outside-toplevel
  vocab, merges = _vocab_merges(_train_bpe(vocab_size, ['<|endoftext|>']), directory)
  transformers.GPT2Tokenizer(vocab=vocab, merges=merges).save_pretrained(directory)
  _keep(directory, vocab_files)
  return directory


def bart_tokenizer(directory, vocab_size=400, vocab_files=False):
  """A byte-level BPE BartTokenizer (<s>, <pad>, </s>, <unk>, <mask>) in `directory`."""
  import transformers  # pylint: disable=import-outside-toplevel
  vocab, merges = _vocab_merges(
      _train_bpe(vocab_size, ['<s>', '<pad>', '</s>', '<unk>', '<mask>']), directory)
  transformers.BartTokenizer(vocab=vocab, merges=merges).save_pretrained(directory)
  _keep(directory, vocab_files)
  return directory


def _keep(directory, vocab_files):
  """Keep vocab.json + merges.txt (no tokenizer.json) or only what save_pretrained wrote."""
  names = ('tokenizer.json',) if vocab_files else ('vocab.json', 'merges.txt')
  for name in names:
    if os.path.exists(os.path.join(directory, name)):
      os.remove(os.path.join(directory, name))


def t5_tokenizer(directory, vocab_size=300, extra_ids=8, tokenizer_json=False):
  """A T5 SentencePiece tokenizer: spiece.model + tokenizer_config.json (T5Tokenizer with
  `extra_ids` sentinels); `tokenizer_json`: re-saved by transformers as tokenizer.json instead."""
  import transformers  # pylint: disable=import-outside-toplevel
  os.makedirs(directory, exist_ok=True)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus()), model_writer=model, vocab_size=vocab_size,
      model_type='unigram', pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
      character_coverage=0.9995, num_threads=1, minloglevel=2)
  with open(os.path.join(directory, 'spiece.model'), 'wb') as f:
    f.write(model.getvalue())
  with open(os.path.join(directory, 'tokenizer_config.json'), 'w') as f:
    json.dump({'tokenizer_class': 'T5Tokenizer', 'extra_ids': extra_ids}, f)
  if tokenizer_json:
    transformers.AutoTokenizer.from_pretrained(directory).save_pretrained(directory)
    os.remove(os.path.join(directory, 'spiece.model'))
  return directory


TOKENIZERS = {'bert': bert_tokenizer, 'gpt2': gpt2_tokenizer, 'bart': bart_tokenizer,
              't5': t5_tokenizer}
