import pytest
import torch

from cisctool.config import with_overrides
from cisctool.errors import InputError
from cisctool.models import build_model
from cisctool.store.checkpoints import load_checkpoint, load_model, model_payload, save_checkpoint


class NotPlainData:
    """A pickled class instance: loading it would run arbitrary code, so it must be refused."""


def tiny_checkpoint(config, path):
    model = build_model("deeplabv3plus", "tiny", config.data.num_classes, head_channels=config.model.head_channels)
    save_checkpoint(path, model_payload(model, config, 0))
    return model


def test_round_trip_rebuilds_the_same_model(demo_config, tmp_path):
    model = tiny_checkpoint(demo_config, tmp_path / "model.pt")
    loaded, trained = load_model(tmp_path / "model.pt", expected=demo_config)
    assert trained.data.num_classes == demo_config.data.num_classes
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_refuses_unsafe_truncated_and_mismatched_checkpoints(demo_config, tmp_path):
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "config": {}, "extra": NotPlainData()}, unsafe)
    with pytest.raises(InputError, match="unsafe.pt: holds Python objects beyond tensors .* would run arbitrary code"):
        load_checkpoint(unsafe)

    tiny_checkpoint(demo_config, tmp_path / "model.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "model.pt").read_bytes()[:500])
    with pytest.raises(InputError, match="truncated.pt: not a readable"):
        load_checkpoint(truncated)

    other_classes = with_overrides(demo_config, {"data.num_classes": 3, "data.class_names": []})
    with pytest.raises(InputError, match="checkpoint has 6 classes; config has 3"):
        load_model(tmp_path / "model.pt", expected=other_classes)
    other_backbone = with_overrides(demo_config, {"model.backbone": "resnet50"})
    with pytest.raises(InputError, match="checkpoint is a tiny model; config asks for resnet50"):
        load_model(tmp_path / "model.pt", expected=other_backbone)
    with pytest.raises(InputError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
