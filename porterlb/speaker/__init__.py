"""speaker."""
