"""What does folding batch norm into the convolutions save at inference?

    python benchmarks/bench_inference.py [--checkpoint runs/demo/round0/model.pt] [--batch-size 8] [--repeats 5]

One model (a checkpoint's, or the demo's architecture: DeepLabV3+ over MobileNetV2 with
64-channel head, ImageNet backbone when the weights file is installed), VOC-size batches
(375×500 padded to 384×512), channels-last, on `--device`. Forward passes of the model as
loaded and of `fold_batch_norm(model)` alternate, best of `--repeats` each; prints
images/s of both, the ratio (target ≥ 1.1) and the largest difference of their logits and
features beside the largest value, and writes a JSON record.
"""

import argparse
import time
from pathlib import Path

import torch
from rich.table import Table

from cisctool.console import console
from cisctool.data.demo import find_mobilenet_weights
from cisctool.models import build_model
from cisctool.models.fold import fold_batch_norm
from cisctool.store.checkpoints import load_model

from records import write_record

PADDED_VOC = (384, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a model.pt (default: the demo's architecture)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.checkpoint:
        model, _ = load_model(args.checkpoint)
    else:
        model = build_model("deeplabv3plus", "mobilenetv2", 21, str(find_mobilenet_weights() or ""), head_channels=64)
    model = model.eval().to(args.device).to(memory_format=torch.channels_last)
    folded = fold_batch_norm(model).to(memory_format=torch.channels_last)
    images = torch.randn(args.batch_size, 3, *PADDED_VOC, device=args.device).contiguous(
        memory_format=torch.channels_last
    )
    plain_rate, folded_rate = 0.0, 0.0
    with torch.inference_mode():
        plain_out, folded_out = model(images), folded(images)  # warm-up, and the outputs compared
        for _ in range(args.repeats):  # alternating: the machine's noise hits both alike
            plain_rate = max(plain_rate, _images_per_second(model, images))
            folded_rate = max(folded_rate, _images_per_second(folded, images))
    figures = {
        "model": str(args.checkpoint) if args.checkpoint else "demo architecture (mobilenetv2, head 64, 21 classes)",
        "batch_size": args.batch_size, "padded_size": list(PADDED_VOC), "repeats": args.repeats,
        "unfolded_images_per_second": plain_rate, "folded_images_per_second": folded_rate,
        "ratio_folded_vs_unfolded": folded_rate / plain_rate,
        "max_abs_diff_logits": (plain_out.logits - folded_out.logits).abs().max().item(),
        "max_abs_logits": plain_out.logits.abs().max().item(),
        "max_abs_diff_features": (plain_out.features - folded_out.features).abs().max().item(),
        "max_abs_features": plain_out.features.abs().max().item(),
    }  # fmt: skip
    table = Table(title=f"inference at {PADDED_VOC[1]}×{PADDED_VOC[0]}, batch {args.batch_size}, {args.device}")
    for column in ("unfolded img/s", "folded img/s", "ratio", "max |Δ logits| / max |logits|",
                   "max |Δ features| / max |features|"):
        table.add_column(column, justify="right")
    table.add_row(f"{plain_rate:.2f}", f"{folded_rate:.2f}", f"{figures['ratio_folded_vs_unfolded']:.3f}×",
                  f"{figures['max_abs_diff_logits']:.1e} / {figures['max_abs_logits']:.1f}",
                  f"{figures['max_abs_diff_features']:.1e} / {figures['max_abs_features']:.1f}")  # fmt: skip
    console.print(table)
    console.print(f"wrote {write_record('inference', {'figures': figures}, args.device)}")


def _images_per_second(model: torch.nn.Module, images: torch.Tensor) -> float:
    started = time.perf_counter()
    model(images)
    if images.is_cuda:
        torch.cuda.synchronize()
    return images.shape[0] / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
