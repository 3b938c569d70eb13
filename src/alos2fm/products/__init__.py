"""Readers for ALOS-2 products and other SAR rasters, and DN -> dB calibration."""
