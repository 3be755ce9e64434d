"""Data for RefineStyle: the SynthFaces offline world (`refinestyle.data.synthfaces`)."""

from __future__ import annotations

from . import synthfaces

__all__ = ["synthfaces"]
