"""2D benchmark: photos against the reference code, MNI152 axial slices against classical methods, and
PASCAL VOC photos with the reference code's scribbles (first fit, then one more stroke).

    python benchmarks/bench2d.py --refcode DIR            # full run; writes RESULTS_2D.md, results_2d.json and
                                                          # overlay2d_*.png into benchmarks/
    python benchmarks/bench2d.py --refcode DIR --quick    # 2-3 minute smoke run into a temporary folder

DIR is a scratch copy of the authors' repository (kanezaki/pytorch-unsupervised-segmentation-tip, MIT): its
``demo.py`` runs from there as the reference, on its own BSD500 photos and on the scikit-image photos, for
``--ref-iters`` iterations (default 100) in the same run. Its seconds per iteration (median interval between
its per-iteration lines) give its time at its default 1000 iterations by extrapolation. Its code is never
copied here; it needs opencv (``pip install opencv-python-headless``) and imports torchvision without using
it, so a stand-in torchvision module is put on its PYTHONPATH when the real one is missing.

Sections (each engine run is a child process of this script, so that its peak memory is its own):
- photos: the engine at its 2D defaults (``unsupervised_seg.io.load_volume`` as the command line reads the
  file) vs ``demo.py``: seconds, iterations, labels, peak RSS, adjusted Rand index between the two results,
  and an overlay PNG (photo | engine | reference, the reference's clusters coloured like the engine label
  they overlap most);
- MNI152 axial slices (1 mm, 30-70 % of the brain's height): engine (``n_labels=3``, brain mask) vs KMeans,
  GaussianMixture and multi-Otsu on the same in-mask intensities; one-to-one Dice against CSF/GM/WM;
- scribbles: PASCAL VOC photos with the reference's ``*_scribble.png`` (255 = unlabelled, class v -> v + 1
  as ``--reference-scribbles`` reads it); one stroke is held back (the largest piece of the class drawn in
  most pieces), the first fit sees the others, then ``Segmenter.fit`` again with all of them: a refinement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SKIMAGE_PHOTOS = ("coffee", "astronaut", "chelsea")
VOC_DEFAULT = ("2007_005915", "2008_001439", "2009_000421")
REFERENCE_MAX_ITER = 1000  # demo.py's default --maxIter
PANEL_WIDTH = 300  # overlay panels are scaled to this width


# ---------------------------------------------------------------------------------------------- child side
def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM missing from /proc/self/status (Linux only)")


def worker(spec_path: str) -> None:
    """One engine job: fit (and optionally refit with more strokes); labels to .npy, numbers to JSON."""
    spec = json.loads(Path(spec_path).read_text())
    import torch

    from unsupervised_seg.core.volume import Volume
    from unsupervised_seg.engine.config import SegmentationConfig
    from unsupervised_seg.engine.segmenter import Segmenter
    from unsupervised_seg.io import load_volume

    torch.set_num_threads(spec["threads"])
    if "image_path" in spec:
        volume = load_volume(spec["image_path"])
    else:
        volume = Volume(np.load(spec["image_npy"]), tuple(spec["spacing"]))
    mask = np.load(spec["mask_npy"]) if spec.get("mask_npy") else None
    scribbles = np.load(spec["scribbles_npy"]) if spec.get("scribbles_npy") else None
    segmenter = Segmenter(SegmentationConfig(**spec["config"]))
    resolved = segmenter.config.resolved(volume.spatial_dims)
    result = segmenter.fit(volume, scribbles, mask)
    np.save(spec["labels_out"], result.labels.astype(np.int32))
    out = {
        "seconds": result.seconds,
        "iterations": result.iterations,
        "stop_reason": result.stop_reason,
        "n_labels": result.n_labels,
        "phases": sorted({h["phase"] for h in result.history}),
        "label_counts": [h["n_labels"] for h in result.history],
        "config": {
            k: v
            for k, v in resolved.to_dict().items()
            if k
            in (
                "n_clusters",
                "init",
                "init_iter",
                "lr_half_life",
                "coarse_voxels",
                "convergence_tol",
                "reference_defaults",
            )
        },
    }
    if spec.get("refine_scribbles_npy"):
        more = np.load(spec["refine_scribbles_npy"])
        again = segmenter.fit(volume, more, mask)
        np.save(spec["refine_labels_out"], again.labels.astype(np.int32))
        out["refine"] = {
            "seconds": again.seconds,
            "iterations": again.iterations,
            "stop_reason": again.stop_reason,
            "n_labels": again.n_labels,
            "phases": sorted({h["phase"] for h in again.history}),
        }
    out["peak_rss_mb"] = peak_rss_mb()
    Path(spec["result_out"]).write_text(json.dumps(out))


# --------------------------------------------------------------------------------------------- parent side
def thread_env(threads: int) -> dict:
    return {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}


def run_engine(spec: dict, work: Path, name: str, timeout: float) -> dict:
    spec = {**spec, "labels_out": str(work / f"{name}.labels.npy"), "result_out": str(work / f"{name}.json")}
    if spec.get("refine_scribbles_npy"):
        spec["refine_labels_out"] = str(work / f"{name}.refined.npy")
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    src = str(HERE.parent / "src")
    env = thread_env(spec["threads"])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"engine worker {name} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(Path(spec["result_out"]).read_text())
    out["labels"] = np.load(spec["labels_out"])
    if "refine" in out:
        out["refine"]["labels"] = np.load(spec["refine_labels_out"])
    return out


def torchvision_stand_in(work: Path) -> str:
    """A folder for PYTHONPATH holding a stand-in ``torchvision`` (demo.py imports it and never uses it), or
    "" when torchvision is installed."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        return ""
    folder = work / "shim"
    (folder / "torchvision").mkdir(parents=True, exist_ok=True)
    (folder / "torchvision" / "__init__.py").write_text(
        "# stand-in for the reference demo.py, which imports torchvision.datasets/transforms without using them\n"
        "import types\ndatasets = types.ModuleType('torchvision.datasets')\n"
        "transforms = types.ModuleType('torchvision.transforms')\n"
    )
    return str(folder)


