"""Write scikit-learn's bundled digits data set (1,797 8x8 images) as a CSV folder: the
example's dataset version. Nothing is downloaded. Usage: python make_dataset.py DIR"""

import csv
import sys
from pathlib import Path

from sklearn.datasets import load_digits


def main(target: str) -> None:
    folder = Path(target)
    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    with open(folder / "digits.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"p{i}" for i in range(digits.data.shape[1])] + ["label"])
        for row, label in zip(digits.data, digits.target, strict=True):
            writer.writerow([int(v) for v in row] + [int(label)])
    (folder / "README.txt").write_text(
        "scikit-learn digits: 8x8 grey images, 64 pixel columns p0..p63 (0-16) and a label 0-9.\n"
    )


if __name__ == "__main__":
    main(sys.argv[1])
