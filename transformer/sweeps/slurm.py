"""An sbatch job-array script for a sweep: array task i runs run i of the sweep file."""

import os
import shlex
import sys

from transformer.sweeps.runner import REPO, override_text


def slurm_script(sweep, workdir, *, parallel=None, sweep_path=None):
  """An sbatch job-array script: array task i runs `python -m transformer.sweeps FILE --index i`."""
  n = len(sweep.runs)
  exp_dir = os.path.abspath(os.path.join(workdir, sweep.experiment))
  cmd = shlex.join([sys.executable, '-m', 'transformer.sweeps',
                    os.path.abspath(sweep_path or sweep.path), '--workdir',
                    os.path.abspath(workdir)] +
                   [f'--config.{k}={override_text(v)}' for k, v in sweep.extra_overrides.items()])
  names = '\n'.join(f'#   {i}: {r["name"]}' for i, r in enumerate(sweep.runs))
  return f"""#!/bin/bash
#SBATCH --job-name={sweep.experiment}
#SBATCH --array=0-{n - 1}{f'%{parallel}' if parallel else ''}
#SBATCH --output={exp_dir}/slurm-%A_%a.out
# Add --partition/--gres/--time for your cluster. One array task per run:
{names}
set -euo pipefail
cd {shlex.quote(REPO)}
export PYTHONPATH={shlex.quote(REPO)}${{PYTHONPATH:+:$PYTHONPATH}}
{cmd} --index "$SLURM_ARRAY_TASK_ID"
# When every task has finished, collect the table and plot:
#   {cmd} --results
"""


