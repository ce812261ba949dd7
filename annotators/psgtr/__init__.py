"""PSGTR (OpenPSG, ResNet-50) scene-graph generation in plain PyTorch: model, post-processing,
checkpoint converter and the `sgg` annotator. Facts: shared/psgtr-spec.md."""
