"""Converts a local Hugging Face checkpoint into ours: the weights, our config, its tokenizer.

  python -m transformer.import_hf --from /path/to/hf_dir --workdir /path/to/out [--scan_layers]
  config, model, tok = transformer.hf.from_pretrained('/path/to/hf_dir', with_tokenizer=True)

Writes OUT/0/ (an orbax checkpoint at step 0 whose state is {'params': ...}), OUT/config.json
(our resolved config for the imported model), OUT/tokenizer/ (the checkpoint's tokenizer files,
see transformer/data/hf_files.py), OUT/tokenizer_info.json and, for BART, OUT/hf_kept.safetensors
(the position rows before position 0, which export-hf writes back).
`--config.checkpoint.init_from=OUT` then trains with that tokenizer and the imported architecture.
A checkpoint without tokenizer files is refused unless --weights_only says the weights alone are
wanted (text fine-tuning of such an import then needs --config.data.tokenizer=DIR). Every check
runs before anything is written: a refused import leaves OUT as it was.
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

import json
import os

import safetensors.numpy

from transformer.training import checkpoint
from transformer import cli, objectives
from transformer.data import hf_files
from transformer.hf.load import import_params
from transformer.hf.tokenizer import read_tokenizer
from transformer.errors import ConfigError
from transformer.models.hparams import DTYPES

TOKENIZER_RECORD = hf_files.IMPORT_RECORD   # read by data.tokenizer.get_tokenizer
KEPT_TENSORS = 'hf_kept.safetensors'  # tensors the model leaves out (BART's first position rows)


def convert(hf_dir, workdir, *, scan_layers=False, dtype='float32', weights_only=False):
  """Imports `hf_dir` and saves it under `workdir`; returns our ConfigDict of the model."""
  workdir = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise ConfigError(f'--workdir {workdir}: exists and is not empty; choose a new or empty '
                      'directory')
  config, params, kept = import_params(hf_dir, dtype=dtype, scan_layers=scan_layers)
  text = objectives.reads_text(config.objective)   # an image model has no tokenizer
  tok = None if weights_only or not text else read_tokenizer(hf_dir, config.model.vocab_size)
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
  if tok is not None:
    tok.save_to(workdir)
  if kept:
    safetensors.numpy.save_file(kept, os.path.join(workdir, KEPT_TENSORS))
  with open(os.path.join(workdir, TOKENIZER_RECORD), 'w') as f:
    json.dump(dict(tokenizer=None if tok is None else hf_files.RUN_HF_TOKENIZER,
                   vocab_size=config.model.vocab_size, source=str(hf_dir),
                   tokens=None if tok is None else tok.vocab_size), f, indent=2)
  return config


@cli.main
def main(argv=None):
  parser = cli.Parser('python -m transformer.import_hf',
                      'Import a local Hugging Face checkpoint (bert, distilbert, gpt2, bart, t5, '
                      'mt5, vit) and its tokenizer as one of our checkpoints, for '
                      '--config.checkpoint.init_from=WORKDIR.', config=False, workdir=False)
  parser.add_argument('--from', dest='hf_dir', required=True,
                      help='Hugging Face checkpoint directory (config.json, weights, tokenizer)')
  parser.add_argument('--workdir', required=True, help='output directory (empty or new)')
  parser.add_argument('--scan_layers', action='store_true',
                      help='stack layers for model.scan_layers=True runs')
  parser.add_argument('--dtype', default='float32', choices=DTYPES,
                      help='parameter dtype of the saved checkpoint')
  parser.add_argument('--weights_only', action='store_true',
                      help='import a checkpoint that has no tokenizer files')
  args = parser.parse_args(argv)
  config = convert(args.hf_dir, args.workdir, scan_layers=args.scan_layers, dtype=args.dtype,
                   weights_only=args.weights_only)
  m = config.model
  what = ('without a tokenizer (--weights_only)' if args.weights_only else
          f'with its tokenizer in {os.path.join(args.workdir, "tokenizer")}')
  if not objectives.reads_text(config.objective):
    what = (f'with its image processor (data.image_size {config.data.image_size}, '
            f'model.image_mean {tuple(m.image_mean)}, model.image_std {tuple(m.image_std)})')
  print(f'imported {args.hf_dir} ({m.family}, {m.num_layers} layers, d_model {m.d_model}, '
        f'vocab {m.vocab_size}) -> {args.workdir}, {what}; fine-tune it with '
        f'--config.checkpoint.init_from={args.workdir}')
  return 0


if __name__ == '__main__':
  cli.exit_process(main())
