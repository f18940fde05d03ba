"""The paper's figures as PNG files: one `plot_*` function per analysis of `analyses`.

matplotlib is imported on the first plot only, so that `keras_vit.explain` works without it.
Figures are bare `matplotlib.figure.Figure`s (no pyplot state), and each PNG is written
atomically (`keras_vit.files.atomic_write`): a failed or killed save leaves the previous file,
or none, never a truncated PNG.
"""

import os

import numpy as np

from keras_vit.files import atomic_write

__all__ = [
    "plot_attention_rollout",
    "plot_mean_attention_distance",
    "plot_patch_embedding_filters",
    "plot_position_embedding_similarity",
]

def plot_attention_rollout(images, maps, path, *, cell_inches=2.0, dpi=100, titles=None):
    """Writes a PNG with one row per image: the image, its map, and their overlay.

    Args:
        images: array (B, H, W, C), C 1 or 3, in [-1, 1] (the model's input).
        maps: array (B, H, W) in [0, 1], e.g. from `attention_rollout`.
        path: str. PNG file to write.
        cell_inches: float. Side of each panel. Defaults to 2.
        dpi: int. Defaults to 100: the PNG is `3 * cell_inches * dpi` pixels
            wide and `B * cell_inches * dpi` high.
        titles: list of B str or None: a label per row. Defaults to None.

    Returns:
        str: `path`.
    """
    images, maps = np.asarray(images), np.asarray(maps)
    if images.ndim != 4 or maps.shape != images.shape[:3]:
        raise ValueError(
            f"Expected images (B, H, W, C) and maps (B, H, W) of the same size, "
            f"received {images.shape} and {maps.shape}"
        )
    figure = _figure(3 * cell_inches, len(images) * cell_inches)
    axes = figure.subplots(len(images), 3, squeeze=False)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92, wspace=0.05,
                           hspace=0.15)
    for row, (image, heat) in enumerate(zip(images, maps)):
        shown, cmap = _displayable(image)
        axes[row, 0].imshow(shown, cmap=cmap, vmin=0, vmax=1)
        axes[row, 1].imshow(heat, cmap="inferno", vmin=0, vmax=1)
        axes[row, 2].imshow(shown, cmap=cmap, vmin=0, vmax=1)
        axes[row, 2].imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=0.5)
        if titles is not None:
            axes[row, 0].set_ylabel(str(titles[row]))
    for axis, title in zip(axes[0], ("image", "attention rollout", "overlay")):
        axis.set_title(title, fontsize=9)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    return _save(figure, path, dpi)


def plot_patch_embedding_filters(components, path, *, columns=7, cell_inches=1.0, dpi=100):
    """Writes a PNG grid of patch-embedding filters (the paper's Figure 7, left).

    Each filter is scaled to [0, 1] on its own; RGB filters are shown in
    colour, 1-channel filters in grey.

    Args:
        components: array (n, P, P, C), C 1 or 3, e.g. from
            `patch_embedding_components`.
        path: str. PNG file to write.
        columns: int. Filters per row. Defaults to 7 (4 rows of 28).
        cell_inches: float. Side of each filter. Defaults to 1.
        dpi: int. Defaults to 100: the PNG is `columns * cell_inches * dpi`
            pixels wide and `ceil(n / columns) * cell_inches * dpi` high.

    Returns:
        str: `path`.
    """
    components = np.asarray(components, dtype=np.float64)
    if components.ndim != 4 or components.shape[-1] not in (1, 3):
        raise ValueError(
            f"Expected filters (n, P, P, C) with C 1 or 3 to draw as images, "
            f"received shape {components.shape}"
        )
    count = components.shape[0]
    rows = -(-count // columns)
    figure = _figure(columns * cell_inches, rows * cell_inches)
    axes = figure.subplots(rows, columns, squeeze=False)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99, wspace=0.08,
                           hspace=0.08)
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index >= count:
            continue
        component = components[index]
        low, high = component.min(), component.max()
        component = (component - low) / (high - low) if high > low else component * 0
        if component.shape[-1] == 1:
            axis.imshow(component[..., 0], cmap="gray", vmin=0, vmax=1)
        else:
            axis.imshow(component)
    return _save(figure, path, dpi)


