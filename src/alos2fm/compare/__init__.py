"""``alos2fm compare``: which model for these labels? Every arm (Random Forest, U-Net,
Swin from random init or from any encoder, a frozen probe) trained on the same seeded
label budgets, each with its own tuned rate and normalisation, compared seed by seed.

``plan`` (what to compare) -> ``run`` (tuning, then scoring; ``jobs``, ``networks``,
``pixel_arms``) -> ``analysis`` (paired statistics, verdicts) -> ``report``.
"""
