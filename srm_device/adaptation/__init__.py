"""Device adaptation: how the device changes its SRM with its own real-time behaviour."""
