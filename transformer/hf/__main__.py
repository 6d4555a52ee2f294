"""Converts a local Hugging Face checkpoint into one of ours: the weights, our config, a tokenizer record.

  python -m transformer.hf --from /path/to/hf_dir --workdir /path/to/out [--scan_layers]
  config, model = transformer.hf.from_pretrained('/path/to/hf_dir')   # in Python, no files

Writes OUT/0/ (an orbax checkpoint at step 0 whose state is {'params': ...}), OUT/config.json
(our resolved config for the imported model: copy its `model` section into the run's config) and
OUT/tokenizer_info.json, the record of the tokenizer that goes with the weights. Hugging Face
tokenizers are not imported yet, so the record says there is none and `init_from` this output
refuses text fine-tuning (our SentencePiece ids would not match the imported embedding).
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import json
import os
import sys


from transformer.training import checkpoint
from transformer import cli
from transformer.errors import ConfigError
from transformer.hf.load import import_params

TOKENIZER_RECORD = 'tokenizer_info.json'   # read by transformer.data.tokenizer.recorded_tokenizer


def convert(hf_dir, workdir, *, scan_layers=False, dtype='float32'):
  """Imports `hf_dir` and saves it under `workdir`; returns our ConfigDict of the model."""
  config, params = import_params(hf_dir, dtype=dtype, scan_layers=scan_layers)
  workdir = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
  if os.path.isdir(workdir) and any(name.isdigit() for name in os.listdir(workdir)):
    raise ConfigError(f'--workdir {workdir} already holds checkpoints; choose an empty directory')
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpoint.Checkpointer(workdir, every=1, keep=1, keep_best=False)
  try:
    ckpt.save(0, {'params': params}, data_position={}, force=True)
    ckpt.wait_until_finished()
  finally:
    ckpt.close()
  config.checkpoint.init_from = workdir
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  with open(os.path.join(workdir, TOKENIZER_RECORD), 'w') as f:
    json.dump(dict(tokenizer=None, vocab_size=config.model.vocab_size, source=str(hf_dir),
                   reason='import-hf converts the weights only; Hugging Face tokenizers are not '
                          'imported yet'), f, indent=2)
  return config


@cli.main
def main(argv=None):
  parser = cli.Parser('python -m transformer.hf',
                      'Import a local Hugging Face checkpoint (bert, gpt2, bart, t5, mt5) as one '
                      'of our checkpoints, for --config.checkpoint.init_from=WORKDIR.',
                      config=False, workdir=False)
  parser.add_argument('--from', dest='hf_dir', required=True,
                      help='Hugging Face checkpoint directory (config.json + weights)')
  parser.add_argument('--workdir', required=True, help='output directory (empty or new)')
  parser.add_argument('--scan_layers', action='store_true',
                      help='stack layers for model.scan_layers=True runs')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16', 'float16'),
                      help='parameter dtype of the saved checkpoint')
  args = parser.parse_args(argv)
  config = convert(args.hf_dir, args.workdir, scan_layers=args.scan_layers, dtype=args.dtype)
  m = config.model
  print(f'imported {args.hf_dir} ({m.family}, {m.num_layers} layers, d_model {m.d_model}, '
        f'vocab {m.vocab_size}) -> {args.workdir}, without its tokenizer (not imported yet, so '
        f'training with --config.checkpoint.init_from={args.workdir} is refused)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
