"""Figures: training curves, label overlays and the ipywidgets slice viewer."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.patches import Patch

from unetlib.labels import LABEL_COLOURS, LABELS
from unetlib.layout import volume_key

__all__ = [
    "FOREGROUND",
    "draw",
    "label_overlay",
    "plot_history",
    "legend_handles",
    "show_slice",
    "plot_class_frequencies",
    "plot_intensity_histograms",
    "show_feature_maps",
    "plot_unet_diagram",
    "plot_confusion",
    "show_pairs",
    "plot_predictions",
    "show_snapshots",
    "show_probability_maps",
    "plot_surface_distances",
    "VIEWS",
    "ERROR_COLOURS",
    "SliceViewer",
    "save_figure",
]

FOREGROUND = tuple(range(1, len(LABELS)))


def draw(ax, array: np.ndarray, **imshow_options):
    """Show a slice ``[256, S]`` (or an RGBA overlay made by :func:`label_overlay`) as a
    coronal view: left-right across — the patient's right on the viewer's left, as
    radiologists read — and superior at the top.

    Args:
        ax: the matplotlib axes to draw on.
        array: a slice ``(256, S)`` or ``(256, S, 1)`` (left-right first, then inferior→superior),
            or an RGBA overlay ``(S, 256, 4)`` already in display orientation.
        **imshow_options: passed to ``ax.imshow`` (e.g. ``cmap="gray"``, ``vmin``, ``vmax``).

    Returns:
        The ``AxesImage`` that ``imshow`` made (e.g. for a colour bar).
    """
    array = np.squeeze(array)
    return ax.imshow(array if array.ndim == 3 else array.T, origin="lower", **imshow_options)


def label_overlay(labels: np.ndarray, classes=FOREGROUND, alpha: float = 0.45) -> np.ndarray:
    """RGBA overlay of a label map in display orientation (``[S, 256, 4]``, i.e. transposed;
    draw it with :func:`draw`).

    Pixels of the listed classes get their class colour at opacity ``alpha``; all others
    stay transparent.

    Args:
        labels: class indices ``(256, S)`` of one slice.
        classes: the class indices to colour; by default the foreground, 1..5.
        alpha: opacity of the coloured pixels, 0 (invisible) to 1 (opaque).

    Returns:
        A float64 array ``(S, 256, 4)`` of RGBA values in [0, 1].
    """
    rgba = np.zeros((*labels.T.shape, 4))
    for c in classes:
        rgba[labels.T == c] = (*to_rgba(LABEL_COLOURS[LABELS[c]])[:3], alpha)
    return rgba


def plot_history(history: dict[str, list[float]], validation_every: int = 1):
    """Loss and Dice per epoch, training (solid) vs validation (dashed): look for the gap that means
    overfitting; and the learning rate, when the history has it.

    ``history`` is a run's history (``TrainResult.history``, numbered by its ``epoch`` column) or
    the dict ``model.fit`` returns; ``validation_every`` is the ``validation_freq`` it ran with.
    Epochs are drawn counting from 1.

    Args:
        history: lists of floats by metric name (``loss``, ``val_loss``, ``foreground_dice``, ...).
        validation_every: epochs between validations (1: every epoch).

    Returns:
        The matplotlib figure (close it with ``plt.close`` when drawing many).
    """
    from matplotlib.ticker import MaxNLocator

    rates = history.get("learning_rate")
    fig, axes = plt.subplots(1, 3 if rates else 2, figsize=(13 if rates else 10, 3.5))
    loss_ax, dice_ax = axes[:2]
    epochs = np.asarray(history.get("epoch", range(len(history.get("loss", [])))), dtype=int) + 1
    marker = "o" if len(epochs) <= 40 else ""
    for key, ax, label, colour in (
        ("loss", loss_ax, "loss", "#333333"),
        ("foreground_dice", dice_ax, "foreground Dice", "#3a86ff"),
        ("prostate_dice", dice_ax, "prostate Dice", LABEL_COLOURS["prostate"]),
    ):
        if key in history:
            ax.plot(epochs, history[key], marker + "-", color=colour, label=f"train {label}")
        if f"val_{key}" in history:
            validated = epochs[validation_every - 1 :: validation_every][: len(history[f"val_{key}"])]
            ax.plot(validated, history[f"val_{key}"], "s--", color=colour, label=f"validation {label}")
    loss_ax.set(title="Loss (log scale)", xlabel="epoch", yscale="log")
    dice_ax.set(title="Dice (hard, pooled)", xlabel="epoch", ylim=(0, 1))
    if rates:
        axes[2].plot(epochs, rates, marker + "-", color="#333333", label="at the epoch's last step")
        axes[2].set(title="Learning rate", xlabel="epoch", ylim=(0, None))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_lr_find(search):
    """The learning-rate range test's loss against the rate (log scale), with the suggested rate marked.

    Args:
        search: :func:`unetlib.training.lr_find`'s result.

    Returns:
        The matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(search.rates, search.losses, "-", color="#333333")
    ax.axvline(search.suggestion, color=LABEL_COLOURS["prostate"], ls="--", label=f"suggested {search.suggestion:.1e}")
    lowest = int(np.argmin(search.losses))
    ax.plot(search.rates[lowest], search.losses[lowest], "o", color="#3a86ff", label="lowest loss")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)", title="Learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def legend_handles(classes=FOREGROUND) -> list[Patch]:
    """Legend patches naming each class in its overlay colour.

    Args:
        classes: the class indices to list; by default the foreground, 1..5.
    """
    return [Patch(color=LABEL_COLOURS[LABELS[c]], label=LABELS[c]) for c in classes]


