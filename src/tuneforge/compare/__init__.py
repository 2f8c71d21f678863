"""`tuneforge compare`: train a grid of config variants, evaluate each, rank by quality per cost.

grid.py     --grid KEY=V1,V2 ... -> named variants (validated configs), before anything runs
runner.py   each variant in turn: train (its own process), eval; resumable, budgeted
summary.py  the rows, the winner, summary.json / summary.md
plots.py    quality vs training time, quality vs peak memory
"""

from __future__ import annotations
