"""One of our runs as a Hugging Face directory: `./launch.sh export-hf --workdir RUN --to OUT`.

  python -m transformer.export --workdir runs/default/bert_base --to exported/bert
  transformers.AutoModelForSequenceClassification.from_pretrained('exported/bert')

RUN is a run directory (<workdir>/<experiment>/<run_name>, or its checkpoints/) or an import-hf
output; OUT must be new or empty. Writes config.json, model.safetensors and the tokenizer files
(see transformer/hf/export.py); a model Hugging Face cannot express is refused naming the knob.
"""

import sys

from transformer import quiet  # noqa: F401  (first: library start-up noise off)
from transformer import cli
from transformer.hf import export


@cli.main
def main(argv=None):
  parser = cli.Parser('python -m transformer.export', __doc__, config=False, workdir=False)
  parser.add_argument('--workdir', required=True,
                      help='the run directory (or import-hf output) to export')
  parser.add_argument('--to', required=True, help='output directory (new or empty)')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  hf_class = export.export_run(args.workdir, args.to)
  extra = 'preprocessor_config.json' if hf_class.startswith('ViT') else 'tokenizer files'
  print(f'exported {args.workdir} -> {args.to} ({hf_class}: config.json, model.safetensors, '
        f'{extra}); load it with transformers.AutoModel*.from_pretrained')
  return 0


if __name__ == '__main__':
  cli.exit_process(main())
