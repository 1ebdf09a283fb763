"""Data sets: IDX / CIFAR pickle / image-folder readers, splits, class subsets, the tensor loader."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from amc_mobile.data import (
    Dataset,
    TensorLoader,
    get_dataset,
    list_datasets,
    random_crop_flip,
    stratified_val_indices,
)
from amc_mobile.data.idx import read_idx
from amc_mobile.errors import UserError

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                                  reason=f"Fashion-MNIST not installed at {FMNIST_DIR} "
                                         "(apt-get install dataset-fashion-mnist)")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_gzip_and_raw(tmp_path: Path, gz: bool, idx_writer: Any) -> None:
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    idx_writer(path, arr)
    out = read_idx(path)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 4)
    assert torch.equal(out, torch.from_numpy(arr.astype(np.uint8)))


def test_idx_reader_rejects_garbage_and_truncation(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"hello world")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 100) + b"\x00" * 10)
    with pytest.raises(UserError, match="truncated"):
        read_idx(short)


def test_registry_lists_data_sets() -> None:
    assert {"fashion-mnist", "cifar10", "cifar100", "image-folder"} <= set(list_datasets())
    with pytest.raises(UserError, match="valid datasets: .*fashion-mnist"):
        get_dataset("imagenet-22k")


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        get_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")
    msg = str(info.value)
    assert str(tmp_path / "nowhere") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg


@pytest.mark.parametrize("gz", [True, False])
def test_fake_fashion_mnist_splits(tmp_path: Path, gz: bool, fake_fmnist: Any) -> None:
    root = fake_fmnist(tmp_path / "fm", gz=gz)
    train = get_dataset("fashion-mnist", root, "train")
    val = get_dataset("fashion-mnist", root, "val")
    trainval = get_dataset("fashion-mnist", root, "trainval")
    test = get_dataset("fashion-mnist", root, "test")
    assert len(train) + len(val) == len(trainval) == 600 and len(test) == 100
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
    assert train.classes[0] == "T-shirt/top" and train.mean == (0.2860,)


@needs_fmnist
def test_real_fashion_mnist_val_split_is_deterministic_disjoint_and_stratified() -> None:
    trainval = get_dataset("fashion-mnist", split="trainval")
    assert trainval.images.shape == (60000, 1, 28, 28)
    idx = stratified_val_indices(trainval.labels, 5000)
    assert torch.equal(idx, stratified_val_indices(trainval.labels, 5000))  # same every call
    assert idx.numel() == 5000 and idx.unique().numel() == 5000
    assert torch.bincount(trainval.labels[idx], minlength=10).tolist() == [500] * 10
    val = get_dataset("fashion-mnist", split="val")
    train = get_dataset("fashion-mnist", split="train")
    assert len(val) == 5000 and len(train) == 55000
    assert torch.equal(val.images, trainval.images[idx])
    mask = torch.ones(60000, dtype=torch.bool)
    mask[idx] = False
    assert torch.equal(train.images, trainval.images[mask])  # train = trainval minus val, disjoint
    test = get_dataset("fashion-mnist", split="test")
    assert len(test) == 10000 and torch.bincount(test.labels).tolist() == [1000] * 10


@needs_fmnist
def test_real_fashion_mnist_class_subset_remaps_labels() -> None:
    full = get_dataset("fashion-mnist", split="test")
    sub = get_dataset("fashion-mnist", split="test", classes="Trouser,T-shirt/top,9")
    assert sub.classes == ["Trouser", "T-shirt/top", "Ankle boot"] and sub.num_classes == 3
    assert sorted(sub.labels.unique().tolist()) == [0, 1, 2] and len(sub) == 3000
    assert torch.equal(sub.images[sub.labels == 0], full.images[full.labels == 1])


def test_class_subset_errors(tmp_path: Path, fake_fmnist: Any) -> None:
    root = fake_fmnist(tmp_path / "fm")
    with pytest.raises(UserError, match="unknown class 'Hat'; valid classes: T-shirt/top"):
        get_dataset("fashion-mnist", root, "train", classes="Hat,Trouser")
    with pytest.raises(UserError, match="out of range"):
        get_dataset("fashion-mnist", root, "train", classes="0,10")
    with pytest.raises(UserError, match="at least 2"):
        get_dataset("fashion-mnist", root, "train", classes="Trouser")


def _cifar_batch(n: int, labels_key: str, rng: np.random.Generator, n_classes: int) -> dict:
    labels = [int(i % n_classes) for i in range(n)]
    batch = {b"batch_label": b"batch", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [f"img_{i}.png".encode() for i in range(n)], labels_key.encode(): labels}
    if labels_key == "fine_labels":
        batch[b"coarse_labels"] = [x % 20 for x in labels]
    return batch


def make_fake_cifar10(root: Path, per_batch: int = 40) -> Path:
    """The genuine cifar-10-batches-py layout: pickled dicts with bytes keys."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, f)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(_cifar_batch(per_batch, "labels", rng, 10), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(_cifar_batch(per_batch, "labels", rng, 10), f)
    return folder


