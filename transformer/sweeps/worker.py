"""A search worker: pulls trials from the study and runs each as a `python -m transformer.train`
process, `parallel` at a time, until the study has its trials.

Any number of workers (`--parallel K` slots in one, other processes, Slurm array tasks) share a
study through its storage; each asks the study for the next trial (a WAITING retry first, else
the sampler's proposal), so no two run the same trial. A worker beats for its running trials
every `heartbeat` seconds and, at the same pace, fails the trials whose beats stopped for
3 x heartbeat (their worker died) and queues them again; it stays while other workers' trials
run, so such a trial is resumed here (unless it has started its `max_runs`). A trial's outcome
comes from its process and its trial: exit 0 with `pruned_at` -> PRUNED; exit 0 at its last step
-> COMPLETE with the metric reported at that step; exit 0 earlier or killed by a signal -> FAIL
and queued again (resumes from its checkpoints); any other exit -> FAIL with the error line of
its train.log (not retried).
Ctrl-C / SIGTERM stops the running trials (each saves a checkpoint), queues them again, raises.
"""

import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import optuna

# A worker drives trials outside `Study.optimize`: it needs their storage ids (`_trial_id`) and the
# study's storage (`_storage`) for heartbeats and attributes.
# pylint: disable=protected-access

from transformer.errors import ConfigError
from transformer.sweeps import search as search_lib
from transformer.sweeps.runner import LOG_FILE, REPO, _tail, _write_status, finished_step
from transformer.sweeps import trial as trial_hook
from transformer.training import optim

WORKER = f'{socket.gethostname()}:{os.getpid()}'
FAIL = optuna.trial.TrialState.FAIL


@dataclasses.dataclass
class _Job:
  trial: Any
  name: str
  run_dir: str
  steps: int
  argv: list
  proc: Any
  log_file: Any
  started: float


def _die_with_parent():
  """In the child: SIGTERM when the worker dies (Linux), so a killed worker's run saves and
  stops instead of training on unseen."""
  if sys.platform.startswith('linux'):
    import ctypes  # pylint: disable=import-outside-toplevel
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


