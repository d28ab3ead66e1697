"""histosynth: generate, control and audit synthetic histopathology data.

The top-level package imports nothing heavy, so ``histosynth --help`` stays fast;
import the stage you need, e.g. ``from histosynth.data import load_manifest``.
"""

__version__ = "0.1.0"
