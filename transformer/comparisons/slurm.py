"""A comparison as Slurm job arrays: pretrain, then fine-tune after it, then the results."""

import os
import shlex
import sys

from transformer.comparisons.plan import finetune_runs
from transformer.sweeps.runner import REPO, override_text


def write(plan, args):
  """Two sbatch arrays (pretrain, then fine-tune after it) and submit.sh chaining them."""
  counts = {'pretrain': len(set(plan.cells) - plan.controls) * plan.seeds,
            'finetune': len(finetune_runs(plan))}
  base = [sys.executable, '-m', 'transformer.compare', os.path.abspath(plan.path),
          '--workdir', os.path.abspath(os.path.dirname(plan.exp_dir)), '--scale', plan.scale,
          '--seeds', str(plan.seeds), '--finetune_seeds', str(plan.finetune_seeds),
          '--budget', plan.budget_kind, '--flops', plan.convention, '--corpus', plan.corpus] + (
              ['--allow_mismatch'] if args.allow_mismatch else []) + (
                  ['--tasks', ','.join(plan.only_tasks)] if plan.only_tasks else []) + [
                  f'--config.{k}={override_text(v)}' for k, v in plan.extra.items()]
  os.makedirs(plan.exp_dir, exist_ok=True)
  for phase, n in counts.items():
    with open(os.path.join(plan.exp_dir, f'{phase}.sbatch'), 'w') as f:
      f.write(f'#!/bin/bash\n#SBATCH --job-name={plan.module.EXPERIMENT}_{phase}\n'
              f'#SBATCH --array=0-{n - 1}\n#SBATCH --output={plan.exp_dir}/slurm-%A_%a.out\n'
              f'# Add --partition/--gres/--time for your cluster.\nset -euo pipefail\n'
              f'cd {shlex.quote(REPO)}\nexport PYTHONPATH={shlex.quote(REPO)}'
              '${PYTHONPATH:+:$PYTHONPATH}\n'
              f'{shlex.join(base + ["--phase", phase])} --index "$SLURM_ARRAY_TASK_ID"\n')
  submit = os.path.join(plan.exp_dir, 'submit.sh')
  results = shlex.quote(shlex.join(base + ['--results']))
  with open(submit, 'w') as f:
    f.write(f'#!/bin/bash\nset -euo pipefail\ncd {shlex.quote(plan.exp_dir)}\n'
            'pre=$(sbatch --parsable pretrain.sbatch)\n'
            'ft=$(sbatch --parsable --dependency=afterok:$pre finetune.sbatch)\n'
            f'sbatch --dependency=afterany:$ft --wrap {results}\n')
  print(f'Wrote {plan.exp_dir}/pretrain.sbatch ({counts["pretrain"]} tasks), finetune.sbatch '
        f'({counts["finetune"]} tasks); submit both with: bash {submit}')
  return 0
