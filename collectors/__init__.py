"""Signals in: parse router expositions, turn counters into minute aggregates, store them,
and derive hourly signals and hour-of-week profiles.

Import the module you need (``collectors.store``, ``collectors.exposition``, ...); the
package itself re-exports nothing, so that importing one collector loads no other."""

__all__: list[str] = []
