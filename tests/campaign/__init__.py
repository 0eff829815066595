"""The reliability campaign: crash, faults and bad input (`uv run pytest tests/campaign -m campaign`)."""
