"""Typed questions other packages ask the store: one module per consumer, the only SQL outside the schema."""
