"""The README and docs/ stay true to the code."""
