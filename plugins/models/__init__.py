"""Built-in model plugins: each module yields ``ModelSpec`` objects; ``_``-prefixed modules are
shared helpers (the training loop, pre-training), not plugins."""
