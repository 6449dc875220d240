"""Shared fixtures for the Slurm client tests."""

from __future__ import annotations

import sys
from pathlib import Path

# These tests need no Django; with `-p no:django` nothing puts the repository on the path.
ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
