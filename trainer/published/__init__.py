"""The published InternLM-XComposer2-VL-7B and MoAI-7B checkpoints: their layout and converters (docs/published.md)."""
