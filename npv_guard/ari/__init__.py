"""The ARI (Stasis) mode: the guard owns each outbound call in Asterisk."""
