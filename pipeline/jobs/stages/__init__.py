"""Stage adapters: each wires a stage's array functions to the engine for the runner."""
