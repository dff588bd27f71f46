"""Viewers: window presets, static figures with the fixed class colours, widgets when forced."""

from __future__ import annotations

from pathlib import Path

import ipywidgets
import numpy as np
import pytest
import xarray as xr
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from mbc_lib.manifests import load_manifest
from mbc_lib.viewers import (
    CT_COVID_CLASSES,
    WINDOWS,
    apply_window,
    classes_from_manifest,
    ct_viewer,
    fundus_gallery,
    render_ct_comparison,
    render_ct_slice,
    render_fundus_gallery,
    widgets_available,
)
from mbc_lib.viewers.fundus import RIGHT, WRONG
from mbc_lib.viewers.fundus import to_rgb as image_rgb

ROOT = Path(__file__).resolve().parents[1]
MANIFEST_COLOURS = {
    "normal lung": (70, 130, 180),
    "ground-glass opacity": (255, 215, 0),
    "consolidation": (220, 20, 60),
}
SPACING = (5.0, 2.0, 2.0)  # z, y, x in mm


def _phantom() -> tuple[np.ndarray, np.ndarray]:
    """A 6 x 40 x 50 volume: air, a lung block with a GGO patch and a consolidation core."""
    hu = np.full((6, 40, 50), -1000, np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    hu[:, 5:35, 5:45], labels[:, 5:35, 5:45] = -850, 1
    hu[2:4, 10:20, 10:20], labels[2:4, 10:20, 10:20] = -550, 2
    hu[3, 13:17, 13:17], labels[3, 13:17, 13:17] = 20, 3
    return hu, labels


def _as_store_array(array: np.ndarray, name: str) -> xr.DataArray:
    """Shaped like ``Store.open_case``: dims z, y, x with coordinates in millimetres."""
    coords = {
        dim: xr.Variable(dim, origin + step * np.arange(n), {"units": "millimeter"})
        for dim, origin, step, n in zip(
            ("z", "y", "x"), (-100.0, -40.0, -50.0), SPACING, array.shape, strict=True
        )
    }
    return xr.DataArray(array, dims=("z", "y", "x"), coords=coords, name=name)


@pytest.mark.parametrize(
    ("window", "hu", "grey"),
    [
        ("lung", [-1350, -600, 150, -2000, 3000], [0.0, 0.5, 1.0, 0.0, 1.0]),
        ("mediastinum", [-135, 40, 215, -1000], [0.0, 0.5, 1.0, 0.0]),
        ("bone", [-600, 400, 1400], [0.0, 0.5, 1.0]),
        ((400, 40), [-160, 40, 240], [0.0, 0.5, 1.0]),
    ],
)
def test_window_presets_map_hu_to_grey(window, hu, grey):
    assert np.allclose(apply_window(np.array(hu), window), grey)


def test_window_presets_are_the_clinical_ones():
    assert WINDOWS["lung"] == (1500.0, -600.0)
    assert WINDOWS["mediastinum"] == (350.0, 40.0)
    with pytest.raises(ValueError, match="unknown window"):
        apply_window(np.zeros(3), "brain")


def test_class_colours_come_from_the_manifest():
    manifest = load_manifest(ROOT / "datasets" / "ct-covid.yaml")
    assert classes_from_manifest(manifest) == CT_COVID_CLASSES
    assert {c.name: c.color for c in CT_COVID_CLASSES.values()} == MANIFEST_COLOURS


def test_static_ct_slice_has_legend_overlay_colours_and_mm_axes():
    hu, labels = _phantom()
    fig = render_ct_slice(
        _as_store_array(hu, "image"), _as_store_array(labels, "lesions"), z=3, opacity=0.5
    )
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(MANIFEST_COLOURS)
    for patch, rgb in zip(legend.get_patches(), MANIFEST_COLOURS.values(), strict=True):
        assert np.allclose(patch.get_facecolor()[:3], np.array(rgb) / 255)
    grey, overlay = (np.asarray(im.get_array()) for im in ax.get_images())
    assert grey[0, 0] == pytest.approx(350 / 1500)  # air: -1000 HU in W1500 L-600
    assert np.allclose(overlay[15, 15], [*(np.array(MANIFEST_COLOURS["consolidation"]) / 255), 0.5])
    assert np.allclose(
        overlay[11, 11], [*(np.array(MANIFEST_COLOURS["ground-glass opacity"]) / 255), 0.5]
    )
    assert overlay[0, 0, 3] == 0.0  # background is not drawn
    assert sorted(ax.get_xlim()) == pytest.approx([-51.0, 49.0])  # 50 voxels of 2 mm
    assert ax.get_xlabel() == "x (mm)"
    assert "z = -85.0 mm" in ax.get_title()


def test_static_ct_slice_from_numpy_picks_the_most_labelled_slice_and_hides_overlay():
    hu, labels = _phantom()
    labels[4, 0:3, 0:3] = 2  # slice 4 now has the most labelled voxels
    fig = render_ct_slice(hu, labels, spacing=SPACING)
    assert "slice 5/6" in fig.axes[0].get_title()
    plain = render_ct_slice(hu, labels, spacing=SPACING, overlay=False)
    assert len(plain.axes[0].get_images()) == 1
    assert plain.axes[0].get_legend() is None


def test_comparison_has_lung_and_mediastinal_windows_one_panel_per_mask_and_one_legend():
    hu, labels = _phantom()
    fig = render_ct_comparison(
        hu, {"ground truth": labels, "prediction": labels}, z=3, spacing=SPACING, title="case"
    )
    assert [ax.get_title() for ax in fig.axes] == [
        "lung window (W1500 L-600)",
        "mediastinum window (W350 L40)",
        "ground truth",
        "prediction",
    ]
    lung, mediastinum = (np.asarray(ax.get_images()[0].get_array()) for ax in fig.axes[:2])
    # consolidation (20 HU) is near-white, like every soft tissue, in the lung window; the
    # mediastinal window shows it mid-grey, where it is told from fat, fluid and bone
    assert lung[15, 15] == pytest.approx((20 + 1350) / 1500)
    assert mediastinum[15, 15] == pytest.approx((20 + 135) / 350)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(MANIFEST_COLOURS)
    assert fig.get_suptitle().startswith("case: slice 4/6")


AXIAL = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]  # LPS vectors of z, y, x


