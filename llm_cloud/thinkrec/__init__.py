"""ThinkRec reasoning in the cloud tier (arXiv 2505.15091)."""
