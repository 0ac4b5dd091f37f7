"""Built-in metric plugins: each module yields ``MetricSpec`` objects; ``_common`` holds the checks
and helpers they share, not a plugin."""