def _edge_letters(ax) -> dict[str, str]:
    """The letter at each edge of a panel: left, right, top, bottom."""
    out = {}
    for text in ax.texts:
        x, y = text.get_position()
        edge = "left" if x < 0.1 else "right" if x > 0.9 else "top" if y > 0.9 else "bottom"
        out[edge] = text.get_text()
    return out


def test_slices_are_marked_with_the_patient_sides_from_the_store_direction():
    hu, labels = _phantom()
    image = _as_store_array(hu, "image")
    image.attrs["direction"] = AXIAL
    axial = render_ct_slice(image, _as_store_array(labels, "lesions"), z=3)
    # radiological convention: the patient's right on the viewer's left, anterior on top
    assert _edge_letters(axial.axes[0]) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    flipped = [[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]  # rows and columns reversed
    other = render_ct_slice(hu, labels, z=3, spacing=SPACING, direction=flipped)
    assert _edge_letters(other.axes[0]) == {"left": "L", "right": "R", "top": "P", "bottom": "A"}
    unknown = render_ct_slice(hu, labels, z=3, spacing=SPACING)
    assert len(unknown.axes[0].texts) == 0  # no direction, no guess


def test_small_lesions_are_outlined_in_their_class_colour():
    hu, labels = _phantom()
    fig = render_ct_slice(hu, labels, z=3, spacing=SPACING)
    outlined = [tuple(np.round(c.get_edgecolor()[0][:3], 3)) for c in fig.axes[0].collections]
    for name in ("ground-glass opacity", "consolidation"):
        assert tuple(np.round(np.array(MANIFEST_COLOURS[name]) / 255, 3)) in outlined


def test_ct_viewer_is_static_outside_jupyter():
    hu, labels = _phantom()
    assert not widgets_available()
    assert isinstance(ct_viewer(hu, labels), Figure)


def test_ct_viewer_widget_has_controls_that_redraw():
    hu, labels = _phantom()
    box = ct_viewer(_as_store_array(hu, "image"), _as_store_array(labels, "lesions"), static=False)
    assert isinstance(box, ipywidgets.VBox)
    controls = box.controls
    assert isinstance(controls["slice"], ipywidgets.IntSlider)
    assert (controls["slice"].min, controls["slice"].max) == (0, 5)
    assert list(controls["window"].options) == ["lung", "mediastinum", "bone"]
    assert controls["overlay"].value is True
    assert isinstance(controls["opacity"], ipywidgets.FloatSlider)
    image = box.children[2]
    assert isinstance(image, ipywidgets.Image)
    assert bytes(image.value).startswith(b"\x89PNG")
    before = bytes(image.value)
    controls["window"].value = "mediastinum"
    assert bytes(image.value) != before
    before = bytes(image.value)
    controls["slice"].value = 3
    assert bytes(image.value) != before
    assert box.children[0].children[1].value == "z = -85.0 mm"
    html = box.children[3].value
    assert all(name in html for name in MANIFEST_COLOURS)


def test_ct_viewer_widget_without_labels_disables_the_overlay():
    hu, _ = _phantom()
    box = ct_viewer(hu, static=False, window=(400, 40))
    assert box.controls["overlay"].disabled and not box.controls["overlay"].value
    assert box.controls["window"].value == "custom"


def test_ct_viewer_rejects_labels_of_another_shape():
    hu, labels = _phantom()
    with pytest.raises(ValueError, match="labels shape"):
        render_ct_slice(hu, labels[:, :10])


def _photos(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (3, 30, 40), dtype=np.uint8) for _ in range(n)]


