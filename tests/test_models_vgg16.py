"""vgg16-finetune (Oliveira): trainable parameters per degree, the off-by-one legacy, the selection
and stopping rules, pre-training sources (ImageNet file, synthetic out-of-domain, MRI), fine-tuning."""

from __future__ import annotations

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
    return vgg.build(info, {**defaults(vgg.PARAMS), "width": 1.0})


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


def test_bad_degree_is_a_clear_error():
    with pytest.raises(XbenchError, match=r"degree 5 .*\"1\", \"2\", \"3\" or \"4\".*\"all\""):
        vgg.check_degree(5)
    assert vgg.check_degree(3) == "3"


def test_learning_rate_table_and_override():
    base = {**defaults(vgg.PARAMS), "pretrain": "mri", "degree": "2"}
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
    params = {**defaults(vgg.PARAMS), "width": 0.125, "pretrain": "imagenet", "weights": str(path)}
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


SMALL = {"width": 0.125, "pretrain_images": 1200, "pretrain_epochs": 4, "pretrain_lr": 0.02, "pretrain_batch_size": 32}


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


def test_pretraining_is_cached_and_frozen_blocks_keep_their_pretrained_weights(finetuned):
    _, cache, out = finetuned
    files = sorted(p.name for p in (cache / "pretrain").iterdir())
    assert len(files) == 2 and files[0].startswith("synthetic-ood-") and files[1].endswith(".pt")
    assert out["all"][2].metrics["pretrain_cached"] == 0.0 and out["2"][2].metrics["pretrain_cached"] == 1.0
    state = torch.load(cache / "pretrain" / files[1], weights_only=True)
    model, init, report = out["2"]
    frozen = [k for k in state if k.startswith("features.") and int(k.split(".")[1]) < 17]
    trained = [k for k in state if k.startswith("features.") and int(k.split(".")[1]) >= 17]
    assert frozen and trained
    for k in frozen:  # degree 2: blocks 1-3 stayed exactly as pre-trained
        assert torch.equal(model.state_dict()[k], state[k]), k
        assert not torch.equal(state[k], init[k])  # and pre-training did change them
    assert any(not torch.equal(model.state_dict()[k], state[k]) for k in trained)
    assert report.metrics["trainable_parameters"] < report.metrics["total_parameters"]
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


def test_mri_pretraining_learns_the_rotation_pretext(tmp_path, monkeypatch):
    monkeypatch.delenv("XBENCH_HCP_DIR", raising=False)
    info = DatasetInfo("x", 3, 32, 32, ("a", "b"))
    params = {**defaults(vgg.PARAMS), **SMALL, "pretrain": "mri", "pretrain_images": 600}
    torch.manual_seed(0)
    model = vgg.build(info, params)
    before = model.features[0].weight.clone()
    facts = pretraining.initialise(model, info, params, FitContext(0, CPU, str(tmp_path)), head="classifier.6",
                                   build_pretext=lambda k: vgg.VGG16(3, k, 0.125, batch_norm=True))
    assert facts["pretrain_chance"] == 0.25 and facts["pretrain_val_accuracy"] > 0.45
    assert facts["pretrain_mni_template"] == 1.0
    assert not torch.equal(model.features[0].weight, before)
    assert any(p.name.startswith("mri-") for p in (tmp_path / "pretrain").iterdir())
