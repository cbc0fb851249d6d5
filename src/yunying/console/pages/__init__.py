"""Console pages, one module per area; each defines ``register(console)``."""
