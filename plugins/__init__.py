"""Built-in model, attribution-method and metric plugins, one module per family."""
