"""`tuneforge estimate`: memory per method and precision, time from a short probe, cost per GPU.

shape.py    the model's dimensions and parameter counts (built on the meta device: no weights)
memory.py   the memory arithmetic (pure functions, documented formulas)
probe.py    a few real training steps here -> seconds per example
prices.py   the editable GPU table (gpus.yaml): memory, $/h, bf16 TFLOP/s
run.py      all of it for one config -> a dict (what the CLI prints and --json writes)
"""

from __future__ import annotations
