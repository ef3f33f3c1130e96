"""`make run`: starts the whole platform locally (services, demo model, Envoy) as one foreground command."""
