"""``histosynth report``: one self-contained HTML page auditing a synthetic dataset folder.

Reads what the audit commands wrote to ``DIR/audit/`` (fidelity, privacy, downstream JSON) and the
tiles themselves; images are embedded as base64 PNG thumbnails, charts as inline SVG, so the file
can be mailed or archived alone. Sections whose audit has not been run say so and how to run it.
The overall verdict at the top comes from ``evaluation/verdict.py`` (C2ST and precision/recall
against the real floor, never FID alone).
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from html import escape
from pathlib import Path

import numpy as np

from histosynth.data.images import read_mask, read_rgb
from histosynth.data.manifest import TileManifest, load_manifest
from histosynth.evaluation.audit import load_synthetic
from histosynth.evaluation.downstream_summary import cell_name, size_series
from histosynth.evaluation.verdict import fidelity_verdict
from histosynth.io import atomic_open
from histosynth.report.contact_sheet import outline
from histosynth.report.svg import line_chart, scatter_chart

THUMB = 128
STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}img{margin:2px;border:1px solid #ddd}
.row{display:flex;flex-wrap:wrap;align-items:center;gap:4px}.note{color:#666;font-size:13px}
.label{width:150px;font-weight:600}.flag{color:#b00;font-weight:600}
.verdict{padding:8px 12px;border-left:6px solid #999;background:#f6f6f6}.verdict ul{margin:4px 0}
.pass{border-color:#2a7}.warn{border-color:#d90}.fail{border-color:#b00}"""


def _thumb(image: np.ndarray, size: int = THUMB) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).resize((size, size), Image.BILINEAR).save(buffer, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}" width="{size}" height="{size}">'


def _tile(record, classes, with_mask: bool = True) -> str:
    image = read_rgb(record.image)
    if with_mask and record.mask is not None:
        image = outline(image, read_mask(record.mask, classes))
    return _thumb(image)


