import pickle

import numpy as np
import torch

from cisctool.data.datasets import (
    InferenceDataset,
    LabeledPairDataset,
    PairSettings,
    SeededSampler,
    class_area_fractions,
    pad_collate,
)
from cisctool.data.splits import split_entries
from cisctool.method.prototypes import present_classes


def labeled_dataset(config, guide_exclude=(0,)):
    entries = split_entries(config, "labeled")
    settings = PairSettings(
        num_classes=config.data.num_classes,
        ignore_index=255,
        crop_size=64,
        scale_range=(0.5, 2.0),
        min_area=0.03,
        guide_exclude=guide_exclude,
    )
    return LabeledPairDataset(entries, settings)


def test_pairs_share_a_class_and_never_pair_an_image_with_itself(demo_config):
    dataset = labeled_dataset(demo_config)
    assert not dataset.presence[:, 0].any()  # background excluded from pairing
    rng = np.random.default_rng(0)
    for index in range(len(dataset)):
        others = np.delete(dataset.presence, index, axis=0)
        can_share = bool((others & dataset.presence[index]).any())
        assert can_share  # every demo image shares a class with another: the pairing is exercised
        for _ in range(5):
            partner, shared = dataset.choose_partner(index, rng)
            assert partner != index and shared > 0
            assert dataset.presence[index, shared] and dataset.presence[partner, shared]


def test_an_image_whose_classes_no_other_image_has_gets_any_partner_and_no_shared_class(demo_config):
    dataset = labeled_dataset(demo_config)
    dataset.presence[:] = False
    dataset.presence[0, 1] = True  # only image 0 has class 1; no other image has any class
    rng = np.random.default_rng(0)
    partners = {dataset.choose_partner(0, rng) for _ in range(20)}
    assert all(shared == -1 and partner != 0 for partner, shared in partners) and len(partners) > 1


def test_items_have_crop_shapes_and_valid_labels(demo_config):
    dataset = labeled_dataset(demo_config)
    item = dataset[(0, 123)]
    assert item["image"].shape == (3, 64, 64) and item["partner_image"].shape == (3, 64, 64)
    assert item["mask"].shape == (64, 64) and item["mask"].dtype == torch.long
    labels = set(item["mask"].unique().tolist()) | set(item["partner_mask"].unique().tolist())
    assert labels <= set(range(demo_config.data.num_classes)) | {255}
    again = dataset[(0, 123)]
    assert torch.equal(item["image"], again["image"]) and torch.equal(item["mask"], again["mask"])


def test_seeded_sampler_resumes_the_same_stream():
    whole = list(SeededSampler(7, seed=3, start=0, stop=30))
    tail = list(SeededSampler(7, seed=3, start=12, stop=30))
    assert tail == whole[12:]
    first_epoch = sorted(index for index, _ in whole[:7])
    assert first_epoch == list(range(7))
    assert [index for index, _ in whole[:7]] != [index for index, _ in whole[7:14]]


def test_present_classes_uses_min_area_of_valid_pixels():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[0, :2] = 1  # 2 % of pixels
    mask[1:4] = 2  # 30 %
    mask[9] = 255
    present = present_classes(class_area_fractions(mask, 4, 255), 0.03)
    assert present.tolist() == [True, False, True, False]


def test_inference_batches_pad_images_and_masks(demo_config):
    entries = split_entries(demo_config, "val")
    dataset = InferenceDataset(entries, demo_config.data.num_classes, 255, with_masks=True)
    batch = pad_collate([dataset[0], dataset[1]], 255)
    sizes = batch["sizes"]
    assert batch["image"].shape[-2:] == tuple(sizes.max(dim=0).values.tolist())
    for slot in range(2):
        height, width = sizes[slot].tolist()
        assert (batch["mask"][slot, height:, :] == 255).all() and (batch["mask"][slot, :, width:] == 255).all()
        assert (batch["mask"][slot, :height, :width] != 255).all()
    unlabeled = InferenceDataset(entries, demo_config.data.num_classes, 255, with_masks=False)
    assert (unlabeled[0]["mask"] == 255).all()


def test_inference_batches_round_their_padded_size_up_to_the_divisor(demo_config):
    entries = split_entries(demo_config, "val")
    dataset = InferenceDataset(entries, demo_config.data.num_classes, 255, with_masks=True)
    batch = pad_collate([dataset[0], dataset[1]], 255, size_divisor=32)
    largest = batch["sizes"].max(dim=0).values.tolist()
    assert [side % 32 for side in batch["image"].shape[-2:]] == [0, 0]
    assert all(padded - side < 32 for padded, side in zip(batch["image"].shape[-2:], largest))
    image = dataset[0]
    height, width = image["mask"].shape
    assert torch.equal(batch["image"][0, :, :height, :width], image["image"])
    assert (batch["image"][0, :, height:] == 0).all() and (batch["mask"][0, height:] == 255).all()


def test_inference_dataset_keeps_a_packed_split_packed_and_ships_it_to_workers(demo_config):
    entries = split_entries(demo_config, "unlabeled")
    dataset = InferenceDataset(entries, demo_config.data.num_classes, 255, with_masks=False)
    assert dataset.entries is entries  # not one SplitEntry object per image (20 MB at 100k images)
    shipped = pickle.loads(pickle.dumps(dataset))  # as a spawned loader worker receives it
    assert shipped.entries == entries and len(shipped) == len(entries)
    assert torch.equal(shipped[len(entries) - 1]["image"], dataset[len(entries) - 1]["image"])
