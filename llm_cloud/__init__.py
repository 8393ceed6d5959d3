"""Cloud tier. For now: the parameter generator (hypernetwork) that writes device-model head parameters."""
