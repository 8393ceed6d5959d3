"""Offline merging of LoRA experts and whole models: CKI (arXiv 2501.07596), CAPS (Graft, arXiv 2506.23940),
linear, task arithmetic, TIES and DARE; reads and writes PEFT adapter folders."""
