"""What a config builds, from shapes alone: `./launch.sh summary --config configs/gpt2.py:small`.

  python -m transformer.summary --config configs/t5.py:v1_1_base [--config.model.num_layers=4 ...]

The accounting itself (parameters per module, FLOPs per token, activation memory) lives in
`transformer.monitoring.accounting`; this module prints it.
"""

from transformer import quiet  # noqa: F401  (first: library start-up noise off)

from transformer import cli
from transformer.monitoring.accounting import format_table


@cli.main
def main(argv=None):
  parser = cli.Parser('python -m transformer.summary', __doc__, config_required=True,
                      workdir=False)
  _, config = parser.parse_config(argv)
  print(format_table(config))
  return 0


if __name__ == '__main__':
  cli.exit_process(main())
