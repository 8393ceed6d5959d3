"""Training scripts of the cloud LLM (TRL's SFTTrainer)."""