class Worker:
  """One worker process; `run()` returns {trial number: outcome} of the trials it ran."""

  def __init__(self, search, workdir, *, parallel=1, max_runs=None, heartbeat=10, poll_s=0.5,
               log=print):
    self.search, self.workdir, self.log = search, os.path.abspath(workdir), log
    self.parallel, self.max_runs, self.heartbeat = parallel, max_runs, heartbeat
    self.poll_s = poll_s
    self.study = search.open(self.workdir, heartbeat=heartbeat)
    self.storage = self.study._storage
    self.jobs, self.outcome, self.started = {}, {}, 0
    self.distributions = {k: d.optuna() for k, d in search.study.space.items()}

  def run(self):
    self.log(f'[search] {self.search.experiment}: {self.summary()}')
    last_check, said = 0.0, None
    try:
      while True:
        for number in [n for n, j in self.jobs.items() if j.proc.poll() is not None]:
          self._finish(self.jobs.pop(number))
        if time.monotonic() - last_check >= self.heartbeat:
          last_check = time.monotonic()
          for job in self.jobs.values():
            self.storage.record_heartbeat(job.trial._trial_id)
          optuna.storages.fail_stale_trials(self.study)   # queued again by search.retry
        self._fill()
        if not self.jobs:
          if self._budget_spent():
            break
          others = self._running_elsewhere()
          if not others and not self._left():
            break
          if others != said:
            said = others
            self.log(f'[search] waiting for {", ".join(others)} (other workers); a trial whose '
                     'worker dies is resumed here')
        time.sleep(self.poll_s if self.jobs else max(self.poll_s, 1.0))
    except KeyboardInterrupt:
      self._interrupt()
      raise
    return self.outcome

  def summary(self):
    trials = self.study.get_trials(deepcopy=False)
    states = [search_lib.STATES[t.state.name] for t in search_lib.counted(trials)]
    counts = ', '.join(f'{states.count(s)} {s}' for s in dict.fromkeys(states))
    return (f'{len(states)} of {self.search.study.trials} trials{f" ({counts})" if counts else ""}'
            f' in {search_lib.shown(self.search.storage_url(self.workdir))}')

  # -- starting -----------------------------------------------------------------------------------
  def _budget_spent(self):
    return self.max_runs is not None and self.started >= self.max_runs

  def _left(self):
    return search_lib.left_to_start(self.search, self.study.get_trials(deepcopy=False))

  def _running_elsewhere(self):
    return [t.user_attrs.get('run_name', f'trial {t.number}')
            for t in self.study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING])
            if t.number not in self.jobs]

  def _fill(self):
    while len(self.jobs) < self.parallel and not self._budget_spent() and self._left():
      if self._start_next() == 'surplus':
        break

  def _start_next(self):
    """Ask for a trial and start its run; 'surplus', 'invalid' or 'started'."""
    trial = self.study.ask(self.distributions)   # a WAITING retry first, else a new proposal
    tid = trial._trial_id
    self.storage.record_heartbeat(tid)
    if search_lib.is_surplus(self.search, self.study, trial):
      self.storage.set_trial_system_attr(tid, 'surplus', True)
      self.study.tell(trial, state=FAIL)
      return 'surplus'
    name = trial.user_attrs.get('run_name') or self.search.run_name(trial.number, trial.params)
    trial.set_user_attr('run_name', name)
    self.storage.set_trial_system_attr(tid, 'worker', WORKER)
    run_dir = os.path.join(self.workdir, self.search.experiment, name)
    self.started += 1
    try:
      config = self.search.load_config(name, trial.params)
    except ConfigError as e:
      self._fail(trial, run_dir, name, f'error: {e}')
      return 'invalid'
    argv = self.search.command(name, trial.params, self.workdir)
    os.makedirs(run_dir, exist_ok=True)
    log_file = open(os.path.join(run_dir, LOG_FILE), 'a')
    _write_status(run_dir, status='running', trial=trial.number, command=shlex.join(argv),
                  started=time.time())
    proc = subprocess.Popen(argv, cwd=REPO, env=self._env(trial), stdout=log_file,
                            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    self.jobs[trial.number] = _Job(trial, name, run_dir, optim.total_steps(config), argv, proc,
                                   log_file, time.time())
    retried = self.storage.get_trial(tid).system_attrs.get('retry_history')
    self.log(f'[search] start  {name} (trial {trial.number}'
             f'{f", again after trial {retried[-1]}" if retried else ""})')
    return 'started'

  def _env(self, trial):
    spec = {'storage': self.search.storage_url(self.workdir), 'study': self.search.experiment,
            'trial_id': trial._trial_id, 'number': trial.number,
            'metric': self.search.study.metric, 'pruner': self.search.pruner_spec()}
    path = os.pathsep.join(p for p in (REPO, os.environ.get('PYTHONPATH')) if p)
    return dict(os.environ, PYTHONPATH=path, **{trial_hook.ENV: json.dumps(spec)})

  # -- finishing ----------------------------------------------------------------------------------
  def _finish(self, job):
    """Tell the study how the trial's process ended (see the module docstring)."""
    job.log_file.close()
    rc, tid = job.proc.returncode, job.trial._trial_id
    trial = self.storage.get_trial(tid)
    values = trial.intermediate_values
    if trial.state.is_finished():
      status, note = 'interrupted', 'another worker found it without heartbeat; queued again'
    elif rc == 0 and 'pruned_at' in trial.system_attrs:
      self.study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)
      status, note = 'pruned', f'at step {trial.system_attrs["pruned_at"]}'
    elif rc == 0 and (finished_step(job.run_dir) or 0) >= job.steps and values:
      value = values[max(values)]
      self.study.tell(trial.number, value)
      status, note = 'done', f'{self.search.study.metric} {value:.4g}'
    elif rc == 0 and (finished_step(job.run_dir) or 0) >= job.steps:
      self._fail(job.trial, job.run_dir, job.name, 'error: the run reported no metric')
      return
    elif rc <= 0:   # stopped early by a signal, or killed: resume it
      self.study.tell(trial.number, state=FAIL)
      again = search_lib.retry(self.search, self.workdir, self.study,
                               self.storage.get_trial(tid), died=rc < 0)
      status, note = 'interrupted', (f'queued again as trial {again}' if again is not None else
                                     f'died {search_lib.MAX_DEATHS + 1} times; not retried')
    else:
      self._fail(job.trial, job.run_dir, job.name, _tail(os.path.join(job.run_dir, LOG_FILE)),
                 rc=rc, started=job.started, argv=job.argv)
      return
    self._record(job.trial.number, job.run_dir, job.name, status, note, rc=rc,
                 started=job.started, argv=job.argv)

  def _fail(self, trial, run_dir, name, error, rc=None, started=None, argv=None):
    self.storage.set_trial_system_attr(trial._trial_id, 'error', error)
    self.study.tell(trial.number, state=FAIL)
    self._record(trial.number, run_dir, name, 'failed', error, rc=rc, started=started, argv=argv)

  def _record(self, number, run_dir, name, status, note, *, rc, started, argv):
    self.outcome[number] = status
    seconds = round(time.time() - started, 1) if started else None
    _write_status(run_dir, status=status, trial=number, returncode=rc, started=started,
                  seconds=seconds, error=note if status == 'failed' else '',
                  note=note, command=shlex.join(argv) if argv else '')
    self.log(f'[search] {status:<6} {name}{f" ({seconds:.0f}s)" if seconds else ""}: {note}')

  def _interrupt(self):
    """Ctrl-C / SIGTERM: every running trial saves and stops, and is queued again."""
    for job in self.jobs.values():
      job.proc.terminate()   # the trainer saves a checkpoint on SIGTERM
    for number, job in list(self.jobs.items()):
      try:
        job.proc.wait(timeout=300)
      except subprocess.TimeoutExpired:
        job.proc.kill()
        job.proc.wait()
      self._finish(self.jobs.pop(number))
