"""Tandem: a device–cloud collaborative recommender.

This package is the shared core: datasets, the item catalogue, configuration helpers, atomic artifact I/O and the
``tandem`` command. It imports none of the tiers.
"""

__version__ = "0.1.0"
