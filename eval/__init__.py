"""Evaluation: the time-ordered leave-one-out protocol, ranking metrics, and full-ranking evaluation."""
