"""A synthetic VQA ablation: does MoAI's auxiliary information reach the answers? (`trainer ablation`)"""
from .run import main

__all__ = ["main"]