_ITERATION_LINE = re.compile(r"^(\d+) / (\d+) \|\s+label num :\s+(\d+)")


def run_reference(refcode: Path, image: Path, iters: int, threads: int, work: Path, name: str, timeout: float) -> dict:
    """demo.py --visualize 0 --maxIter iters on ``image`` in a scratch folder: labels from its output.png (one
    random colour per cluster), per-iteration seconds (median interval between its iteration lines), startup
    seconds (to the first iteration line, less one iteration), peak RSS (wait4)."""
    folder = work / f"ref_{name}"
    folder.mkdir(parents=True, exist_ok=True)
    env = thread_env(threads)
    shim = torchvision_stand_in(work)
    if shim:
        env["PYTHONPATH"] = shim + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        "-u",
        str(refcode / "demo.py"),
        "--input",
        str(image),
        "--visualize",
        "0",
        "--maxIter",
        str(iters),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stamps, counts, lines = [], [], []
    for line in proc.stdout:
        lines.append(line)
        match = _ITERATION_LINE.match(line)
        if match:
            stamps.append(time.perf_counter() - start)
            counts.append(int(match.group(3)))
        if time.perf_counter() - start > timeout:
            proc.kill()
            break
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - start
    if status != 0 or not stamps:
        raise RuntimeError(f"reference demo.py on {image} failed:\n{''.join(lines[-20:])}")
    per_iter = statistics.median(np.diff(stamps)) if len(stamps) > 1 else stamps[0]
    startup = max(stamps[0] - per_iter, 0.0)
    early = any("reached minLabels" in line for line in lines)
    return {
        "labels": reference_labels(folder / "output.png"),
        "iterations": len(stamps),
        "seconds": total,
        "per_iter": per_iter,
        "startup": startup,
        "stopped_early": early,
        "label_counts": counts,
        "n_labels": counts[-1],
        "peak_rss_mb": usage.ru_maxrss / 1024,
        # its time at its defaults: 1000 iterations, or the measured run when it stopped at minLabels
        "seconds_at_defaults": total if early else startup + (REFERENCE_MAX_ITER + 1) * per_iter,
    }


