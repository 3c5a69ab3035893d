"""Drawing and small helpers."""
