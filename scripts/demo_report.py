"""Write ``report.md`` for a ``scripts/demo.sh`` run: the comparison table and the figures.

Usage: python scripts/demo_report.py DEMO_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNS = {"pretrained": "SAR-W-SimMIM encoder", "random": "random initialisation"}


def _metrics(demo: Path, init: str) -> dict:
    return json.loads((demo / f"finetune-{init}" / "test" / "metrics.json").read_text())


def _figure(demo: Path, path: Path, caption: str) -> str:
    if not path.exists():
        return f"*({caption}: not produced)*"
    return f"![{caption}]({path.relative_to(demo).as_posix()})"


def _verdict(scores: dict[str, dict]) -> str:
    """Which initialisation won and by how much, said with the weight it deserves."""
    pretrained, random = scores["pretrained"]["miou"], scores["random"]["miou"]
    difference = pretrained - random
    if abs(difference) < 0.005:
        outcome = f"The two initialisations tie (test mIoU {pretrained:.3f} and {random:.3f})."
    else:
        winner = RUNS["pretrained"] if difference > 0 else RUNS["random"]
        outcome = (
            f"**{winner}** won, by {abs(difference):.3f} test mIoU "
            f"({pretrained:.3f} pretrained vs {random:.3f} random)."
        )
    return (
        f"{outcome} This is one run of each, one seed, on one synthetic scene with tiny "
        "models: it is no evidence for or against pretraining. For that, see the real-SAR "
        "study with several split seeds and paired differences in "
        "`experiments/flevoland/RESULTS.md`."
    )


def report(demo: Path) -> str:
    stats = json.loads((demo / "dataset" / "stats.json").read_text())
    names = stats["class_names"]
    scores = {init: _metrics(demo, init) for init in RUNS}
    lines = [
        "# alos2fm demo report (synthetic scene)",
        "",
        "Everything here comes from a **synthetic** ALOS-2-like L2.1 scene made by "
        "`alos2fm synth`, with tiny CPU models trained for a few hundred steps: it shows that the "
        "pipeline runs end to end and what each stage writes, not how well the method works.",
        "",
        "## Test-split scores",
        "",
        "| initialisation | mIoU | mean accuracy | overall accuracy | kappa | pixels |",
        "|---|---|---|---|---|---|",
    ]
    for init, label in RUNS.items():
        m = scores[init]
        lines.append(
            f"| {label} | {m['miou']:.3f} | {m['mean_accuracy']:.3f} | "
            f"{m['overall_accuracy']:.3f} | {m['kappa']:.3f} | {m['pixels']} |"
        )
    lines += ["", _verdict(scores)]
    lines += ["", "## Per-class IoU", "", "| class | " + " | ".join(RUNS.values()) + " |"]
    lines.append("|---|" + "---|" * len(RUNS))
    for name in names:
        cells = []
        for init in RUNS:
            iou = scores[init]["per_class"].get(name, {}).get("iou")
            cells.append("–" if iou is None else f"{iou:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Figures",
        "",
        "Class distribution before and after balancing (`dataset/class_distribution.png`):",
        "",
        _figure(demo, demo / "dataset" / "class_distribution.png", "class distribution"),
        "",
        "Pretraining reconstructions (input, mask, reconstruction, SAR-W weight) and loss:",
        "",
        _figure(demo, _last(demo / "pretrain" / "figures", "reconstruction_*.png"), "recon"),
        _figure(demo, demo / "pretrain" / "figures" / "loss_curve.png", "pretraining loss"),
        "",
        "Evaluation of the pretrained run (`evaluation/`):",
        "",
        _figure(demo, demo / "evaluation" / "confusion_matrix.png", "confusion matrix"),
        _figure(demo, demo / "evaluation" / "per_class_iou.png", "per-class IoU"),
        "",
        "Predicted land-cover map of the whole scene (`map/landcover_map.tif`):",
        "",
        _figure(demo, demo / "map" / "landcover_map.png", "predicted map"),
        "",
    ]
    return "\n".join(lines)


def _last(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    return found[-1] if found else folder / pattern


def main() -> None:
    demo = Path(sys.argv[1] if len(sys.argv) > 1 else "demo")
    text = report(demo)
    tmp = demo / "report.md.tmp"
    tmp.write_text(text)
    tmp.replace(demo / "report.md")


if __name__ == "__main__":
    main()
