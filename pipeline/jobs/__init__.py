"""Job files: pydantic models, stage adapters and the runner."""
