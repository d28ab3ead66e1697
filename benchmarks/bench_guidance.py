"""Prototype classifier guidance accuracy vs w, and ``--like`` similarity, on EBHI-Seg (CPU-sized).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_guidance.py --out bench_out/guidance \
        [--like-model bench_out/guidance/like_ebhi]

1. Histology-encoder embeddings of the train tiles -> k-means (``--prototypes`` clusters, scikit-learn)
   -> a prototype table ``prototypes.h5ad`` (the layout ``histosynth prototypes`` writes).
2. The latent prototype classifier is trained on the shipped model's train latents
   (``configs/ebhi_prototype_classifier.yaml``); its accuracy on val latents noised to step t.
3. Guidance accuracy: for each w, ``--per`` unconditional tiles (null class, no mask) guided towards
   each of ``--eval-prototypes`` prototypes, the same seeds for every w; a tile counts when its
   embedding's nearest centroid is the requested prototype. w = 0 is the unguided base rate.
4. ``--like`` (with a like-model folder): for ``--refs`` val tiles (never trained on), ``--like-n`` tiles
   per like weight; cosine similarity of their embeddings to the reference, vs random real train tiles
   and vs the unconditional samples (like weight 0), and how often a tile's most similar reference
   is its own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from histosynth.data.manifest import load_manifest  # noqa: E402
from histosynth.encoders.registry import get_encoder  # noqa: E402
from histosynth.models.pipeline import LatentDiffusionModel  # noqa: E402
from histosynth.sampling.sampler import SamplingSettings, TileSampler  # noqa: E402
from histosynth.training.tensors import load_tile_tensors  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ebhi-seg" / "manifest.csv"
ROOT = Path(__file__).resolve().parents[1]


def _hwc(images: torch.Tensor) -> list[np.ndarray]:
    return list(images.permute(0, 2, 3, 1).numpy())


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def prototypes(args, train, encoder, out: Path):
    from sklearn.cluster import KMeans

    from histosynth.embeddings.prototypes import write_prototype_table

    cache = out / "train_embeddings.npy"
    if cache.is_file() and len(np.load(cache)) == len(train[1]):
        emb = np.load(cache)
    else:
        emb = encoder.encode(_hwc(train[1].images))
        np.save(cache, emb)
    kmeans = KMeans(args.prototypes, n_init=10, random_state=0).fit(emb)
    names = [f"ebhi/{k}" for k in range(args.prototypes)]
    table = out / "prototypes.h5ad"
    write_prototype_table(table, [str(r.image.resolve()) for r in train[0].records], kmeans.labels_, names,
                          kmeans.cluster_centers_, emb, encoder.identity)
    return table, emb, kmeans


def classifier(args, table_path: Path, model: LatentDiffusionModel, train, out: Path) -> tuple[Path, dict]:
    from histosynth.models.prototype_classifier import PrototypeClassifierConfig
    from histosynth.embeddings.prototypes import read_prototype_table
    from histosynth.training.prototypes import PrototypeLossConfig, train_prototype_classifier
    from histosynth.training.recipe_config import load_recipe

    table = read_prototype_table(table_path)
    den = model.denoiser.config
    train_config, classifier_config, loss_config = load_recipe(
        ROOT / "configs" / "ebhi_prototype_classifier.yaml", PrototypeClassifierConfig, PrototypeLossConfig,
        model_defaults={"latent_channels": den.latent_channels, "latent_size": den.latent_size,
                        "num_prototypes": table.num_prototypes},
        train_overrides={"steps": args.classifier_steps} if args.classifier_steps else None)
    folder = out / "classifier"
    run = folder / "runs" / "prototype-classifier"
    if not (run / "inputs.safetensors").exists() and args.latents:
        # Latents of the same train tiles (same order) by the shipped autoencoder, e.g. the like run's
        # runs/like/inputs.safetensors: skips ~0.2 s of encoding per tile on one CPU thread.
        from safetensors.torch import load_file, save_file

        cached = load_file(args.latents)
        run.mkdir(parents=True, exist_ok=True)
        save_file({"mean": cached["mean"], "logvar": cached["logvar"]}, str(run / "inputs.safetensors"))
    result = train_prototype_classifier(table, train[1], folder, model, classifier_config, train_config, loss_config)
    return folder, {"steps": result.steps, "items_per_second": round(result.items_per_second, 1),
                    "seconds": round(result.seconds, 1), "resumed_from": result.resumed_from}


@torch.no_grad()
def classifier_accuracy(clf, model: LatentDiffusionModel, val_images: torch.Tensor, val_ids: np.ndarray) -> dict:
    from diffusers import DDPMScheduler

    from histosynth.training.latents import encode_dihedral

    ae, den = model.autoencoder_config, model.denoiser.config
    mean, _ = encode_dihedral(model.autoencoder, val_images, variants=1)
    z = ae.scale(mean[:, 0].float())
    scheduler = DDPMScheduler(num_train_timesteps=den.num_train_timesteps, beta_schedule=den.beta_schedule)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    result = {}
    for t in (0, 200, 400, 600, 800, 950):
        steps = torch.full((len(z),), t)
        logits = clf(scheduler.add_noise(z, noise, steps), steps)
        result[t] = round(float((logits.argmax(1).numpy() == val_ids).mean()), 3)
    return result


def guidance_accuracy(args, model, clf, encoder, centroids, chosen: list[int]) -> dict:
    from histosynth.embeddings.prototypes import nearest_prototype

    null = model.denoiser.config.null_label
    results = {}
    for w in args.weights:
        sampler = TileSampler(model, SamplingSettings(steps=args.steps, guidance=1.0, batch_size=args.per,
                                                      prototype_guidance=w), classifier=clf)
        began, hits, per_proto = time.perf_counter(), 0, {}
        for p in chosen:
            seeds = [1000 + i for i in range(args.per)]
            images = sampler.sample([null] * args.per, [None] * args.per, seeds, prototypes=[p] * args.per)
            found = nearest_prototype(encoder.encode(list(images)), centroids)
            per_proto[p] = round(float((found == p).mean()), 3)
            hits += int((found == p).sum())
        results[w] = {"accuracy": round(hits / (args.per * len(chosen)), 3), "per_prototype": per_proto,
                      "seconds": round(time.perf_counter() - began, 1)}
        print(f"w={w}: accuracy {results[w]['accuracy']} {per_proto} ({results[w]['seconds']} s)", flush=True)
    return results


@torch.no_grad()
def embedding_use(model: LatentDiffusionModel, val, val_emb: np.ndarray) -> dict:
    """Val v-prediction loss with each tile's own embedding, another tile's (shuffled) and the null one
    (null class, no mask; fixed noise and steps): the gaps say how much the denoiser uses the embedding."""
    from diffusers import DDPMScheduler

    from histosynth.training.latents import encode_dihedral

    ae, den = model.autoencoder_config, model.denoiser.config
    mean, _ = encode_dihedral(model.autoencoder, val.images, variants=1)
    z = ae.scale(mean[:, 0].float())
    scheduler = DDPMScheduler(num_train_timesteps=den.num_train_timesteps, beta_schedule=den.beta_schedule,
                              prediction_type=den.prediction_type)
    g = torch.Generator().manual_seed(0)
    noise, t = torch.randn(z.shape, generator=g), torch.randint(0, den.num_train_timesteps, (len(z),), generator=g)
    noisy, target = scheduler.add_noise(z, noise, t), scheduler.get_velocity(z, noise, t)
    labels, fractions = torch.full((len(z),), den.null_label), torch.zeros(len(z), den.num_mask_classes, *z.shape[2:])
    emb = torch.from_numpy(val_emb).float()
    shuffled = emb[torch.randperm(len(emb), generator=g)]
    losses = {}
    for name, e in (("own", emb), ("shuffled", shuffled), ("null", None)):
        out = torch.cat([model.denoiser(noisy[i:i + 32], t[i:i + 32], labels[i:i + 32], fractions[i:i + 32],
                                        None if e is None else e[i:i + 32]) for i in range(0, len(z), 32)])
        losses[name] = round(float((out - target).pow(2).mean()), 4)
    return losses


def like_similarity(args, like_dir: Path, encoder, val, train_emb: np.ndarray) -> dict:
    model = LatentDiffusionModel.load(like_dir)
    use = embedding_use(model, val, encoder.encode(_hwc(val.images)))
    print(f"val v-loss by embedding: {use}", flush=True)
    null = model.denoiser.config.null_label
    rng = np.random.default_rng(0)
    refs = rng.choice(len(val.ids), args.refs, replace=False)
    ref_emb = encoder.encode(_hwc(val.images[refs]))
    random_real = _cosine(ref_emb, train_emb[rng.choice(len(train_emb), 200, replace=False)]).mean(1)
    results = {"references": [val.ids[i] for i in refs], "real_random": round(float(random_real.mean()), 3),
               "val_loss_by_embedding": use}
    for w in args.like_weights:
        sampler = TileSampler(model, SamplingSettings(steps=args.steps, batch_size=args.like_n, like_weight=w))
        began, own, generated = time.perf_counter(), [], []
        for r in range(args.refs):
            seeds = [2000 + i for i in range(args.like_n)]
            images = sampler.sample([null] * args.like_n, [None] * args.like_n, seeds,
                                    embeddings=np.repeat(ref_emb[r:r + 1].astype(np.float32), args.like_n, 0))
            emb = encoder.encode(list(images))
            generated.append(emb)
            own.append(_cosine(emb, ref_emb[r:r + 1])[:, 0])
        sims = np.stack([_cosine(g, ref_emb) for g in generated])  # refs x n x refs
        retrieval = float(np.mean([(sims[r].argmax(1) == r).mean() for r in range(args.refs)]))
        results[w] = {"cosine_to_reference": round(float(np.mean(own)), 3), "own_reference_top1": round(retrieval, 3),
                      "seconds": round(time.perf_counter() - began, 1)}
        print(f"like weight {w}: {results[w]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--out", default="bench_out/guidance")
    parser.add_argument("--prototypes", type=int, default=8)
    parser.add_argument("--eval-prototypes", type=int, default=4, help="Prototypes sampled (spread over the ids).")
    parser.add_argument("--weights", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 1.0, 3.0, 10.0])
    parser.add_argument("--per", type=int, default=6, help="Tiles per prototype and w.")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--classifier-steps", type=int, default=None)
    parser.add_argument("--like-model", default=None)
    parser.add_argument("--like-weights", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 1.0, 2.0])
    parser.add_argument("--refs", type=int, default=6)
    parser.add_argument("--like-n", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default="prototypes,like", help="prototypes and/or like")
    parser.add_argument("--latents", default=None, help="inputs.safetensors with the train tiles' latents to reuse.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not Path(args.data).is_file():
        sys.exit(f"EBHI-Seg manifest not found: {args.data}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from histosynth.models.prototype_classifier import PrototypeClassifier
    from histosynth.embeddings.prototypes import nearest_prototype
    from histosynth.weights import default_model_dir

    began = time.perf_counter()
    model = LatentDiffusionModel.load(default_model_dir())
    manifest = load_manifest(args.data, model.classes)
    train_m, val_m = manifest.select_split("train"), manifest.select_split("val")
    train = (train_m, load_tile_tensors(train_m, model.autoencoder_config.tile_size))
    val = load_tile_tensors(val_m, model.autoencoder_config.tile_size)
    encoder = get_encoder("histology")
    table, train_emb, kmeans = prototypes(args, train, encoder, out)
    previous = out / "results.json"
    results = json.loads(previous.read_text()) if previous.is_file() else {}
    results["machine"] = machine()
    if "prototypes" in args.parts:
        sizes = np.bincount(kmeans.labels_, minlength=args.prototypes).tolist()
        print(f"k-means: {args.prototypes} prototypes, sizes {sizes}", flush=True)
        folder, training = classifier(args, table, model, train, out)
        clf = PrototypeClassifier.load(folder)
        val_ids = nearest_prototype(encoder.encode(_hwc(val.images)), kmeans.cluster_centers_)
        accuracy_t = classifier_accuracy(clf, model, val.images, val_ids)
        print(f"classifier: {training}; val accuracy by t {accuracy_t}", flush=True)
        chosen = np.linspace(0, args.prototypes - 1, args.eval_prototypes).round().astype(int).tolist()
        guided = guidance_accuracy(args, model, clf, encoder, kmeans.cluster_centers_, chosen)
        results.update({"prototypes": args.prototypes, "sizes": sizes, "classifier": training,
                        "classifier_val_accuracy_by_t": accuracy_t, "evaluated_prototypes": chosen, "per": args.per,
                        "steps": args.steps, "guidance_accuracy": guided})
    if "like" in args.parts and args.like_model:
        results["like"] = like_similarity(args, Path(args.like_model), encoder, val, train_emb)
        results["like_steps"] = args.steps
    results["wall_seconds_last_run"] = round(time.perf_counter() - began, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    shutil.copy(out / "results.json", out / f"results_{int(time.time())}.json")
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
