"""The top floor: the ``tandem`` CLI and the build pipelines that wire the tiers together (build, thresholds,
candidate cache, collaboration training, simulation, ThinkRec build). Nothing below imports this package."""
