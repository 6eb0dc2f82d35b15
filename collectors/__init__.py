"""Signals in: parse router expositions, turn counters into minute aggregates, store them,
and derive hourly signals and hour-of-week profiles."""
