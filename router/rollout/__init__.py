"""router/rollout."""