def reference_labels(path: Path) -> np.ndarray:
    """demo.py's output.png (one colour per cluster) -> (rows, cols) labels 1..K."""
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"))
    _, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    return inverse.reshape(rgb.shape[:2]).astype(np.int32) + 1


def match_colours(reference: np.ndarray, engine: np.ndarray) -> np.ndarray:
    """Relabel the reference's clusters so that one-to-one matched clusters (largest overlap) take the
    engine's label value (so the same colour); the rest take new values."""
    from scipy.optimize import linear_sum_assignment

    ref_ids, ref_inv = np.unique(reference, return_inverse=True)
    eng_ids, eng_inv = np.unique(engine, return_inverse=True)
    overlap = np.zeros((len(ref_ids), len(eng_ids)), np.int64)
    np.add.at(overlap, (ref_inv.ravel(), eng_inv.ravel()), 1)
    rows, cols = linear_sum_assignment(-overlap)
    new = np.zeros(len(ref_ids), np.int32)
    new[rows] = eng_ids[cols]
    spare = [i for i in range(len(ref_ids)) if i not in set(rows.tolist())]
    new[spare] = np.arange(len(spare)) + int(engine.max()) + 1
    return new[ref_inv].reshape(reference.shape)


def side_by_side(volume, label_maps, path: Path, alpha: float = 0.5, strokes=None) -> None:
    """PNG of panels: the image, then each label map over it (palette-quantised to stay small)."""
    from PIL import Image

    from unsupervised_seg.demo.overlay import overlay_image

    panels = [overlay_image(volume, np.zeros(volume.spatial_shape, np.int32))]
    if strokes is not None:  # thickened to stay visible at panel size
        from scipy import ndimage

        panels[0] = overlay_image(volume, ndimage.grey_dilation(strokes, size=(5, 5)), 0.9)
    panels += [overlay_image(volume, labels, alpha) for labels in label_maps]
    height = round(panels[0].height * PANEL_WIDTH / panels[0].width)
    panels = [p.resize((PANEL_WIDTH, height), Image.LANCZOS) for p in panels]
    canvas = Image.new("RGB", (len(panels) * PANEL_WIDTH + 4 * (len(panels) - 1), height))
    for i, panel in enumerate(panels):
        canvas.paste(panel, (i * (PANEL_WIDTH + 4), 0))
    canvas.quantize(256).save(str(path), optimize=True)


def photo_inputs(refcode: Path, work: Path, quick: bool, names=None):
    """(name, path, source) of the photos: the reference's BSD500 files and scikit-image photos saved as PNG."""
    from PIL import Image
    from skimage import data

    photos = [(p.stem, p, "BSD500 (reference repository)") for p in sorted((refcode / "BSD500").glob("*.jpg"))]
    for name in SKIMAGE_PHOTOS:
        array = getattr(data, name)()
        if quick:
            array = array[::4, ::4]
        path = work / f"{name}.png"
        Image.fromarray(array).save(path)
        photos.append((name, path, "scikit-image"))
    if quick:
        photos = [p for p in photos if p[2] == "scikit-image"][:1]
    return [p for p in photos if names is None or p[0] in names]


