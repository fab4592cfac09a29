"""Store the notebooks' figures losslessly in fewer bytes: a PNG output whose every pixel is
opaque is re-encoded as RGB with maximum compression (the pixels stay exactly the same).

    python scripts/compact_notebook_figures.py notebooks/0*.ipynb

``make notebooks`` runs it after executing them, so the committed notebooks stay small.
"""

from __future__ import annotations

import base64
import io
import sys

import nbformat
import numpy as np
from PIL import Image


def compact_png(data: str) -> str:
    """The base64 PNG ``data``, re-encoded as RGB when it is fully opaque RGBA (else as it was)."""
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    if image.mode == "RGBA" and np.all(np.asarray(image)[..., 3] == 255):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    smaller = base64.b64encode(buffer.getvalue()).decode()
    return smaller if len(smaller) < len(data) else data


def main(paths: list[str]) -> int:
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        before = after = 0
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                if "image/png" in data:
                    before += len(data["image/png"])
                    data["image/png"] = compact_png(data["image/png"].replace("\n", ""))
                    after += len(data["image/png"])
        nbformat.write(notebook, path)
        print(f"{path}: figures {before / 1e6:.2f} -> {after / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
