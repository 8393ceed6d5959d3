"""Parameter generation for the device SRM (DUET, arXiv 2302.04397; Persona, arXiv 2509.06552)."""
