"""Evaluation: segmentation overlap and surface metrics, PANORAMA-style lesion detection, patient AUROC."""
