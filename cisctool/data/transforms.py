"""Image/mask transforms for training (scale, pad, crop, flip) and evaluation (normalise only).

Randomness comes from a numpy Generator passed in, so a sample is a pure
function of its seed: training resumed at step k sees the same crops as an
uninterrupted run, whatever the number of DataLoader workers.
"""

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 RGB → 3×H×W float32, ImageNet mean/std (what pretrained backbones expect)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)


def random_scale(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, scale_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize by a factor drawn from `scale_range`: bilinear for the image, nearest for the mask."""
    scale = rng.uniform(*scale_range)
    height, width = mask.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    scaled_image = np.array(Image.fromarray(image).resize(size, Image.BILINEAR))
    scaled_mask = np.array(Image.fromarray(mask).resize(size, Image.NEAREST))
    return scaled_image, scaled_mask


def pad_and_crop(
    image: torch.Tensor, mask: torch.Tensor, crop_size: int, rng: np.random.Generator, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 3×H×W / H×W to at least crop_size (image 0 = mean colour, mask ignore), then crop at random."""
    height, width = mask.shape
    pad_bottom, pad_right = max(crop_size - height, 0), max(crop_size - width, 0)
    if pad_bottom or pad_right:
        image = torch.nn.functional.pad(image, (0, pad_right, 0, pad_bottom), value=0.0)
        mask = torch.nn.functional.pad(mask, (0, pad_right, 0, pad_bottom), value=ignore_index)
        height, width = mask.shape
    top = int(rng.integers(0, height - crop_size + 1))
    left = int(rng.integers(0, width - crop_size + 1))
    window = (slice(top, top + crop_size), slice(left, left + crop_size))
    return image[:, window[0], window[1]], mask[window]


def train_transform(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    crop_size: int,
    scale_range: tuple[float, float],
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """H×W×3 uint8 + H×W uint8 → (3×crop×crop float, crop×crop int64): scale, pad, crop, flip."""
    image, mask = random_scale(image, mask, rng, scale_range)
    image_tensor = normalize(image)
    mask_tensor = torch.from_numpy(np.ascontiguousarray(mask)).long()
    image_tensor, mask_tensor = pad_and_crop(image_tensor, mask_tensor, crop_size, rng, ignore_index)
    if rng.random() < 0.5:
        image_tensor, mask_tensor = image_tensor.flip(-1), mask_tensor.flip(-1)
    return image_tensor.contiguous(), mask_tensor.contiguous()


def strong_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ST++'s strong augmentation of an H×W×3 uint8 image: colour jitter (p 0.8), grayscale (p 0.2), blur (p 0.5)."""
    picture = Image.fromarray(image)
    if rng.random() < 0.8:
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            picture = enhancer(picture).enhance(float(rng.uniform(0.5, 1.5)))
    if rng.random() < 0.2:
        picture = picture.convert("L").convert("RGB")
    if rng.random() < 0.5:
        picture = picture.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.1, 2.0))))
    return np.array(picture)


def pseudo_transform(
    image: np.ndarray,
    label: np.ndarray,
    weight: np.ndarray,
    rng: np.random.Generator,
    crop_size: int,
    scale_range: tuple[float, float],
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A pseudo-labeled image: the geometric transforms of `train_transform` applied alike to
    image, label and per-pixel weight (nearest; padding has label ignore and weight 0), then
    the strong colour augmentation on the image."""
    scale = rng.uniform(*scale_range)
    height, width = label.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = np.array(Image.fromarray(image).resize(size, Image.BILINEAR))
    label = np.array(Image.fromarray(label).resize(size, Image.NEAREST))
    weight = np.array(Image.fromarray(weight.astype(np.float32), mode="F").resize(size, Image.NEAREST))
    image = strong_colour(image, rng)
    stacked = torch.cat([normalize(image), torch.from_numpy(weight)[None]])  # weight rides as a 4th channel
    label_tensor = torch.from_numpy(np.ascontiguousarray(label)).long()
    stacked, label_tensor = pad_and_crop(stacked, label_tensor, crop_size, rng, ignore_index)
    if rng.random() < 0.5:
        stacked, label_tensor = stacked.flip(-1), label_tensor.flip(-1)
    return stacked[:3].contiguous(), label_tensor.contiguous(), stacked[3].contiguous()
