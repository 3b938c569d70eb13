"""Weights in and out: the method authors' released checkpoints, timm / Hugging Face folders."""