def show_slice(image: np.ndarray, labels: np.ndarray | None = None, *, ax=None, alpha: float = 0.45, title: str = ""):
    """Draw one coronal slice (see :func:`draw`) with a label overlay.

    Args:
        image: the slice ``(256, S)`` or ``(256, S, 1)``, drawn in grey.
        labels: class indices ``(256, S)`` to overlay, or None for the image alone.
        ax: the axes to draw on; None makes a new 6×3.2-inch figure.
        alpha: opacity of the overlay, 0 to 1.
        title: the axes' title.

    Returns:
        The axes drawn on.
    """
    ax = ax or plt.subplots(figsize=(6, 3.2))[1]
    draw(ax, image, cmap="gray")
    if labels is not None:
        draw(ax, label_overlay(labels, alpha=alpha), interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return ax


def plot_class_frequencies(labels: np.ndarray):
    """Share of voxels per class (log scale) and share of slices containing each class.

    Args:
        labels: class indices ``(N, H, W)`` of a split.

    Returns:
        The matplotlib figure (close it with ``plt.close`` when drawing many).
    """
    counts = np.bincount(labels.ravel(), minlength=len(LABELS))
    present = np.array([np.any(labels == c, axis=(1, 2)).mean() for c in range(len(LABELS))])
    colours = ["#555555"] + [LABEL_COLOURS[n] for n in LABELS[1:]]
    fig, (voxels_ax, slices_ax) = plt.subplots(1, 2, figsize=(11, 3.4))
    voxels_ax.bar(LABELS, 100 * counts / counts.sum(), color=colours, edgecolor="black")
    voxels_ax.set(yscale="log", ylabel="% of all voxels (log scale)", title="How much of the data is each class?")
    slices_ax.bar(LABELS, 100 * present, color=colours, edgecolor="black")
    slices_ax.set(ylabel="% of slices", ylim=(0, 105), title="How often does each class appear?")
    for ax in (voxels_ax, slices_ax):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def plot_intensity_histograms(images: np.ndarray, labels: np.ndarray, bins: int = 120):
    """Normalised intensity distribution of each class: overlap means a threshold cannot separate them.

    Args:
        images: z-scored slices ``(N, H, W, 1)``.
        labels: their class indices ``(N, H, W)``.
        bins: number of bin edges, evenly spaced between the 0.5th and 99.8th intensity percentile.

    Returns:
        The matplotlib figure (close it with ``plt.close`` when drawing many).
    """
    fig, ax = plt.subplots(figsize=(9, 3.6))
    values = images[..., 0]
    edges = np.linspace(*np.percentile(values, [0.5, 99.8]), bins)
    for c, name in enumerate(LABELS):
        colour = "#555555" if c == 0 else LABEL_COLOURS[name]
        ax.hist(values[labels == c], bins=edges, density=True, histtype="step", linewidth=2, color=colour, label=name)
    ax.set(xlabel="z-scored intensity", ylabel="density", title="Intensity by class")
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    return fig


def show_feature_maps(image: np.ndarray, maps: np.ndarray, titles: list[str]):
    """The input slice next to feature maps ``[H, W, K]`` (e.g. after a 3×3 conv + ReLU).

    Args:
        image: the input slice ``(H, W)`` or ``(H, W, 1)``.
        maps: the K feature maps ``(H, W, K)``, each drawn with its own colour range.
        titles: one title per map.

    Returns:
        The matplotlib figure (close it with ``plt.close`` when drawing many).
    """
    count = maps.shape[-1] + 1
    fig, axes = plt.subplots(1, count, figsize=(3.1 * count, 2.1))
    draw(axes[0], image, cmap="gray")
    axes[0].set_title("input")
    for k, ax in enumerate(axes[1:]):
        draw(ax, maps[..., k], cmap="magma")
        ax.set_title(titles[k], fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_unet_diagram(features: tuple[int, ...], input_shape: tuple[int, int] = (256, 128)):
    """A U-shaped block diagram: one box per level (filters, resolution), skips across.

    Args:
        features: filters per encoder level, the bridge last (a config's ``features``).
        input_shape: ``(height, width)`` of the input slice, halved at each level.

    Returns:
        The matplotlib figure (close it with ``plt.close`` when drawing many).
    """
    depth = len(features) - 1
    fig, ax = plt.subplots(figsize=(11, 4.6))
    height, width = input_shape

    def box(x, y, text, colour):
        ax.add_patch(plt.Rectangle((x - 0.45, y - 0.3), 0.9, 0.6, facecolor=colour, edgecolor="black"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8)

    for level in range(depth + 1):
        size = f"{height >> level}×{width >> level}"
        y = depth - level
        if level < depth:
            box(level, y, f"enc{level + 1}\n{features[level]} filters\n{size}", "#cfe2ff")
            box(2 * depth - level, y, f"dec{level + 1}\n{features[level]} filters\n{size}", "#d1f2d9")
            ax.annotate(
                "",
                xy=(2 * depth - level - 0.47, y),
                xytext=(level + 0.47, y),
                arrowprops=dict(arrowstyle="->", color="grey", linestyle="--"),
            )
            ax.text(depth, y + 0.12, "skip (concatenate)", ha="center", fontsize=7, color="grey")
            ax.annotate(
                "",
                xy=(level + 1, y - 1 + 0.3),
                xytext=(level, y - 0.3),
                arrowprops=dict(arrowstyle="->", color="#1f4e9c"),
            )
            ax.annotate(
                "",
                xy=(2 * depth - level, y - 0.3),
                xytext=(2 * depth - level - 1, y - 1 + 0.3),
                arrowprops=dict(arrowstyle="->", color="#1b7a3a"),
            )
        else:
            box(level, y, f"bridge\n{features[level]} filters\n{size}", "#ffe5b4")
    ax.text(0, depth + 0.6, "input slice → ", ha="center", fontsize=9)
    ax.text(2 * depth, depth + 0.6, "→ softmax: 6 class probabilities per pixel", ha="center", fontsize=9)
    ax.text(depth / 2 - 0.6, depth / 2 - 0.6, "2×2 max-pool", color="#1f4e9c", fontsize=8, rotation=-40)
    ax.text(1.5 * depth + 0.2, depth / 2 - 0.6, "2×2 up-sample", color="#1b7a3a", fontsize=8, rotation=40)
    ax.set(xlim=(-0.7, 2 * depth + 0.7), ylim=(-0.6, depth + 0.9))
    ax.axis("off")
    fig.tight_layout()
    return fig


def plot_confusion(matrix: np.ndarray):
    """Row-normalised confusion matrix: where does each true class end up?

    Args:
        matrix: voxel counts ``(6, 6)``, ``[true, predicted]`` (e.g. ``EvaluationReport.confusion``).

    Returns:
        The matplotlib figure (close it with ``plt.close`` when drawing many).
    """
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(LABELS)):
        for j in range(len(LABELS)):
            ax.text(
                j,
                i,
                f"{rows[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rows[i, j] > 0.6 else "black",
            )
    ax.set(
        xticks=range(len(LABELS)),
        yticks=range(len(LABELS)),
        xlabel="predicted",
        ylabel="true",
        title="Confusion (each row sums to 1)",
    )
    ax.set_xticklabels(LABELS, rotation=35)
    ax.set_yticklabels(LABELS)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def show_pairs(images: np.ndarray, labels: np.ndarray, titles: list[str], columns: int = 4, alpha: float = 0.45):
    """A grid of slices with their label overlays (e.g. augmented copies, worst cases).

    Args:
        images: slices ``(N, H, W, 1)``.
        labels: class indices ``(N, H, W)`` to overlay.
        titles: one title per slice.
        columns: slices per row.
        alpha: opacity of the overlays, 0 to 1.

    Returns:
        The matplotlib figure (close it with ``plt.close`` when drawing many).
    """
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label_map, title in zip(axes.flat, images, labels, titles):
        show_slice(image, label_map, ax=ax, alpha=alpha, title=title)
        ax.title.set_fontsize(8)
    fig.legend(handles=legend_handles(), loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_predictions(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, titles: list[str]):
    """Ground truth (top row) above prediction (bottom row) for each slice, one column per slice.

    Args:
        images: slices ``(K, H, W, 1)``.
        labels: their true class indices ``(K, H, W)``.
        predictions: predicted class indices ``(K, H, W)``.
        titles: one title per slice, e.g. its key.

    Returns:
        The matplotlib figure (close it with ``plt.close`` when drawing many).
    """
    count = len(images)
    return show_pairs(
        np.concatenate([images, images]),
        np.concatenate([labels, predictions]),
        [f"truth {t}" for t in titles] + ["prediction"] * count,
        columns=count,
    )


def show_snapshots(folder, epochs: list[int] | None = None):
    """Stack the per-epoch prediction figures a run wrote to ``folder`` (``epoch_NNN.png``):
    by default the first, a middle and the last epoch.

    Args:
        folder: a run's ``snapshots`` folder.
        epochs: epoch numbers as in the file names (counting from 1), or None.

    Raises:
        FileNotFoundError: ``folder`` holds no snapshots, or none for an epoch asked for.

    Returns:
        The matplotlib figure (close it with ``plt.close`` when drawing many).
    """
    from pathlib import Path

    files = sorted(Path(folder).glob("epoch_*.png"))
    if not files:
        raise FileNotFoundError(f"{folder}: no epoch_*.png snapshots (training writes one after each epoch)")
    by_epoch = {int(f.stem.split("_")[1]): f for f in files}
    if epochs is None:
        numbers = sorted(by_epoch)
        epochs = sorted({numbers[0], numbers[len(numbers) // 2], numbers[-1]})
    missing = [e for e in epochs if e not in by_epoch]
    if missing:
        raise FileNotFoundError(f"{folder}: no snapshot for epoch(s) {missing}; it holds {sorted(by_epoch)}")
    pictures = [plt.imread(by_epoch[e]) for e in epochs]
    width = max(p.shape[1] for p in pictures)
    scale = 0.0065  # inches per pixel of the stored figures: two-thirds of their size keeps a notebook light
    fig, axes = plt.subplots(
        len(pictures), 1, figsize=(scale * width, scale * sum(p.shape[0] for p in pictures)), squeeze=False
    )
    for ax, picture in zip(axes[:, 0], pictures):
        ax.imshow(picture)
        ax.axis("off")
    fig.subplots_adjust(0, 0, 1, 1, 0, 0)
    return fig


def show_probability_maps(image: np.ndarray, probabilities: np.ndarray):
    """The slice, the network's softmax output ``[H, W, 6]`` as one probability map per class,
    and the label map they give (each pixel's most probable class), two panels a row.

    Args:
        image: the slice ``(H, W)`` or ``(H, W, 1)``.
        probabilities: the model's softmax output for it, ``(H, W, 6)``.

    Returns:
        The matplotlib figure (close it with ``plt.close`` when drawing many).
    """
    fig, axes = plt.subplots(4, 2, figsize=(10, 10.5), layout="constrained")
    axes = axes.ravel()
    draw(axes[0], image, cmap="gray")
    axes[0].set_title("input", fontsize=10)
    for c, ax in enumerate(axes[1 : len(LABELS) + 1]):
        shown = draw(ax, probabilities[..., c], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"P({LABELS[c]})", fontsize=10)
    show_slice(image, np.argmax(probabilities, axis=-1), ax=axes[-1], title="label map: the most probable class")
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes, fraction=0.03, pad=0.02, label="probability")
    return fig


def plot_surface_distances(
    image: np.ndarray, true_mask: np.ndarray, pred_mask: np.ndarray, spacing: tuple[float, float], margin: int = 12
):
    """What HD95 measures on one slice: the true and predicted borders (left, zoomed on the
    organ) and the distances from each border pixel to the other border, with the 95th
    percentile of each direction and their maximum, the HD95 (right).

    Args:
        image: the slice ``(H, W)`` or ``(H, W, 1)``.
        true_mask: the true organ, a boolean ``(H, W)`` array; not empty.
        pred_mask: the predicted organ, a boolean ``(H, W)`` array; not empty.
        spacing: pixel size in mm along rows and columns.
        margin: pixels shown around the organ in the zoomed view.

    Returns:
        The matplotlib figure (close it with ``plt.close`` when drawing many).
    """
    from unetlib.metrics import hausdorff95, surface_distances

    pred_to_true, true_to_pred = surface_distances(true_mask, pred_mask, spacing)
    hd95 = hausdorff95(true_mask, pred_mask, spacing)
    rows, columns = np.nonzero(true_mask | pred_mask)
    window = (
        slice(max(rows.min() - margin, 0), rows.max() + margin + 1),
        slice(max(columns.min() - margin, 0), columns.max() + margin + 1),
    )
    fig, (image_ax, histogram_ax) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.4]})
    draw(image_ax, np.squeeze(image)[window], cmap="gray")
    for mask, colour, name in ((true_mask, "#00e676", "true border"), (pred_mask, "#ff006e", "predicted border")):
        image_ax.contour(mask[window].T.astype(float), levels=[0.5], colors=colour, linewidths=1.5)
        image_ax.plot([], [], color=colour, label=name)
    image_ax.legend(fontsize=8, loc="upper right")
    image_ax.set_title("zoomed on the organ", fontsize=9)
    image_ax.axis("off")
    bins = np.linspace(0, max(pred_to_true.max(), true_to_pred.max()) + 0.5, 30)
    for distances, colour, name in (
        (pred_to_true, "#ff006e", "predicted border → true"),
        (true_to_pred, "#00a152", "true border → predicted"),
    ):
        histogram_ax.hist(distances, bins=bins, color=colour, alpha=0.5, label=name)
        histogram_ax.axvline(np.percentile(distances, 95), color=colour, linestyle=":", linewidth=1.5)
    histogram_ax.axvline(hd95, color="black", linestyle="--", label=f"HD95 = {hd95:.1f} mm (larger 95th percentile)")
    histogram_ax.set(xlabel="distance to the other border (mm)", ylabel="border pixels")
    histogram_ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- slice viewer

VIEWS = ("ground truth", "prediction", "error")
ERROR_COLOURS = {
    "missed": (1.0, 0.0, 0.0),  # a shown class predicted as background or a hidden class
    "wrongly added": (1.0, 0.85, 0.0),  # a shown class predicted where the truth is neither
    "wrong organ": (0.0, 0.75, 1.0),  # one shown class taken for another
}
"""The error view's colours. A pixel whose true and predicted classes are both shown gets a
colour of its own, rather than one of "missed" or "added" hiding the other."""


def _case_week(key: str) -> str:
    """'004_week_0_slice_12' → 'case 004 week 0' (the volume a slice belongs to)."""
    case, _, week = volume_key(key).partition("_week_")
    return f"case {case} week {week}"


class SliceViewer:
    """Browse slices with a label overlay: pick a case-week and slice, opacity, classes, view.

    ``images[N,H,W,1]`` with optional ``labels`` (ground truth), ``predictions`` and ``keys``
    (dataset keys such as ``004_week_0_slice_12``, used to group slices by case-week).
    Views: ground truth, prediction, or the error: pixels of a shown class where prediction
    and truth disagree, in three colours (see :data:`ERROR_COLOURS`).

    Each frame is drawn to PNG and shown in an ``ipywidgets.Image``, so the viewer works
    live in JupyterLab and, where widgets are not live (GitHub, nbconvert HTML, a stored
    notebook), the last frame still shows as a static image.

    Args:
        images: slices ``(N, H, W, 1)``.
        labels: true class indices ``(N, H, W)``, or None.
        predictions: predicted class indices ``(N, H, W)``, or None.
        keys: N slice keys, or None to name them ``slice 0``, ``slice 1``, ... in one group.
        title: put before each frame's key in its title.
        width: width of the shown frame in screen pixels.
    """

    def __init__(self, images, labels=None, predictions=None, keys=None, *, title: str = "", width: int = 860):
        import ipywidgets as widgets

        self.images, self.labels, self.predictions = images, labels, predictions
        self.keys = list(keys) if keys is not None else [f"slice {i}" for i in range(len(images))]
        self.title = title
        self.groups: dict[str, list[int]] = {}
        for index, key in enumerate(self.keys):
            self.groups.setdefault(_case_week(key) if "_week_" in key else "all slices", []).append(index)

        views = [
            v
            for v, ok in zip(
                VIEWS, (labels is not None, predictions is not None, labels is not None and predictions is not None)
            )
            if ok
        ] or ["image only"]
        self.volume = widgets.Dropdown(options=list(self.groups), description="volume")
        self.slice = widgets.IntSlider(
            0, 0, len(self.groups[self.volume.value]) - 1, description="slice", continuous_update=False
        )
        self.opacity = widgets.FloatSlider(
            0.45, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False
        )
        self.view = widgets.ToggleButtons(options=views, description="view")
        self.classes = {
            name: widgets.Checkbox(True, description=name, indent=False, layout=widgets.Layout(width="110px"))
            for name in LABELS[1:]
        }
        self.image = widgets.Image(format="png", layout=widgets.Layout(width=f"{width}px"))
        for control in (self.slice, self.opacity, self.view, *self.classes.values()):
            control.observe(self._redraw, names="value")
        self.volume.observe(self._change_volume, names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.volume, self.slice]),
                widgets.HBox([self.opacity, self.view]),
                widgets.HBox(list(self.classes.values())),
                self.image,
            ]
        )
        self._redraw()

    @property
    def index(self) -> int:
        """Index (into the arrays) of the slice on show."""
        return self.groups[self.volume.value][self.slice.value]

    def _change_volume(self, _change=None) -> None:
        self.slice.max = len(self.groups[self.volume.value]) - 1
        self.slice.value = min(self.slice.value, self.slice.max)
        self._redraw()

    def _redraw(self, _change=None) -> None:
        self.image.value = self.render()

    def overlay(self) -> np.ndarray:
        """RGBA overlay ``[S, 256, 4]`` (display orientation, see :func:`draw`) for the current settings."""
        index, shown = self.index, [LABELS.index(n) for n, box in self.classes.items() if box.value]
        view, alpha = self.view.value, self.opacity.value
        if view == "ground truth":
            return label_overlay(self.labels[index], shown, alpha)
        if view == "prediction":
            return label_overlay(self.predictions[index], shown, alpha)
        height, width = self.images.shape[1:3]
        rgba = np.zeros((width, height, 4))
        if view == "error":
            truth, guess = self.labels[index].T, self.predictions[index].T
            wrong = truth != guess
            true_shown, guess_shown = np.isin(truth, shown), np.isin(guess, shown)
            kinds = {
                "missed": true_shown & ~guess_shown,
                "wrongly added": guess_shown & ~true_shown,
                "wrong organ": true_shown & guess_shown,
            }
            for kind, where in kinds.items():
                rgba[wrong & where] = (*ERROR_COLOURS[kind], alpha)
        return rgba

    def render(self) -> bytes:
        """The current frame as PNG bytes (drawn off-screen, never shown by pyplot)."""
        import io

        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(9.5, 4.0), dpi=100)
        FigureCanvasAgg(figure)
        ax = figure.add_axes([0.0, 0.0, 0.8, 0.92])
        draw(ax, self.images[self.index], cmap="gray")
        draw(ax, self.overlay(), interpolation="nearest")
        ax.set_title(f"{self.title} {self.keys[self.index]} — {self.view.value}".strip(), fontsize=10)
        ax.axis("off")
        if self.view.value == "error":
            handles = [Patch(color=colour, label=name) for name, colour in ERROR_COLOURS.items()]
        else:
            handles = legend_handles()
        figure.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()

    def _repr_mimebundle_(self, **kwargs):
        """Live widget where widgets run; the current frame as a PNG everywhere else."""
        import base64

        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(self.image.value).decode("ascii")
        bundle["text/plain"] = f"SliceViewer({len(self.keys)} slices, showing {self.keys[self.index]})"
        return bundle


def save_figure(figure, path) -> None:
    """Save a matplotlib figure as PNG, atomically (a reader never sees half a file).

    Args:
        figure: a matplotlib figure; it is not closed.
        path: the ``.png`` file to write, at 100 dpi; its folder must exist.
    """
    from unetlib.files import atomic_path

    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=100, bbox_inches="tight")
