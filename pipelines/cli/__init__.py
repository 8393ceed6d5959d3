"""The ``tandem`` command. This package is the composition root: it is the one place in ``tandem`` that imports the
tiers, lazily, inside each command's handler, so ``import tandem`` stays free of tier code."""
