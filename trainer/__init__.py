"""Trains MoAI's Compressor and Mixer from the pipeline's annotation Parquet (read through schemas/)."""