def bench_photos(args, work: Path, out: Path) -> list:
    from sklearn.metrics import adjusted_rand_score

    from unsupervised_seg.io import load_volume

    runs = []
    for name, path, source in photo_inputs(args.refcode, work, args.quick, args.photos):
        print(f"photo {name}: engine", flush=True)
        engine = run_engine(
            {"image_path": str(path), "config": args.engine_config, "threads": args.threads},
            work,
            f"photo_{name}",
            args.timeout,
        )
        print(f"photo {name}: reference demo.py, {args.ref_iters} iterations", flush=True)
        ref = run_reference(args.refcode, path, args.ref_iters, args.threads, work, name, args.timeout)
        print(
            f"  engine {engine['seconds']:.1f} s, {engine['iterations']} it, {engine['n_labels']} labels; "
            f"reference {ref['per_iter']:.2f} s/it -> {ref['seconds_at_defaults']:.0f} s at defaults",
            flush=True,
        )
        runs.append((name, path, source, engine, ref))
    rows = []
    for name, path, source, engine, ref in runs:  # compared after all runs: --ref-labels may fill meanwhile
        volume = load_volume(path)
        compared, compared_iters = ref["labels"], ref["iterations"]
        earlier = args.ref_labels / name if args.ref_labels else None
        if earlier is not None and (earlier / "output.png").is_file():  # a longer reference run, for the ARI
            compared = reference_labels(earlier / "output.png")
            log = (earlier / "log.txt").read_text() if (earlier / "log.txt").is_file() else ""
            compared_iters = sum(bool(_ITERATION_LINE.match(line)) for line in log.splitlines()) or None
        overlay = out / f"overlay2d_{name}.png"
        side_by_side(volume, [engine["labels"], match_colours(compared, engine["labels"])], overlay)
        rows.append(
            {
                "name": name,
                "source": source,
                "shape": list(volume.spatial_shape),
                "engine": {k: v for k, v in engine.items() if k != "labels"},
                "reference": {k: v for k, v in ref.items() if k != "labels"},
                "compared_iterations": compared_iters,
                "compared_labels": int(np.unique(compared).size),
                "ari": float(adjusted_rand_score(compared.ravel(), engine["labels"].ravel())),
                "ratio": engine["seconds"] / ref["seconds_at_defaults"],
                "overlay": overlay.name,
            }
        )
        print(
            f"photo {name}: ARI {rows[-1]['ari']:.3f} against the reference after {compared_iters} iterations",
            flush=True,
        )
    return rows


def mni_slices(quick: bool, mm: int = 1):
    """(z, T1 slice, brain mask, tissues) of axial slices at 30-70 % of the brain's height (``mm``; quick: 2 mm)."""
    from unsupervised_seg.demo.sample import mni152_arrays

    t1, mask, truth, _ = mni152_arrays(2 if quick else mm)
    z = np.flatnonzero(mask.any((0, 1)))
    fractions = (0.5,) if quick else (0.3, 0.4, 0.5, 0.6, 0.7)
    for f in fractions:
        k = int(round(z.min() + f * (z.max() - z.min())))
        yield k, t1[:, :, k], mask[:, :, k], truth[:, :, k]


def classical(image: np.ndarray, mask: np.ndarray, k: int = 3) -> dict:
    """KMeans, GaussianMixture and multi-Otsu on the in-mask intensities: {name: (labels, seconds)}."""
    from skimage.filters import threshold_multiotsu
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    values = image[mask].reshape(-1, 1).astype(np.float64)
    methods = {
        "kmeans": lambda: KMeans(k, n_init=3, random_state=0).fit_predict(values) + 1,
        "gmm": lambda: GaussianMixture(k, random_state=0).fit(values).predict(values) + 1,
        "otsu": lambda: np.digitize(values[:, 0], threshold_multiotsu(values[:, 0], classes=k)) + 1,
    }
    out = {}
    for name, method in methods.items():
        start = time.perf_counter()
        labels = np.zeros(image.shape, np.int32)
        labels[mask] = method()
        out[name] = (labels, time.perf_counter() - start)
    return out


