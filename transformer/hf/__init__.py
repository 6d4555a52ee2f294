"""Hugging Face checkpoints in and out (bert, distilbert, gpt2, bart, t5, mt5) without torch.

  config, model = transformer.hf.from_pretrained('/path/to/hf_checkpoint_dir')
  config, model, tok = transformer.hf.from_pretrained(path, with_tokenizer=True)
  python -m transformer.import_hf --from DIR --workdir OUT   # one of our checkpoints, for init_from
  python -m transformer.export --workdir RUN --to OUT  # one of our runs as a Hugging Face dir
"""

from transformer.hf.hf_config import ARCHITECTURES
from transformer.hf.load import from_pretrained
from transformer.hf.tokenizer import read_tokenizer

SUPPORTED_MODEL_TYPES = tuple(sorted(ARCHITECTURES))

__all__ = ['from_pretrained', 'read_tokenizer', 'SUPPORTED_MODEL_TYPES']
