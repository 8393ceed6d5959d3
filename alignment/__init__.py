"""Self-evaluation training: Cas-SEAT data synthesis and SFT (``alignment.seat``), AdaPO on TRL's GRPO
(``alignment.adapo``)."""
