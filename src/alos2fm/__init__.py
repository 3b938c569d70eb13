"""alos2fm: from ALOS-2 PALSAR-2 products to land-cover maps.

Stages, each a sub-package:
    products    read ALOS-2 products (CEOS, GeoTIFF, mosaics, dB rasters) and calibrate to dB
    data        labels, tiling, balancing, splitting, the Zarr patch store and its dataset
    models      Swin/ViT encoders, SimMIM, MixMAE, SAR-W weighting, UPerNet segmenter
    train       the Lightning engine for pretraining and fine-tuning
    evaluation  exact metrics, figures, full-scene prediction, export
"""

from alos2fm.threads import limit_openmp_spinning

__version__ = "0.1.0"

# Before anything loads torch: its OpenMP reads the setting once (alos2fm.threads).
limit_openmp_spinning()
