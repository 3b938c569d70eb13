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


def _timings(demo: Path) -> list[str]:
    """The wall-clock table of ``timings.tsv`` (written by scripts/demo.sh)."""
    path = demo / "timings.tsv"
    if not path.is_file():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    lines = ["| stage | seconds | threads |", "|---|---|---|"]
    lines += [f"| {name} | {seconds} | {threads} |" for name, seconds, threads in rows]
    return lines


def _validation(demo: Path, test: dict) -> list[str]:
    """What ``evaluate --split val`` adds: the scores of the split that chose the checkpoint."""
    path = demo / "evaluation-val" / "metrics.json"
    if not path.is_file():
        return []
    val = json.loads(path.read_text())
    return [
        "",
        "## Validation split (`evaluate --split val`)",
        "",
        "The best checkpoint was chosen on the validation split, so its score there is "
        "optimistic; the gap to the test split is what the selection flattered it by.",
        "",
        "| pretrained run | mIoU | mean accuracy | overall accuracy | kappa | pixels |",
        "|---|---|---|---|---|---|",
        *(
            f"| {split} | {m['miou']:.3f} | {m['mean_accuracy']:.3f} | "
            f"{m['overall_accuracy']:.3f} | {m['kappa']:.3f} | {m['pixels']} |"
            for split, m in (("validation", val), ("test", test))
        ),
        "",
        _figure(demo, demo / "evaluation-val" / "confusion_matrix.png", "validation confusion"),
    ]


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
    lines += _validation(demo, scores["pretrained"])
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
        "Pretraining reconstructions of the same training patches at the first and the "
        "last figure epoch (input and reconstruction in dB, hidden pixels marked), and the "
        "pretraining loss (`pretrain/figures/`):",
        "",
        *(
            _figure(demo, path, f"reconstructions, {path.stem[-5:]}")
            for path in _first_and_last(demo / "pretrain" / "figures", "reconstruction_*.png")
        ),
        _figure(demo, demo / "pretrain" / "figures" / "loss_curve.png", "pretraining loss"),
        "",
        "Fine-tuning curves, losses and validation scores by optimiser step "
        "(`finetune-*/figures/training_curves.png`):",
        "",
        *(
            _figure(demo, demo / f"finetune-{init}" / "figures" / "training_curves.png", label)
            for init, label in RUNS.items()
        ),
        "",
        "Test split of the pretrained run (`finetune-pretrained/test/`):",
        "",
        _figure(demo, demo / "finetune-pretrained" / "test" / "confusion_matrix.png", "confusion"),
        _figure(demo, demo / "finetune-pretrained" / "test" / "per_class_iou.png", "per-class IoU"),
        "",
        "Predicted land-cover map of the whole scene (`map/landcover_map.tif`):",
        "",
        _figure(demo, demo / "map" / "landcover_map.png", "predicted map"),
        "",
    ]
    if timings := _timings(demo):
        lines += ["## Wall-clock time per stage", "", *timings, ""]
        lines += [
            "Fine-tuning from random initialisation runs on a second core beside pretraining "
            "and the pretrained fine-tuning, so the stages add up to more than the total.",
            "",
        ]
    return "\n".join(lines)


def _first_and_last(folder: Path, pattern: str) -> list[Path]:
    found = sorted(folder.glob(pattern))
    return [found[0], found[-1]] if len(found) > 1 else found or [folder / pattern]


def main() -> None:
    demo = Path(sys.argv[1] if len(sys.argv) > 1 else "demo")
    text = report(demo)
    tmp = demo / "report.md.tmp"
    tmp.write_text(text)
    tmp.replace(demo / "report.md")


if __name__ == "__main__":
    main()
