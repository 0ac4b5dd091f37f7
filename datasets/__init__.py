"""Built-in dataset plugins: generators and loaders with ground truth."""
