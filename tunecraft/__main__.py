"""``python -m tunecraft`` (also what ``torchrun -m tunecraft train RECIPE`` runs)."""

from .cli import entry

entry()
