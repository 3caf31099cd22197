"""Read models: each one small, rebuildable, tracked by position."""