def test_fundus_gallery_titles_are_green_when_right_and_red_when_wrong():
    fig = render_fundus_gallery(
        _photos(3), labels=[1, 0, 1], predictions=[0.9, 0.8, 0.2], titles=["a", "b", "c"], ncols=2
    )
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert [t.get_text() for t in titles] == [
        "a\ntrue: glaucoma\npred: glaucoma (p=0.90)",
        "b\ntrue: normal\npred: glaucoma (p=0.80)",
        "c\ntrue: glaucoma\npred: normal (p=0.20)",
    ]
    assert [to_rgb(t.get_color()) for t in titles] == [to_rgb(RIGHT), to_rgb(WRONG), to_rgb(WRONG)]
    assert len(fig.axes) == 4  # 2 x 2 grid, the last tile empty


def test_fundus_gallery_without_predictions_and_with_heatmaps():
    fig = fundus_gallery(_photos(2), labels=[0, 1], heatmaps=[np.ones((4, 4))] * 2)
    assert isinstance(fig, Figure)
    assert fig.axes[0].get_title() == "true: normal"
    assert len(fig.axes[0].get_images()) == 2
    # a colour bar says what the heat colours mean, on the heat maps' fixed 0-1 scale
    (bar,) = [ax for ax in fig.axes if ax.get_ylabel().startswith("Grad-CAM")]
    assert bar.get_ylim() == (0.0, 1.0)
    plain = fundus_gallery(_photos(2), labels=[0, 1])
    assert not [ax for ax in plain.axes if ax.get_ylabel()]


def test_fundus_gallery_widget_pages_and_filters_mistakes():
    box = fundus_gallery(
        _photos(5),
        labels=[1, 0, 1, 0, 1],
        predictions=[1, 1, 1, 0, 0],
        ncols=2,
        page_size=2,
        static=False,
    )
    page, show = box.controls["page"], box.controls["show"]
    count, image = box.children[0].children[2], box.children[1]
    assert page.max == 2 and list(show.options) == ["all", "correct", "wrong"]
    assert count.value == "5 images" and bytes(image.value).startswith(b"\x89PNG")
    show.value = "wrong"
    assert count.value == "2 images" and page.max == 0


def test_images_convert_to_rgb():
    chw = np.zeros((3, 4, 5), np.uint8)
    chw[0] = 255
    assert image_rgb(chw).shape == (4, 5, 3) and image_rgb(chw)[0, 0, 0] == 1.0
    da = xr.DataArray(chw, dims=("c", "y", "x"))
    assert np.array_equal(image_rgb(da), image_rgb(chw))
    assert image_rgb(np.full((4, 5, 3), 2.0)).max() == 1.0