def bench_mni(args, work: Path, out: Path) -> list:
    from unsupervised_seg.core.volume import Volume
    from unsupervised_seg.demo.metrics import hungarian_dice

    rows, shown = [], []
    spacing = 2.0 if args.quick else float(args.mni_mm)
    for z, image, mask, truth in mni_slices(args.quick, args.mni_mm):
        np.save(work / f"mni_{z}.npy", image[None].astype(np.float32))
        np.save(work / f"mni_{z}_mask.npy", mask)
        print(f"MNI152 axial slice z={z}: engine", flush=True)
        engine = run_engine(
            {
                "image_npy": str(work / f"mni_{z}.npy"),
                "mask_npy": str(work / f"mni_{z}_mask.npy"),
                "spacing": [spacing, spacing],
                "config": {"n_labels": 3, **args.engine_config},
                "threads": args.threads,
            },
            work,
            f"mni_{z}",
            args.timeout,
        )
        row = {
            "z": z,
            "voxels_in_mask": int(mask.sum()),
            "engine": {
                **{k: v for k, v in engine.items() if k != "labels"},
                "dice": hungarian_dice(engine["labels"], truth, mask),
            },
        }
        baselines = classical(image, mask)
        for name, (labels, seconds) in baselines.items():
            row[name] = {"seconds": seconds, "dice": hungarian_dice(labels, truth, mask)}
        rows.append(row)
        best = max(baselines, key=lambda m: row[m]["dice"]["mean"])
        shown.append((image, truth, engine["labels"], baselines[best][0]))
        print(
            "  " + ", ".join(f"{m} {row[m]['dice']['mean']:.3f}" for m in ("engine", "kmeans", "gmm", "otsu")),
            flush=True,
        )
    image, truth, engine_labels, baseline_labels = shown[len(shown) // 2]  # the middle slice
    volume = Volume(np.rot90(image)[None].copy(), (spacing, spacing))
    side_by_side(
        volume,
        [
            np.rot90(truth),
            np.rot90(match_colours(engine_labels, truth)),
            np.rot90(match_colours(baseline_labels, truth)),
        ],
        out / "overlay2d_mni152_axial.png",
        0.45,
    )
    return rows


def held_out_stroke(scribbles: np.ndarray):
    """(scribbles without one stroke, that stroke's mask, its class): the largest connected piece of the class
    drawn in most pieces (every class keeps at least one piece)."""
    from scipy import ndimage

    best = None
    for k in np.unique(scribbles[scribbles > 0]):
        pieces, n = ndimage.label(scribbles == k, np.ones((3, 3)))
        if n < 2:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        if best is None or n > best[0]:
            best = (n, int(k), pieces == int(np.argmax(sizes)) + 1)
    if best is None:
        raise ValueError("no class is drawn in two or more pieces")
    _, k, stroke = best
    return np.where(stroke, 0, scribbles), stroke, k


def stroke_accuracy(labels: np.ndarray, scribbles: np.ndarray, where: np.ndarray) -> float:
    """Share of the pixels ``where`` that are labelled with their scribble class."""
    return float(np.mean(labels[where] == scribbles[where]))


def bench_scribbles(args, work: Path, out: Path) -> list:
    from unsupervised_seg.io import load_scribbles, load_volume

    rows = []
    names = VOC_DEFAULT[:1] if args.quick else args.voc
    for name in names:
        image = args.refcode / "PASCAL_VOC_2012" / f"{name}.jpg"
        volume = load_volume(image)
        scribbles, _ = load_scribbles(args.refcode / "PASCAL_VOC_2012" / f"{name}_scribble.png", volume, True)
        first, stroke, stroke_class = held_out_stroke(scribbles)
        np.save(work / f"voc_{name}_first.npy", first)
        np.save(work / f"voc_{name}_all.npy", scribbles)
        print(f"VOC {name}: first fit, then one more stroke (class {stroke_class}, {int(stroke.sum())} px)", flush=True)
        config = dict(args.engine_config, **({"max_iter": 20} if args.quick else {}))
        engine = run_engine(
            {
                "image_path": str(image),
                "scribbles_npy": str(work / f"voc_{name}_first.npy"),
                "refine_scribbles_npy": str(work / f"voc_{name}_all.npy"),
                "config": config,
                "threads": args.threads,
            },
            work,
            f"voc_{name}",
            args.timeout,
        )
        classes = [int(c) for c in np.unique(scribbles[scribbles > 0])]
        first_labels, refined = engine["labels"], engine["refine"]["labels"]

        row = {
            "name": name,
            "shape": list(volume.spatial_shape),
            "classes": classes,
            "stroke_class": stroke_class,
            "stroke_pixels": int(stroke.sum()),
            "present_first": {c: bool(np.any(first_labels == c)) for c in classes},
            "present_refined": {c: bool(np.any(refined == c)) for c in classes},
            "strokes_right_first": stroke_accuracy(first_labels, scribbles, first > 0),
            "new_stroke_right_before": stroke_accuracy(first_labels, scribbles, stroke),
            "new_stroke_right_after": stroke_accuracy(refined, scribbles, stroke),
            "strokes_right_refined": stroke_accuracy(refined, scribbles, scribbles > 0),
            "engine": {k: v for k, v in engine.items() if k != "labels"},
        }
        row["engine"]["refine"] = {k: v for k, v in engine["refine"].items() if k != "labels"}
        row["refine_fraction"] = engine["refine"]["seconds"] / engine["seconds"]
        row["head_only"] = engine["refine"]["phases"] == ["head"]
        side_by_side(volume, [first_labels, refined], out / f"overlay2d_voc_{name}.png", 0.5, strokes=scribbles)
        row["overlay"] = f"overlay2d_voc_{name}.png"
        rows.append(row)
        print(
            f"  first {engine['seconds']:.1f} s ({engine['n_labels']} labels), refinement "
            f"{engine['refine']['seconds']:.1f} s = {100 * row['refine_fraction']:.1f} %, head only "
            f"{row['head_only']}; new stroke right {row['new_stroke_right_before']:.2f} -> "
            f"{row['new_stroke_right_after']:.2f}",
            flush=True,
        )
    return rows


def machine(threads: int) -> dict:
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_start": os.getloadavg(),
    }


