"""The notebooks: committed clean, and each one runs top to bottom with papermill on a sample
store, writes its results to the researcher's folder (never into the store) and, for the two
training notebooks, reaches its quality bar on the validation split."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from jupyter_client.manager import AsyncKernelManager

from mbc_lib.sample.store import build_sample_store
from mbc_lib.store.reader import open_store

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Sized so that the training notebooks reach their thresholds in a few CPU minutes: enough
# photographs for a stable AUC, enough CT cases (at 96 px) for the rare consolidation class.
STORE_ARGS = {"seed": 0, "n_fundus": 160, "n_ct": 24, "ct_size": 96, "include_real_dicom": False}
#: The notebook store's project key, a constant test secret: pseudonyms, and with them the
#: patient-level splits, are the same on every build (a new random key moved the split).
STORE_KEY = hashlib.sha256(b"mbc notebook tests").hexdigest()
#: What that key and STORE_ARGS put into the validation split (the thresholds below were
#: measured on exactly this split): CT diagnoses and photographs per glaucoma label.
VAL_CT = {"covid19": 2, "normal": 2}
VAL_FUNDUS = {0: 16, 1: 10}
#: Training runs on the CPU with a fixed thread count, deterministic algorithms and seeded
#: loaders (seed_everything in each notebook), so a run's metrics repeat exactly.
DETERMINISTIC = {"device": "cpu", "threads": 2}
KERNEL = "python3"


def _notebook(name: str) -> Path:
    matches = [p for p in NOTEBOOKS if p.name.startswith(name)]
    assert len(matches) == 1, f"expected one notebook named {name}*, found {matches}"
    return matches[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell has outputs"
            assert cell.execution_count is None, f"{path.name}: a cell has an execution count"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    source = tagged[0].source
    for name in ("store_path = None", "output_dir = ", "device = ", "epochs = "):
        assert name in source, f"{path.name}: parameter {name!r} missing"
    assert 'output_dir = "~/mbc-results/' in source


def test_every_notebook_has_an_execution_test():
    names = {p.name.split("_")[0] for p in NOTEBOOKS}
    assert names == {"00", "10", "20", "30", "90"}


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A ``python3`` kernelspec running this interpreter, first on the Jupyter path."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("kernel")
    install(kernel_name=KERNEL, prefix=str(prefix))
    spec = prefix / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json"
    assert json.loads(spec.read_text())["argv"][0] == sys.executable
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        mp.setenv("PYTHONWARNINGS", "ignore")
        yield


@pytest.fixture(scope="module")
def nb_store(tmp_path_factory, kernel_env) -> Path:
    """The sample store the notebooks run on, built with a fixed key and so a fixed split.

    The validation split holds COVID-19 and normal scans (lesion Dice is undefined without
    lesions) and photographs of both classes (AUC needs both).
    """
    work = tmp_path_factory.mktemp("nbstore")
    key = work / "project.key"
    with os.fdopen(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write(STORE_KEY + "\n")
    store = build_sample_store(work / "work", key_file=key, **STORE_ARGS)
    reader = open_store(store)
    ct_val = reader.catalog("ct-covid", split="val")["diagnosis"].value_counts().to_dict()
    fundus_val = reader.catalog("fundus-glaucoma", split="val")["glaucoma"].value_counts()
    assert (ct_val, fundus_val.to_dict()) == (VAL_CT, VAL_FUNDUS), "the fixed split moved"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MBC_STORE", str(store))
        yield store


class _IPCKernelManager(AsyncKernelManager):
    """Kernels on IPC sockets: no TCP ports to race for with other kernels on the machine."""

    def __init__(self, **kwargs) -> None:
        super().__init__(transport="ipc", **kwargs)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def _run(name: str, store: Path, tmp_path: Path, **parameters) -> tuple[Path, dict]:
    """Execute notebook ``name`` on ``store``; return its results folder and the run's record."""
    import papermill

    out = tmp_path / "results"
    before = _snapshot(store)
    start = time.perf_counter()
    papermill.execute_notebook(
        str(_notebook(name)),
        str(tmp_path / f"{name}.ipynb"),
        parameters={"store_path": str(store), "output_dir": str(out), **parameters},
        kernel_name=KERNEL,
        kernel_manager_class=_IPCKernelManager,
        cwd=str(tmp_path),
        progress_bar=False,
        start_timeout=120,
    )
    seconds = time.perf_counter() - start
    print(f"{name}: {seconds:.0f} s")
    assert _snapshot(store) == before, "the notebook changed the store"
    executed = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    return out, {"seconds": seconds, "notebook": executed}