def _by_label(manifest: TileManifest, per_label: int, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    groups: dict[str, list] = {}
    for record in manifest.records:
        groups.setdefault(record.label or "(unlabelled)", []).append(record)
    return {label: [items[i] for i in sorted(rng.choice(len(items), min(per_label, len(items)), replace=False))]
            for label, items in groups.items()}


def _metric_table(fidelity: dict) -> str:
    blocks = [("synthetic vs held-out", fidelity["synthetic_vs_heldout"]),
              (f"floor: train ({fidelity['n_train']}) vs held-out", fidelity["train_vs_heldout"]),
              (f"floor: train ({fidelity['n_synthetic']}) vs held-out", fidelity["train_subset_vs_heldout"])]
    head = "".join(f"<th>{escape(name)}</th>" for name, _ in blocks)
    rows = "".join(f"<tr><td>{escape(key)}</td>" + "".join(f"<td>{values[key]:.4g}</td>" for _, values in blocks) + "</tr>"
                   for key in blocks[0][1])
    return (f"<p>Encoder <code>{escape(fidelity['encoder'])}</code>; held-out split "
            f"<code>{escape(fidelity['heldout_split'])}</code> ({fidelity['n_heldout']} tiles). Lower FID/KID and "
            "precision/recall/density/coverage near the floors mean closer to real; FID/KID can sit near the floor "
            "for tiles that are obviously fake to the eye, so the verdict does not use them.</p>"
            f"<table><tr><th>metric</th>{head}</tr>{rows}</table>" + _c2st_table(fidelity))


def _c2st_table(fidelity: dict) -> str:
    """Classifier two-sample test rows (synthetic vs held-out, and the real floor when it was run)."""
    runs = [(name, fidelity.get(key)) for name, key in (("synthetic vs held-out", "c2st"),
                                                         ("floor: train vs held-out", "c2st_floor"))]
    runs = [(name, run) for name, run in runs if run]
    if not runs:
        return ("<p class=note>Classifier two-sample test not run (skipped with <code>--no-c2st</code>, or an "
                "older audit): rerun <code>histosynth evaluate fidelity</code> without that option.</p>")
    rows = "".join(f"<tr><td>{escape(name)}</td><td>{run['accuracy']:.3f}</td><td>{run['ci_low']:.3f} – "
                   f"{run['ci_high']:.3f}</td><td>{run['n_heldout']}</td><td>{run['p_value']:.2g}</td>"
                   f"<td>{run['real_accuracy']:.3f} / {run['synthetic_accuracy']:.3f}</td></tr>" for name, run in runs)
    first = runs[0][1]
    return ("<h3>Classifier two-sample test</h3><p>A small CNN trained on the pixels "
            f"({first['size']} px, {first['steps']} steps, seed {first['seed']}) to tell the two sets apart, "
            "scored on tiles it never saw. Accuracy 0.5 = indistinguishable, 1 = told apart every time; "
            "p tests accuracy &gt; 0.5 (exact binomial).</p><table><tr><th>sets</th><th>held-out accuracy</th>"
            "<th>95% CI (Wilson)</th><th>n held-out</th><th>p</th><th>per side (real / other)</th></tr>"
            f"{rows}</table>")


def _verdict_section(fidelity: dict | None) -> str:
    if fidelity is None:
        return ("<div class=\"verdict\"><b>No verdict</b>: the fidelity audit has not been run "
                "(<code>histosynth evaluate fidelity --real MANIFEST --synthetic DIR</code>).</div>")
    verdict = fidelity_verdict(fidelity)
    reasons = "".join(f"<li>{escape(reason)}</li>" for reason in verdict.reasons)
    return (f"<div class=\"verdict {verdict.level}\"><b>Verdict: {escape(verdict.level)}</b>: "
            f"{escape(verdict.headline)}<ul>{reasons}</ul><span class=note>From the classifier two-sample test "
            "and precision/recall against the real floor; FID is not used.</span></div>")


def _privacy_section(privacy: dict, synth: TileManifest, train: TileManifest, gallery: int) -> str:
    by_id_s = {r.id: r for r in synth.records}
    by_id_t = {r.id: r for r in train.records}
    facts = (f"<table><tr><th>measure</th><th>value</th><th>reading</th></tr>"
             f"<tr><td>authenticity</td><td>{privacy['authenticity']:.3f}</td><td>held-out real tiles score "
             f"{privacy['authenticity_heldout']:.3f}; far below that means tiles hug training points</td></tr>"
             f"<tr><td>C_T (data copying)</td><td>{privacy['ct_score']:.2f}</td><td>{privacy['ct_cells_used']} of "
             f"{privacy['ct_cells']} cells used; strongly negative = copying, ~0 = like new real data, positive = "
             "farther than real data</td></tr>"
             f"<tr><td>near copies</td><td class=\"{'flag' if privacy['near_copies'] else ''}\">{privacy['near_copies']} of "
             f"{privacy['n_synthetic']}</td><td>closer to a training tile than {privacy['near_copy_threshold']:.4g} "
             f"(the {privacy['near_copy_quantile']:g} quantile of held-out tiles' distances)</td></tr></table>")
    closest = sorted(privacy["neighbours"], key=lambda row: row["distances"][0])[:gallery]
    rows = []
    for row in closest:
        cells = [_tile(by_id_s[row["id"]], synth.classes, False)]
        cells += [_tile(by_id_t[t], train.classes, False) for t in row["train_ids"]]
        cells.append(_tile(by_id_t[row["pixel_train_ids"][0]], train.classes, False))
        flag = ' <span class="flag">near copy</span>' if row["near_copy"] else ""
        rows.append(f'<div class="row"><div class="label">{escape(row["id"])}{flag}<br><span class="note">feature d '
                    f'{", ".join(f"{d:.3g}" for d in row["distances"])}; pixel RMS {row["pixel_rms"][0]:.3g}</span></div>'
                    f'{"".join(cells)}</div>')
    return (facts + f"<p class=\"note\">Gallery: the {len(closest)} synthetic tiles closest to the training set; "
            "each row shows the synthetic tile, its nearest training tiles in feature space, then its nearest "
            "training tile in pixel space (any flip or rotation).</p>" + "".join(rows))


def _projection(cache_dir: Path | None, fidelity: dict | None, real: TileManifest, synth: TileManifest) -> str:
    if fidelity is None or cache_dir is None:
        return ""
    from histosynth.io import VectorCache, file_digest

    vectors = VectorCache(cache_dir, fidelity["encoder"]).vectors
    groups = {}
    for name, manifest in (("real held-out", real.select_split(fidelity["heldout_split"])), ("synthetic", synth)):
        keys = [file_digest(r.image) for r in manifest.records]
        groups[name] = np.stack([vectors[k] for k in keys if k in vectors]) if any(k in vectors for k in keys) else None
    if any(v is None for v in groups.values()):
        return ""
    from sklearn.decomposition import PCA

    both = np.concatenate(list(groups.values()))
    xy = PCA(n_components=2, random_state=0).fit(both).transform(both)
    n_real = len(groups["real held-out"])
    chart = scatter_chart({"real held-out": [tuple(p) for p in xy[:n_real]], "synthetic": [tuple(p) for p in xy[n_real:]]})
    return f"<h2>Feature space (PCA of {escape(fidelity['encoder'])} features)</h2>{chart}"


def _downstream_section(result: dict) -> str:
    """Score vs training-set size and the table of cells; reads summaries with and without arms (older files)."""
    summary = result["summary"]
    task = result["config"]["task"]
    metric = "Dice" if task == "segmentation" else "balanced accuracy"
    picked = "weights after the last step" if result["config"].get("checkpoint") == "last" else "weights selected on val"

    def gain(row: dict) -> str:
        if row.get("gain_mean") is None:
            return ""
        return f"{row['gain_mean']:+.3f} ± {row['gain_sd']:.3f} ({row['seeds_gained']}/{row['gain_seeds']} gained)"

    rows = "".join(f"<tr><td>{row['fraction']:g}</td><td>{escape(cell_name(row))}</td><td>{row['n_real']}</td>"
                   f"<td>{row['n_synthetic']}</td><td>{row.get('n_extra', 0)}</td>"
                   f"<td>{row['test_mean']:.3f} ± {row['test_sd']:.3f}</td><td>{gain(row)}</td>"
                   f"<td>{row['seeds']}</td></tr>" for row in summary)
    return (f"<h2>Downstream utility: {escape(task)}</h2><p>Test {metric} ({picked}) vs training-set size; "
            "each line starts at the real-only run of a fraction and adds synthetic (or extra real) tiles. Paired "
            "gain: each seed against its own real-only run.</p>"
            + line_chart(size_series(summary), "training tiles (real + added)", f"test {metric}")
            + "<table><tr><th>real fraction</th><th>arm</th><th>real</th><th>synthetic</th><th>extra real</th>"
            f"<th>test {metric}</th><th>paired gain</th><th>seeds</th></tr>{rows}</table>")


def write_report(synthetic: str | Path, real: str | Path, out: str | Path | None = None, per_label: int = 6,
                 gallery: int = 8, cache_dir: str | Path | None = None) -> Path:
    """Write the HTML report for ``synthetic`` (default ``synthetic/audit/report.html``)."""
    synthetic = Path(synthetic)
    real_manifest = load_manifest(real)
    synth = load_synthetic(synthetic)
    synth = TileManifest(synth.source, synth.records, real_manifest.classes)
    audit = synthetic / "audit"
    found = {p.stem: json.loads(p.read_text()) for p in sorted(audit.glob("*.json"))} if audit.is_dir() else {}
    fidelity = next((v for k, v in found.items() if k.startswith("fidelity_")), None)
    privacy = next((v for k, v in found.items() if k.startswith("privacy_")), None)
    downstream = [v for k, v in found.items() if k.startswith("downstream_")]

    counts = Counter(r.label or "(unlabelled)" for r in synth.records)
    provenance = Counter((r.extra.get("model", "?"), r.extra.get("sampler", "?"), r.extra.get("steps", "?"),
                          r.extra.get("guidance", "?")) for r in synth.records)
    parts = [f"<h1>Synthetic data audit: {escape(synthetic.name)}</h1>",
             f"<p>{len(synth.records)} synthetic tiles; real reference <code>{escape(str(real))}</code>.</p>",
             _verdict_section(fidelity),
             "<h2>Provenance</h2><table><tr><th>model</th><th>sampler</th><th>steps</th><th>guidance</th><th>tiles</th></tr>"
             + "".join(f"<tr><td>{escape(str(m))}</td><td>{escape(str(s))}</td><td>{escape(str(st))}</td>"
                       f"<td>{escape(str(g))}</td><td>{n}</td></tr>" for (m, s, st, g), n in provenance.items())
             + "</table><table><tr><th>label</th><th>tiles</th></tr>"
             + "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(counts.items())) + "</table>",
             "<h2>Real vs synthetic, per class (mask outlines in green)</h2>"]
    real_train = real_manifest.select_split("train")
    real_rows, synth_rows = _by_label(real_train, per_label), _by_label(synth, per_label)
    for label in sorted(synth_rows):
        parts.append(f'<div class="row"><div class="label">{escape(label)}<br><span class="note">real</span></div>'
                     + "".join(_tile(r, real_train.classes) for r in real_rows.get(label, [])) + "</div>")
        parts.append('<div class="row"><div class="label"><span class="note">synthetic</span></div>'
                     + "".join(_tile(r, synth.classes) for r in synth_rows[label]) + "</div>")
    parts.append("<h2>Fidelity</h2>" + (_metric_table(fidelity) if fidelity else
                 "<p class=note>Not run: <code>histosynth evaluate fidelity --real MANIFEST --synthetic DIR</code></p>"))
    parts.append(_projection(Path(cache_dir) if cache_dir else None, fidelity, real_manifest, synth))
    parts.append("<h2>Memorisation</h2>" + (_privacy_section(privacy, synth, real_train, gallery) if privacy else
                 "<p class=note>Not run: <code>histosynth evaluate privacy --train MANIFEST --synthetic DIR</code></p>"))
    parts.extend(_downstream_section(d) for d in downstream)
    if not downstream:
        parts.append("<h2>Downstream utility</h2><p class=note>Not run: <code>histosynth evaluate downstream "
                     "--real MANIFEST --synthetic DIR --task segmentation</code></p>")
    out = Path(out) if out else audit / "report.html"
    with atomic_open(out, "w", encoding="utf-8") as handle:
        handle.write(f"<!doctype html><html><head><meta charset='utf-8'><title>histosynth audit</title>"
                     f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    return out
