"""An sbatch job-array script for a sweep: array task i runs run i of the sweep file."""

import os
import shlex
import sys

from transformer.sweeps.runner import REPO, override_text


def slurm_script(sweep, workdir, *, parallel=None, sweep_path=None):
  """An sbatch job-array script: array task i runs `python -m transformer.sweep FILE --index i`."""
  n = len(sweep.runs)
  exp_dir = os.path.abspath(os.path.join(workdir, sweep.experiment))
  cmd = shlex.join([sys.executable, '-m', 'transformer.sweep',
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




def search_slurm_script(search, workdir, *, tasks=1):
  """An sbatch array of `tasks` search workers: each pulls trials from the one study (its
  storage: --storage, else the SQLite file in the experiment directory) until it has them all."""
  exp_dir = os.path.abspath(os.path.join(workdir, search.experiment))
  url = search.storage_url(workdir)
  cmd = shlex.join([sys.executable, '-m', 'transformer.sweep', os.path.abspath(search.path),
                    '--workdir', os.path.abspath(workdir), '--storage', url] +
                   [f'--config.{k}={override_text(v)}' for k, v in search.extra_overrides.items()])
  sqlite = ('# SQLite on a shared file system suits a few workers; for many, give --storage\n'
            '# postgresql://user@host/db (or mysql://...) reachable from every node.\n'
            if url.startswith('sqlite') else '')
  return f"""#!/bin/bash
#SBATCH --job-name={search.experiment}
#SBATCH --array=0-{tasks - 1}
#SBATCH --output={exp_dir}/slurm-%A_%a.out
# Add --partition/--gres/--time for your cluster. {tasks} worker(s) share the study of
# {search.study.trials} trials; each runs one trial at a time until none is left. Resubmit to
# continue an interrupted study (trials whose task died are retried from their checkpoints).
{sqlite}set -euo pipefail
cd {shlex.quote(REPO)}
export PYTHONPATH={shlex.quote(REPO)}${{PYTHONPATH:+:$PYTHONPATH}}
{cmd}
# The table, plots and best trial are rewritten as each worker ends; to rebuild them:
#   {cmd} --results
"""
