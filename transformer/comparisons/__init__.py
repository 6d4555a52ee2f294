"""Architecture comparisons: cells (architecture x objective) pretrained at a matched budget and
fine-tuned on shared downstream tasks over seeds, then tables and intervals over the seeds.

  plan.py     the declaration, budgets (matched FLOPs), the pretrain and fine-tune phases (run
              through the sweep runner)
  tasks.py    the downstream tasks: their data, how each family fine-tunes and is scored
  corpora.py  the data under <experiment>/data/: pretraining text, tasks' train/test files and
              the tokenizer's text, split by module file so no test example was seen before
  overlap.py  n-gram overlap of test text with the pretraining / tokenizer text (the report)
  results.py  the tables, CSVs and plot, rebuilt from the runs' event files and decodes
  pairs.py    every pair of cells per (task, metric): differences, d_z, raw / Holm / BH p-values,
              the paired bootstrap over seeds and eval examples
  stats.py    intervals over seeds (bounded, nested), paired tests, effect sizes, multiplicity
              corrections, the bootstrap
  slurm.py    the phases as Slurm job arrays

A declaration imports its task constructors from here:
  from transformer.comparisons import classification, generation
The entry point is `python -m transformer.compare` (`./launch.sh compare`).
"""

from transformer.comparisons.tasks import classification, generation

__all__ = ['classification', 'generation']
