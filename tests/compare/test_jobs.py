"""Where a comparison's runs live, and what makes two runs the same run."""

from pathlib import Path

from alos2fm.compare.jobs import job_folder


def test_a_run_folder_names_its_budget_seed_and_rate():
    out = Path("cmp")
    assert job_folder(out, "scored", "swin", "k1", 3, 0.018) == out / "runs/swin/k1/seed3_lr0.018"
    assert (
        job_folder(out, "tuning", "unet", "0.1%", 100, 2e-3)
        == out / "tuning/unet/0.1pct/seed100_lr0.002"
    )
    # arms without a rate (the forest, probes): the seed alone
    assert job_folder(out, "scored", "rf", "100%", 0, None) == out / "runs/rf/100pct/seed0"
    # a rate chosen anew after a wider sweep is another run, beside the first
    assert job_folder(out, "scored", "swin", "k1", 3, 0.054) != job_folder(
        out, "scored", "swin", "k1", 3, 0.018
    )