def _text_outputs(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


#: What each demo researcher's groups let them see (docs/hub.md), and the figures the
#: getting-started notebook then draws: each section adapts to the datasets visible.
RESEARCHERS = {
    "alice": (["fundus-glaucoma"], ["fundus_gallery.png"]),
    "bob": (["ct-covid"], ["ct_reformat.png", "ct_slice.png", "hu_histogram.png"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("user", sorted(RESEARCHERS))
def test_getting_started_runs_for_a_researcher_who_sees_one_modality(nb_store, tmp_path, user):
    """Issue 10: it stopped at ``no dataset 'ct-covid'`` for alice. Her server's store shows
    only her datasets (a view of links, as the local spawner makes it)."""
    datasets, figures = RESEARCHERS[user]
    view = tmp_path / "view"
    view.mkdir()
    for name in ["zarr.json", *datasets]:
        (view / name).symlink_to(nb_store / name)
    out, run = _run("00", view, tmp_path, max_cases=4, epochs=1)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(figures)
    text = _text_outputs(run["notebook"])
    assert f"your datasets: {', '.join(datasets)}" in text
    assert "refused: the mbc store is read-only" in text
    assert "pass 1:" in text


@pytest.mark.slow
def test_getting_started_runs_and_shows_a_read_only_store(nb_store, tmp_path):
    # store_path None: the notebook opens $MBC_STORE, as in a researcher's container
    out, run = _run("00", nb_store, tmp_path, store_path=None, max_cases=4)
    for figure in ("ct_slice.png", "ct_reformat.png", "hu_histogram.png", "fundus_gallery.png"):
        assert (out / figure).stat().st_size > 10_000, figure
    text = _text_outputs(run["notebook"])
    assert "refused: the mbc store is read-only" in text
    assert "pass 2:" in text  # the data loader was timed over `epochs` passes


@pytest.mark.slow
def test_glaucoma_notebook_reaches_auc_and_saves_model(nb_store, tmp_path):
    import torch
    from monai.networks.nets import resnet18

    out, run = _run("10", nb_store, tmp_path, **DETERMINISTIC)
    metrics = json.loads((out / "metrics.json").read_text())
    print({k: v for k, v in metrics.items() if k != "history"})
    # deterministic figure on the glaucoma-stratified split: AUC 0.912 (seeds 1, 2: 0.944,
    # 0.906); margin 0.05 below the weakest (8 of the 160 glaucoma/normal pairs misordered)
    # for another CPU's rounding, which moves a run as a new seed does; a third of the
    # training (epochs=5) scores 0.506 and fails
    assert metrics["val_auc"] >= 0.85
    assert metrics["n_val"] == len(open_store(nb_store).catalog("fundus-glaucoma", split="val"))
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n_val"]
    # issue 13: every printed figure is what the plotted confusion matrix implies (it printed
    # 0.833 three times for [[13, 1], [3, 7]]: MONAI averaged over both classes)
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert metrics["val_sensitivity"] == pytest.approx(tp / (tp + fn))
    assert metrics["val_specificity"] == pytest.approx(tn / (tn + fp))
    assert metrics["val_accuracy"] == pytest.approx((tp + tn) / metrics["n_val"])
    text = _text_outputs(run["notebook"])
    threshold = metrics["threshold"]
    assert f"threshold {threshold:.3f}, chosen on the validation split by Youden's J" in text
    assert (
        f"validation: sensitivity {tp / (tp + fn):.3f}, specificity {tn / (tn + fp):.3f}, "
        f"accuracy {(tp + tn) / metrics['n_val']:.3f}" in text
    )
    # the test split, evaluated once at the validation threshold, with patient-level intervals
    test = metrics["test"]
    catalog_test = open_store(nb_store).catalog("fundus-glaucoma", split="test")
    assert test["n"] == metrics["n_test"] == len(catalog_test) > 0
    assert test["patients"] == catalog_test["patient"].nunique()
    (tn, fp), (fn, tp) = test["confusion_matrix"]
    assert tn + fp + fn + tp == test["n"]
    assert test["sensitivity"]["value"] == pytest.approx(tp / (tp + fn))
    assert test["specificity"]["value"] == pytest.approx(tn / (tn + fp))
    # deterministic: test AUC 0.969 [0.875, 1.000] (3 of the 96 glaucoma/normal pairs
    # misordered); the margin allows 11 more. At the validation threshold (0.922, Youden's J)
    # sensitivity 0.50 [0.00, 1.00], specificity 1.00: honest figures, not asserted
    assert test["AUC"]["value"] >= 0.85
    for figure in ("AUC", "sensitivity", "specificity"):
        f = test[figure]
        assert f["low"] - 1e-9 <= f["value"] <= f["high"] + 1e-9, figure
        assert f["resamples"] > 1000, figure
    assert (
        f"test confusion matrix (rows true, columns predicted): {test['confusion_matrix']}" in text
    )
    model = resnet18(spatial_dims=2, n_input_channels=3, num_classes=2)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    for figure in (
        "training.png",
        "roc.png",
        "confusion_matrix.png",
        "val_predictions.png",
        "gradcam.png",
    ):
        assert (out / figure).stat().st_size > 10_000, figure


@pytest.mark.slow
def test_ct_segmentation_notebook_reaches_dice_and_measures_involvement(nb_store, tmp_path):
    import torch
    from monai.networks.nets import UNet

    out, run = _run("20", nb_store, tmp_path, **DETERMINISTIC)
    metrics = json.loads((out / "metrics.json").read_text())
    print({k: v for k, v in metrics.items() if k not in ("history", "involvement")})
    # deterministic figures: lesion Dice 0.873 (GGO 0.905, consolidation 0.840), lung 0.977,
    # largest involvement error 0.79 points; seeds 1, 2 and the unseeded loader gave 0.852,
    # 0.850, 0.844 / 0.983, 0.981, 0.979 / 0.66, 0.95, 1.34 points. Margins for another CPU's
    # rounding, which moves a run as a new seed does: lesion Dice 0.053, lung Dice 0.007,
    # involvement 1.2 points; a third of the training (epochs=10) scores 0.811 / 0.967 / 2.11
    # points and fails all three
    assert metrics["mean_dice_lesions"] >= 0.82
    assert metrics["mean_dice_lesions"] == pytest.approx(
        (metrics["dice_ggo"] + metrics["dice_consolidation"]) / 2
    )
    assert metrics["dice_normal_lung"] >= 0.97
    val = open_store(nb_store).catalog("ct-covid", split="val").set_index("case_id")
    assert {row["case_id"] for row in metrics["involvement"]} == set(val.index)
    for row in metrics["involvement"]:
        assert row["reference_pct"] == val.loc[row["case_id"], "involvement_pct"]
        assert abs(row["predicted_pct"] - row["reference_pct"]) <= 2.0
    # the test split, evaluated once, with patient-level intervals
    test = metrics["test"]
    catalog_test = open_store(nb_store).catalog("ct-covid", split="test")
    assert sorted(test["cases"]) == sorted(catalog_test["case_id"])
    assert metrics["n_test_cases"] == len(catalog_test) > 0
    assert test["patients"] == catalog_test["patient"].nunique()
    per_case = np.array(test["dice_per_case"], dtype=float)  # null (absent class) -> nan
    names = ["normal lung", "ground-glass opacity", "consolidation"]
    for k, name in enumerate(names):
        f = test[f"Dice {name}"]
        present = per_case[:, k][~np.isnan(per_case[:, k])]
        assert f["value"] == pytest.approx(present.mean()), name
        # deterministic: normal lung 0.975 [0.967, 0.981]; GGO and consolidation are in one
        # of the 3 test CTs, so their intervals have no spread
        assert f["low"] - 1e-9 <= f["value"] <= f["high"] + 1e-9 and f["resamples"] > 0, name
    assert test["Dice normal lung"]["value"] >= 0.95  # deterministic 0.975
    error = test["involvement error (points)"]  # deterministic 0.08 points, 0.20 at most
    assert error["value"] == pytest.approx(np.mean(test["involvement_error_per_case"]))
    assert error["low"] - 1e-9 <= error["value"] <= error["high"] + 1e-9
    assert max(test["involvement_error_per_case"]) <= 2.0
    assert "labels by argmax, no threshold" in _text_outputs(run["notebook"])
    model = UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=4,
        channels=(16, 32, 64, 128),
        strides=(2, 2, 2),
        num_res_units=2,
    )
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    assert (out / "involvement.png").stat().st_size > 10_000
    assert len(list(out.glob("overlay_ct-*.png"))) == int((val["diagnosis"] == "covid19").sum())


#: Epochs of the 3D template's CPU run, and the bars it must clear on the validation split.
#: Deterministic figures: normal-lung Dice 0.926, HD95 8.6 mm; seeds 1 and 2 gave 0.938 /
#: 11.2 mm and 0.913 / 11.5 mm. Margins below the weakest seed, for another CPU's rounding:
#: Dice 0.033, HD95 8.5 mm; a third of the training (epochs=6) scores 0.658 / 81.5 mm and fails
#: both. At 7 mm voxels the lesions are a few voxels each and this short run does not learn them
#: (GGO and consolidation Dice 0): the lesion figures are a GPU run's, at the defaults.
EPOCHS_3D = 20
DICE_LUNG_3D = 0.88
HD95_LUNG_3D = 20.0
#: A small CPU run of the 3D template: coarse voxels and small patches (on a GPU, its
#: defaults train on 2 x 2 x 4 mm voxels and 96 x 96 x 48 patches).
SMALL_3D = {"pixdim": [7.0, 7.0, 12.5], "patch_size": [32, 32, 16], "patches_per_case": 2,
            "batch_size": 4, "init_filters": 8}  # fmt: skip


@pytest.mark.slow
def test_ct_3d_notebook_segments_whole_volumes_and_exports_for_other_tools(nb_store, tmp_path):
    import highdicom as hd
    import nibabel as nib
    import pydicom
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    epochs = EPOCHS_3D
    out, run = _run(
        "30", nb_store, tmp_path, epochs=epochs, validate_every=epochs, learning_rate=5e-3,
        **SMALL_3D, **DETERMINISTIC,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    print({k: v for k, v in metrics.items() if k not in ("history", "involvement", "test")})
    store = open_store(nb_store)
    assert metrics["dice_normal_lung"] >= DICE_LUNG_3D
    assert metrics["hd95_mm_normal_lung"] <= HD95_LUNG_3D
    # the test split, once, with patient-level intervals for Dice and HD95 per class
    test = metrics["test"]
    catalog_test = store.catalog("ct-covid", split="test")
    assert sorted(test["cases"]) == sorted(catalog_test["case_id"])
    for figure, per_case in (("Dice", "dice_per_case"), ("HD95", "hd95_mm_per_case")):
        values = np.array(test[per_case], dtype=float)
        for k, name in enumerate(["normal lung", "ground-glass opacity", "consolidation"]):
            f = test[f"{figure} {name}" + (" (mm)" if figure == "HD95" else "")]
            present = values[:, k][~np.isnan(values[:, k])]
            if not len(present):  # defined in no test case (HD95 of a class never predicted)
                assert f["value"] is None, (figure, name)
                continue
            assert f["value"] == pytest.approx(present.mean()), (figure, name)
            assert f["low"] - 1e-9 <= f["value"] <= f["high"] + 1e-9, (figure, name)
    assert "labels by argmax, no threshold" in _text_outputs(run["notebook"])
    # TensorBoard has every epoch's loss and the validation Dice
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train")] == list(range(1, epochs + 1))
    assert "val/dice_normal_lung" in events.Tags()["scalars"]
    # the exported prediction: NIfTI on the CT's grid, DICOM-SEG on the store's series
    exported = {k: Path(v) for k, v in metrics["exported"].items()}
    case = exported["image"].name.split("_")[0]
    image, prediction = nib.load(exported["image"]), nib.load(exported["prediction"])
    np.testing.assert_allclose(prediction.affine, image.affine)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2, 3}
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(exported["dicom_seg"]))
    attrs = store.case_attrs("ct-covid", case)
    assert {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence} == {attrs["series_uid"]}
    assert {uid for _, _, uid in seg.get_source_image_uids()} <= set(attrs["sop_instance_uids"])
    assert (out / "training.png").stat().st_size > 10_000


@pytest.mark.slow
def test_tutorial_runs_with_its_solutions(nb_store, tmp_path):
    out, run = _run("90", nb_store, tmp_path, **DETERMINISTIC)  # at its defaults: 6 epochs
    answers = json.loads((out / "tutorial_results.json").read_text())
    assert answers["patients_in_two_splits"] == 0
    assert answers["involvement_pct"]["computed"] == pytest.approx(
        answers["involvement_pct"]["catalog"], abs=0.01
    )
    assert answers["dice_numpy"] == pytest.approx(answers["dice_monai"], abs=1e-4)
    # deterministic figures on the glaucoma-stratified split: AUC 0.925 and accuracy 0.846
    # against 0.615 for always answering "normal" (seeds 1, 2: AUC 0.919, 0.900, accuracy
    # 0.769, 0.808); margins below the weakest seed, for another CPU's rounding: AUC 0.05,
    # accuracy 2 of 26 photographs; a constant answer scores AUC 0.5, half the training
    # (epochs=3) 0.475
    assert answers["val_auc"] >= 0.85
    assert answers["val_accuracy"] >= answers["always_normal_accuracy"] + 0.075
    assert (out / "val_gallery.png").exists()
    solutions = [c for c in run["notebook"].cells if "solution" in c.metadata.get("tags", [])]
    assert solutions and all(c.metadata["jupyter"]["source_hidden"] for c in solutions)
