"""The ``histosynth`` command line: ``histosynth <stage> <verb>``."""
