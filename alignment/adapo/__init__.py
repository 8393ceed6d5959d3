"""AdaPO-style RL for self-evaluation (arXiv 2508.09155) on TRL's ``GRPOTrainer``.

The paper's formulas are not public; this package implements our own documented design: outcome classification
(:mod:`.outcomes`), an adaptive multi-sub-task reward (:mod:`.reward`), a reward-aware dynamic KL coefficient
(:mod:`.kl`), settings (:mod:`.config`) and the training loop with a metrics log and comparison plot
(:mod:`.trainer`).
"""

from alignment.adapo.config import AdapoConfig
from alignment.adapo.kl import RewardGapKL
from alignment.adapo.outcomes import Outcome, OutcomeWindow, classify
from alignment.adapo.reward import SUBTASKS, AdaptiveReward, subtask_rewards

__all__ = ["AdapoConfig", "AdaptiveReward", "Outcome", "OutcomeWindow", "RewardGapKL", "SUBTASKS", "classify",
           "subtask_rewards"]
