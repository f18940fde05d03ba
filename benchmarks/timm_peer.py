"""timm's ViT as a training-throughput peer, run in its own process by `throughput.py`.

A separate process keeps PyTorch's threads and memory out of the Keras process being timed,
and lets `throughput.py` time keras_vit under any Keras backend next to timm. The parent
writes one line per request to stdin and reads one line back:

    round      -> "<images per second>" of one timed round of --steps training steps
    quit       -> exits

The model is `timm.create_model("vit_<size>_patch<P>_224", img_size=...)`, without dropout,
trained with AdamW and cross-entropy; `--dtype_policy=mixed_bfloat16` runs forward and loss
under `torch.autocast("cpu", torch.bfloat16)`, timm's (and PyTorch's) mixed-precision
recipe, with float32 weights and optimizer state as Keras' mixed_bfloat16 keeps them.
Between requests the process waits on stdin and uses no CPU.

    PYTHONPATH=/path/to/timm python benchmarks/timm_peer.py --variant=S/16 --batch_size=32
"""

import argparse
import sys
import time

_SIZES = {"Ti": "tiny", "S": "small", "B": "base", "L": "large", "H": "huge"}


def _import_timm():
    try:
        import timm
    except RuntimeError as error:
        # A torchvision wheel built for CUDA, beside a CPU-only torch, fails while it
        # registers fake kernels for C++ ops it could not load ("operator torchvision::nms
        # does not exist"). timm's ViT uses no torchvision op, only Python modules, so import
        # torchvision with that registration skipped.
        if "torchvision::" not in str(error):
            raise
        import torch

        for name in [name for name in sys.modules if name.split(".")[0] in ("torchvision", "timm")]:
            del sys.modules[name]
        register_fake = torch.library.register_fake
        torch.library.register_fake = lambda *args, **kwargs: (lambda function: function)
        try:
            import torchvision  # noqa: F401
        finally:
            torch.library.register_fake = register_fake
        import timm
    return timm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="S/16")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--dtype_policy", default="float32", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    import torch

    timm = _import_timm()
    size, patch = args.variant.split("/")
    if size not in _SIZES:
        raise SystemExit(f"timm peer: no timm ViT for size {size!r}; one of {sorted(_SIZES)}")
    name = f"vit_{_SIZES[size]}_patch{patch}_224"
    model = timm.create_model(name, pretrained=False, num_classes=1000, img_size=args.image_size)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((args.batch_size, 3, args.image_size, args.image_size), generator=generator)
    labels = torch.randint(0, 1000, (args.batch_size,), generator=generator)
    autocast = args.dtype_policy == "mixed_bfloat16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    print(f"ready {name} torch={torch.__version__} timm={timm.__version__} "
          f"threads={torch.get_num_threads()}", flush=True)
    for request in sys.stdin:
        request = request.strip()
        if request == "quit":
            break
        if request != "round":
            raise SystemExit(f"timm peer: unknown request {request!r}: 'round' or 'quit'")
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        print(f"{args.steps * args.batch_size / (time.perf_counter() - start):.6f}", flush=True)


if __name__ == "__main__":
    main()