def test_cifar10_pickle_format_and_presets(tmp_path: Path) -> None:
    folder = make_fake_cifar10(tmp_path)
    trainval = get_dataset("cifar10", tmp_path, "trainval")  # parent folder also accepted
    assert trainval.images.shape == (200, 3, 32, 32) and trainval.classes[1] == "automobile"
    with open(folder / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    assert torch.equal(trainval.images[0], torch.from_numpy(first[b"data"][0].reshape(3, 32, 32)))
    vehicles = get_dataset("cifar10", folder, "test", classes="vehicles")
    assert vehicles.classes == ["airplane", "automobile", "ship", "truck"]
    assert sorted(vehicles.labels.unique().tolist()) == [0, 1, 2, 3] and len(vehicles) == 16
    animals = get_dataset("cifar10", folder, "train", classes="animals")
    assert animals.num_classes == 6


def test_cifar100_pickle_format_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    fine = [f"class{i:02d}".encode() for i in range(100)]
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}, f)
    for name, n in (("train", 300), ("test", 100)):
        with open(folder / name, "wb") as f:
            pickle.dump(_cifar_batch(n, "fine_labels", rng, 100), f)
    test = get_dataset("cifar100", folder, "test")
    assert test.num_classes == 100 and test.labels.tolist() == list(range(100))
    assert len(get_dataset("cifar100", folder, "train")) + len(get_dataset("cifar100", folder, "val")) == 300


def test_cifar_pickle_with_foreign_objects_is_refused(tmp_path: Path) -> None:
    folder = make_fake_cifar10(tmp_path / "c")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"a"] * 10, b"evil": Path("/")}, f)
    with pytest.raises(UserError, match="refusing to load"):
        get_dataset("cifar10", folder, "test")


