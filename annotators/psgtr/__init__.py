"""PSGTR (OpenPSG, ResNet-50) scene-graph generation in plain PyTorch: model, post-processing,
checkpoint converter and the `sgg` annotator. What it computes, and how MoAI's copy differs:
docs/scene-graphs.md."""
