"""Pieces shared by the LLM-using tiers (cloud, merging, alignment): the SmolLM2 loader, the TRL SFT runner, the
teacher wrapper and PEFT adapter I/O. Imports only the core (``tandem``)."""
