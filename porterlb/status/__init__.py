"""``porterlb status``: what porterlb recorded in the API, for people and scripts."""

__all__ = ["command", "report"]
