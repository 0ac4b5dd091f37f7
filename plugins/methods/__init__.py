"""Built-in attribution-method plugins: each module yields ``MethodSpec`` objects; ``_surgery`` is
the shared helper that makes a model safe for hook-based libraries, not a plugin."""
