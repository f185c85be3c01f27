"""Text messages (SMS) through the ARI application."""