def test_image_folder_layout(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image", reason="image folders need Pillow")
    for split, n in (("train", 12), ("test", 3)):
        for c, value in (("cat", 40), ("dog", 200)):
            d = tmp_path / "pets" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                pil.fromarray(np.full((16, 16), value + i, dtype=np.uint8), mode="L").save(d / f"{i}.png")
    trainval = get_dataset("image-folder", tmp_path / "pets", "trainval")
    assert trainval.classes == ["cat", "dog"] and trainval.images.shape == (24, 1, 16, 16)
    assert trainval.images[trainval.labels == 1].min() >= 200
    test = get_dataset("image-folder", tmp_path / "pets", "test")
    assert len(test) == 6 and test.mean == trainval.mean  # stats come from the training images
    with pytest.raises(UserError, match="looked in"):
        get_dataset("image-folder", None, "train")


def _tiny(n: int = 10) -> Dataset:
    images = torch.arange(n * 4 * 4, dtype=torch.uint8).reshape(n, 1, 4, 4)
    return Dataset("tiny", "train", images, torch.arange(n) % 2, ["a", "b"], (0.5,), (0.25,), "-")


def test_loader_normalises_batches_and_covers_every_image_once() -> None:
    data = _tiny()
    loader = TensorLoader(data, batch_size=4, shuffle=True, seed=3)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([b[0] for b in batches])
    expected = (data.images.float() / 255 - 0.5) / 0.25
    assert sorted(x.flatten().tolist()) == pytest.approx(sorted(expected.flatten().tolist()), abs=1e-5)
    loader.set_epoch(0)
    again = torch.cat([b[0] for b in loader])
    assert torch.equal(x, again)  # order depends only on (seed, epoch)
    loader.set_epoch(1)
    assert not torch.equal(x, torch.cat([b[0] for b in loader]))


def test_random_crop_flip_shifts_and_flips() -> None:
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.uint8).reshape(2, 1, 5, 5) + 1
    gen = torch.Generator().manual_seed(0)
    flipped = random_crop_flip(x, pad=0, flip=True, gen=gen)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    cropped = random_crop_flip(x, pad=2, flip=False, gen=gen)
    assert cropped.shape == x.shape and cropped.dtype == torch.uint8
    for i in range(2):  # every crop is the padded image shifted by at most 2 px
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        windows = [padded[:, r:r + 5, c:c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(cropped[i], w) for w in windows)


@pytest.mark.parametrize("which", ["train", "t10k"])
def test_label_file_that_does_not_match_its_image_file_is_refused(tmp_path: Path, fake_fmnist: Any,
                                                                  idx_writer: Any, which: str) -> None:
    root = fake_fmnist(tmp_path / "fm", n_train=200, n_test=50)
    n = 200 if which == "train" else 50
    idx_writer(root / f"{which}-labels-idx1-ubyte.gz", np.arange(n - 7) % 10)  # a label file of another set
    with pytest.raises(UserError) as info:
        get_dataset("fashion-mnist", root, "train")
    msg = str(info.value)
    assert f"{n - 7} labels" in msg and f"{n} images" in msg and "do not belong together" in msg
    assert "\n" not in msg


def test_labels_outside_the_classes_are_refused(tmp_path: Path, fake_fmnist: Any, idx_writer: Any) -> None:
    root = fake_fmnist(tmp_path / "fm", n_train=200, n_test=50)
    idx_writer(root / "t10k-labels-idx1-ubyte.gz", np.full(50, 12))
    with pytest.raises(UserError, match="test labels range 12..12 but the data set has 10 classes"):
        get_dataset("fashion-mnist", root, "test")


def test_loader_rejects_a_zero_batch_size() -> None:
    data = Dataset("d", "test", torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
                   ["a"], (0.0,), (1.0,), "-")
    with pytest.raises(UserError, match="--batch-size must be a positive integer, got 0"):
        TensorLoader(data, batch_size=0)


def test_teacher_data_opens_the_recorded_classes_in_output_order_with_the_training_normalisation(
        tmp_path: Path, fake_fmnist: Any) -> None:
    from amc_mobile.data import teacher_data

    root = fake_fmnist(tmp_path / "fm")
    names = get_dataset("fashion-mnist", root, "train").classes
    chosen = [names[3], names[1]]  # a class subset, in the teacher's output order (not the data set's)
    meta = {"arch": {"name": "mobilenet_v1_cifar", "num_classes": 2, "in_chans": 1, "width_mult": 0.25,
                     "input_size": 28},
            "data": {"dataset": "fashion-mnist", "classes": chosen, "mean": [0.25], "std": [0.5]}}
    for split in ("train", "val", "test"):
        data = teacher_data(meta, split, root)
        assert data.classes == chosen and data.mean == (0.25,) and data.std == (0.5,)
        raw = get_dataset("fashion-mnist", root, split)
        # output 0 is the data set's class 3: same images, relabelled 0
        assert torch.equal(data.images[data.labels == 0], raw.images[raw.labels == 3])
    # without a record: the named data set, its own classes and statistics
    plain = teacher_data(None, "val", root, dataset="fashion-mnist")
    assert plain.classes == names and plain.mean != (0.25,)


def test_teacher_data_mismatches_are_one_line(tmp_path: Path, fake_fmnist: Any) -> None:
    from amc_mobile.data import teacher_data

    root = fake_fmnist(tmp_path / "fm")
    arch = {"name": "mobilenet_v1_cifar", "num_classes": 10, "in_chans": 1, "width_mult": 0.25, "input_size": 28}
    with pytest.raises(UserError, match="pass --dataset"):
        teacher_data({"arch": arch}, "val", root)
    with pytest.raises(UserError, match="4 outputs but fashion-mnist \\(val\\) has 10 classes; pass --classes"):
        teacher_data({"arch": {**arch, "num_classes": 4}, "data": {"dataset": "fashion-mnist"}}, "val", root)
    with pytest.raises(UserError, match="expects in_chans 3 but fashion-mnist images have 1"):
        teacher_data({"arch": {**arch, "in_chans": 3}, "data": {"dataset": "fashion-mnist"}}, "val", root)
    with pytest.raises(UserError, match="classes \\['Unicorn'\\] are not in data set"):
        teacher_data({"arch": {**arch, "num_classes": 1}, "data": {"dataset": "fashion-mnist", "classes": ["Unicorn"]}},
                     "val", root)
