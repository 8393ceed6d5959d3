"""Tandem: a device–cloud collaborative recommender.

This package is the shared core: datasets and the split, the item catalogue, configuration helpers, atomic artifact
I/O, the HTTP wire models and the artifact store. It imports none of the tiers; the ``tandem`` command lives on the
top floor, :mod:`pipelines.cli`.
"""

__version__ = "0.1.0"
