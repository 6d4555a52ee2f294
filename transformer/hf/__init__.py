"""Import of pretrained Hugging Face checkpoints (bert, gpt2, bart, t5, mt5) without torch.

  config, model = transformer.hf.from_pretrained('/path/to/hf_checkpoint_dir')
  python -m transformer.hf --from DIR --workdir OUT   # one of our checkpoints, for init_from
"""

from transformer.hf.hf_config import ARCHITECTURES
from transformer.hf.load import from_pretrained

SUPPORTED_MODEL_TYPES = tuple(sorted(ARCHITECTURES))

__all__ = ['from_pretrained', 'SUPPORTED_MODEL_TYPES']