# ------------------------------------------------------------------------------------------------ report
def report(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# 2D benchmark",
        "",
        f"Written by `{results['command']}` on {results['date']}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads for every method, torch {m['torch']}, "
        f"CPU. Load average (1, 5, 15 min) at the start {fmt_load(m['load_start'])}, at the end "
        f"{fmt_load(m['load_end'])}: other work shared the cores, so seconds are comparable within this run "
        "(the reference ran in it, under the same load), not with other runs.",
        "",
    ]
    if results.get("note"):
        lines += [results["note"], ""]
    engine_cfg = next((r["engine"]["config"] for r in results["photos"]), None)
    if engine_cfg:
        lines += [f"Engine: 2D defaults ({', '.join(f'{k}={v}' for k, v in engine_cfg.items())}).", ""]
    photos = results["photos"]
    if photos:
        it = results["ref_iters"]
        lines += [
            "## Photos: engine at its 2D defaults vs the reference code's demo.py",
            "",
            f"The reference ran {it} iterations here (`demo.py --visualize 0 --maxIter {it}`); *its time at "
            f"its defaults* is its start-up plus {REFERENCE_MAX_ITER + 1} x its median seconds per iteration "
            f"(its default maxIter {REFERENCE_MAX_ITER} and the final forward pass), an extrapolation, "
            "unless it stopped at minLabels (then the measured run). ARI: adjusted Rand index between the "
            "engine's labels and the reference's result after the iterations given (1 = same partition, 0 = "
            "chance): a longer demo.py run of the same machine and day where `--ref-labels` named one, else "
            "this run's. "
            "Peak RSS: each program's own process.",
            "",
            "| photo | size | engine s | iterations (stop) | labels | peak RSS MB | reference s/it | "
            "reference s at defaults | engine / reference | ARI (reference iterations, labels) | overlay |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in photos:
            e, ref = r["engine"], r["reference"]
            lines.append(
                f"| {r['name']} ({r['source']}) | {r['shape'][1]} x {r['shape'][0]} | {e['seconds']:.1f} | "
                f"{e['iterations']} ({e['stop_reason']}) | {e['n_labels']} | {e['peak_rss_mb']:.0f} | "
                f"{ref['per_iter']:.2f} | {ref['seconds_at_defaults']:.0f} | "
                f"{r['ratio']:.3f} (1/{1 / r['ratio']:.0f}) | {r['ari']:.3f} ({r['compared_iterations']}, "
                f"{r['compared_labels']}) | [png]({r['overlay']}) |"
            )
        peaks = ", ".join(f"{r['name']} {r['reference']['peak_rss_mb']:.0f} MB" for r in photos)
        lines += [
            "",
            f"Reference peak RSS: {peaks}.",
            "Overlays: photo | engine | reference (its clusters coloured like the engine label they overlap "
            "most, one to one).",
            "",
        ]
    mni = results["mni"]
    if mni:
        methods = ("engine", "kmeans", "gmm", "otsu")
        means = {m: float(np.mean([r[m]["dice"]["mean"] for r in mni])) for m in methods}
        mm = results.get("mni_mm", 1)
        lines += [
            f"## MNI152 axial slices ({mm} mm): one-to-one Dice against CSF / GM / WM",
            "",
            "Same brain mask and 3 labels for every method (engine: `n_labels=3`, mask). "
            "Overlay: [overlay2d_mni152_axial.png](overlay2d_mni152_axial.png) (image | truth | engine | best "
            "classical method).",
            "",
            "| slice z | voxels | engine Dice | engine s | iterations (stop) | engine peak RSS MB | KMeans | GMM | Otsu |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in mni:
            e = r["engine"]
            lines.append(
                f"| {r['z']} | {r['voxels_in_mask']} | {e['dice']['mean']:.3f} | {e['seconds']:.1f} | "
                f"{e['iterations']} ({e['stop_reason']}) | {e['peak_rss_mb']:.0f} | "
                f"{r['kmeans']['dice']['mean']:.3f} | {r['gmm']['dice']['mean']:.3f} | "
                f"{r['otsu']['dice']['mean']:.3f} |"
            )
        lines.append(
            f"| **mean** | | **{means['engine']:.3f}** | "
            f"{np.mean([r['engine']['seconds'] for r in mni]):.1f} | | | {means['kmeans']:.3f} | "
            f"{means['gmm']:.3f} | {means['otsu']:.3f} |"
        )
        lines.append("")
    voc = results["scribbles"]
    if voc:
        lines += [
            "## PASCAL VOC photos with the reference's scribbles: first fit, then one more stroke",
            "",
            "Scribbles as `--reference-scribbles` reads them (255 = unlabelled, VOC class v -> label v + 1). "
            "The first fit sees all strokes but one (the largest piece of the class drawn in most pieces); "
            "the refinement is `Segmenter.fit` again on the same photo with that stroke added. *Strokes "
            "right*: share of scribbled pixels labelled with their class.",
            "",
            "| photo | classes | first fit s | labels | every class present | strokes right | new stroke right "
            "before -> after | refinement s | refinement / first | head only | overlay |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in voc:
            e = r["engine"]
            present = all(r["present_first"].values()) and all(r["present_refined"].values())
            lines.append(
                f"| {r['name']} | {', '.join(map(str, r['classes']))} | {e['seconds']:.1f} | {e['n_labels']} | "
                f"{'yes' if present else 'NO'} | {r['strokes_right_first']:.3f} | "
                f"{r['new_stroke_right_before']:.2f} -> {r['new_stroke_right_after']:.2f} | "
                f"{e['refine']['seconds']:.1f} | {100 * r['refine_fraction']:.1f} % | "
                f"{'yes' if r['head_only'] else 'no'} | [png]({r['overlay']}) |"
            )
        lines += ["", "Overlays: photo with the strokes | first fit | after the refinement.", ""]
    lines += acceptance(results)
    return "\n".join(lines) + "\n"


def acceptance(results: dict) -> list:
    lines = ["## Acceptance (issue 16)", ""]
    bsd = [r for r in results["photos"] if r["source"].startswith("BSD500")]
    if bsd:
        ok = all(r["ratio"] <= 0.1 for r in bsd)
        ratios = ", ".join(f"{r['name']} 1/{1 / r['ratio']:.0f}" for r in bsd)
        lines.append(
            f"- BSD500 photos, engine time <= 1/10 of demo.py at its defaults: {'met' if ok else 'NOT met'} ({ratios})."
        )
    if results["mni"]:
        mni = results["mni"]
        means = {m: float(np.mean([r[m]["dice"]["mean"] for r in mni])) for m in ("engine", "kmeans", "gmm", "otsu")}
        best = max(("kmeans", "gmm", "otsu"), key=means.get)
        lines.append(
            f"- MNI152 axial slices, mean Dice >= best classical: "
            f"{'met' if means['engine'] >= means[best] else 'NOT met'} "
            f"(engine {means['engine']:.3f}, {best} {means[best]:.3f})."
        )
    for r in results["scribbles"]:
        present = all(r["present_first"].values()) and all(r["present_refined"].values())
        ok = present and r["refine_fraction"] <= 0.15
        lines.append(
            f"- VOC {r['name']}: every scribbled class present, refinement <= 15 % of the first fit: "
            f"{'met' if ok else 'NOT met'} ({100 * r['refine_fraction']:.1f} %)."
        )
    return lines


def fmt_load(load) -> str:
    return ", ".join(f"{v:.1f}" for v in load)


def engine_config(pairs) -> dict:
    config = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refcode", type=Path, help="scratch copy of kanezaki/pytorch-unsupervised-segmentation-tip")
    parser.add_argument("--ref-iters", type=int, default=100, help="demo.py iterations run here (default 100)")
    parser.add_argument(
        "--ref-labels",
        type=Path,
        help="folder of <photo>/output.png (+ log.txt) of longer demo.py "
        "runs, compared with the engine (ARI, overlay) instead of this run's short one",
    )
    parser.add_argument("--sections", default="photos,mni,scribbles")
    parser.add_argument("--voc", type=lambda s: s.split(","), default=list(VOC_DEFAULT), help="VOC photo names")
    parser.add_argument("--mni-mm", type=int, default=1, choices=(1, 2), help="MNI152 resolution (default 1 mm)")
    parser.add_argument("--photos", type=lambda s: s.split(","), help="photo names (default: all)")
    parser.add_argument("--engine-config", nargs="*", metavar="KEY=VALUE", help="SegmentationConfig overrides")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per engine or reference run")
    parser.add_argument("--quick", action="store_true", help="smoke run into a temporary folder")
    parser.add_argument("--out", type=Path, help="output folder (default: benchmarks/, quick: a temporary one)")
    parser.add_argument("--note", help="printed in RESULTS_2D.md")
    parser.add_argument("--report", type=Path, metavar="JSON", help="only rewrite RESULTS_2D.md from a results_2d.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.report:
        args.report.with_name("RESULTS_2D.md").write_text(report(json.loads(args.report.read_text())))
        return 0
    sections = args.sections.split(",")
    if {"photos", "scribbles"} & set(sections) and (args.refcode is None or not (args.refcode / "demo.py").is_file()):
        parser.error("--refcode must name a copy of the reference repository (holding demo.py)")
    args.engine_config = engine_config(args.engine_config)
    if args.quick:
        args.ref_iters = min(args.ref_iters, 3)
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench2d-")) if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE.parent / "src"))
    results = {
        "command": "python benchmarks/bench2d.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": machine(args.threads),
        "ref_iters": args.ref_iters,
        "mni_mm": 2 if args.quick else args.mni_mm,
        "note": args.note,
        "photos": [],
        "mni": [],
        "scribbles": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench2d-work-") as tmp:
        work = Path(tmp)
        run = {"photos": bench_photos, "mni": bench_mni, "scribbles": bench_scribbles}
        for section in sections:  # in the order given
            results[section] = run[section](args, work, out)
    results["machine"]["load_end"] = os.getloadavg()
    (out / "results_2d.json").write_text(json.dumps(results, indent=1, default=_plain) + "\n")
    (out / "RESULTS_2D.md").write_text(report(results))
    print(f"wrote {out / 'RESULTS_2D.md'}")
    return 0


def _plain(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


if __name__ == "__main__":
    sys.exit(main())