def plot_position_embedding_similarity(similarity, path, *, cell_inches=0.5, dpi=100):
    """Writes the paper's Figure 7 (centre) layout: one small tile per grid position.

    The tile at row r, column c shows, over the whole grid, the cosine
    similarity of position (r, c)'s embedding with every position's.

    Args:
        similarity: array (gh, gw, gh, gw), e.g. from
            `position_embedding_similarity`.
        path: str. PNG file to write.
        cell_inches: float. Side of each tile. Defaults to 0.5.
        dpi: int. Defaults to 100: the PNG is `(gw * cell_inches + 2) * dpi`
            pixels wide (room for labels and the colour bar) and
            `(gh * cell_inches + 1) * dpi` high.

    Returns:
        str: `path`.
    """
    similarity = np.asarray(similarity)
    if similarity.ndim != 4 or similarity.shape[:2] != similarity.shape[2:]:
        raise ValueError(
            f"similarity must have shape (gh, gw, gh, gw), received {similarity.shape}"
        )
    grid_h, grid_w = similarity.shape[:2]
    width, height = grid_w * cell_inches + 2.0, grid_h * cell_inches + 1.0
    figure = _figure(width, height)
    left, bottom = 0.6 / width, 0.5 / height
    right, top = left + grid_w * cell_inches / width, bottom + grid_h * cell_inches / height
    axes = figure.subplots(grid_h, grid_w, squeeze=False)
    figure.subplots_adjust(left=left, right=right, bottom=bottom, top=top, wspace=0.1,
                           hspace=0.1)
    image = None
    for r in range(grid_h):
        for c in range(grid_w):
            axis = axes[r, c]
            image = axis.imshow(similarity[r, c], cmap="viridis", vmin=-1, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if c == 0:
                axis.set_ylabel(str(r + 1), fontsize=6, rotation=0, labelpad=6)
            if r == grid_h - 1:
                axis.set_xlabel(str(c + 1), fontsize=6)
    figure.text((left + right) / 2, 0.1 / height, "Input patch column", ha="center",
                fontsize=8)
    figure.text(0.1 / width, (bottom + top) / 2, "Input patch row", va="center",
                rotation="vertical", fontsize=8)
    bar = figure.add_axes([right + 0.3 / width, bottom, 0.15 / width, top - bottom])
    figure.colorbar(image, cax=bar).set_label("Cosine similarity", fontsize=8)
    bar.tick_params(labelsize=6)
    return _save(figure, path, dpi)


def plot_mean_attention_distance(distances, path, *, image_size=None, width_inches=5.0,
                                 height_inches=4.0, dpi=100):
    """Writes the paper's Figure 7 (right): mean attention distance of each head against depth.

    Args:
        distances: array (depth, heads), e.g. from `mean_attention_distance`.
        path: str. PNG file to write.
        image_size: int or None. When given, the y axis runs from 0 to
            `image_size` pixels, as in the paper, so that plots of different
            models compare. Defaults to None (matplotlib's limits).
        width_inches, height_inches: float. Figure size. Defaults to 5 x 4.
        dpi: int. Defaults to 100.

    Returns:
        str: `path`.
    """
    distances = np.asarray(distances)
    if distances.ndim != 2:
        raise ValueError(f"distances must have shape (depth, heads), received {distances.shape}")
    depth, heads = distances.shape
    figure = _figure(width_inches, height_inches)
    axis = figure.subplots()
    figure.subplots_adjust(left=0.14, right=0.78, bottom=0.13, top=0.95)
    layers = np.arange(1, depth + 1)
    for head in range(heads):
        axis.scatter(layers, distances[:, head], s=14, label=f"Head {head + 1}")
    axis.set_xlabel("Network depth (layer)")
    axis.set_ylabel("Mean attention distance (pixels)")
    axis.set_xticks(layers if depth <= 12 else layers[:: max(depth // 12, 1)])
    if image_size is not None:
        axis.set_ylim(0, image_size)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return _save(figure, path, dpi)


# -- Helpers ------------------------------------------------------------------------------


def _displayable(image):
    image = np.clip((np.asarray(image, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    if image.shape[-1] == 1:
        return image[..., 0], "gray"
    if image.shape[-1] == 3:
        return image, None
    raise ValueError(
        f"Images with {image.shape[-1]} channels cannot be drawn; expected 1 or 3"
    )


def _figure(width_inches, height_inches):
    # A bare Figure renders through Agg without pyplot: no global backend
    # switch, no window, safe in notebooks and on headless machines.
    from matplotlib.figure import Figure

    return Figure(figsize=(width_inches, height_inches))


def _save(figure, path, dpi):
    # atomic_write creates the directory and renames the PNG into place only once savefig has
    # returned: a viewer, or a later run that skips existing plots, never sees a partial file.
    path = os.fspath(path)
    with atomic_write(path) as temporary:
        figure.savefig(temporary, dpi=dpi, format="png")
    return path
