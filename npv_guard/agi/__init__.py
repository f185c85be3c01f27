"""The FastAGI mode: the same verdicts for admins who keep their own Dial()."""
