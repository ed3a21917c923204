"""A/B updates with RAUC and what makes them safe: data-version markers on every store."""
