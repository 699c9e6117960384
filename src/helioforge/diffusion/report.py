"""Figures and HTML pages of the diffusion job (Ramunno et al. 2024, Table 1, Figs. 1, 4–8)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jinja2 import Template  # noqa: E402

from helioforge.io import atomic_path, write_text  # noqa: E402

__all__ = ["save_grid", "write_evaluation_html", "write_augmentation_html", "PAPER_TABLE1"]

#: Ramunno et al. (2024) Table 1, discrete-label model (ours: class condition) and X-ray model.
PAPER_TABLE1 = {
    "cluster_error": {"gt": 0.00197, "class": 0.1294, "flux": 1.5031},
    "cluster_distance": {"gt": 1.00104, "class": 0.9212, "flux": 0.9342},
    "cluster_std": {"gt": 0.99816, "class": 1.2107, "flux": 1.0976},
    "macro_f1_ratio": {"class": 0.70, "flux": 0.34},
    "real_macro_f1": 0.55,
}


def save_grid(images: np.ndarray, path: str | Path, *, title: str = "", cols: int | None = None) -> Path:
    """PNG grid of images (n, 1, N, N) in [-1, 1] on a fixed grey scale; written atomically."""
    n = len(images)
    cols = cols or min(8, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + (0.4 if title else 0)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images):
        ax.imshow(img[0], cmap="gray", vmin=-1, vmax=1, origin="lower")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, dict) and "mean" in v:
        return f"{v['mean']:.{nd}f} ± {v['std']:.{nd}f}"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.{nd}f}"
    return str(v)


EVAL_HTML = Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>helioforge diffusion evaluation</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee}td:first-child{text-align:left}img{max-width:100%}.note{color:#555;font-size:90%}</style></head><body>
<h1>Flare-class-conditioned diffusion: evaluation</h1>
<p>Model: <code>{{ m.model }}</code> ({{ m.condition }} condition, profile <b>{{ m.profile }}</b>).
AIA {{ m.data.wavelength }} Å ({{ m.data.units }}), labels from <b>{{ m.data.label_source }}</b>;
{{ m.data.n_train }} real training and {{ m.data.n_test }} held-out real test images (whole days held out).</p>
<p><b>Every generated number below was made by {{ m.generated.sampler_label }}</b>
({{ m.generated.nfe_per_image }} network evaluations per image, {{ '%.2f' % m.generated.seconds_per_image }} s per image),
over <b>{{ m.generated.repeats }}</b> independent sets of each kind: proportional sets of {{ m.generated.n_proportional }}
images (training class proportions; cluster metrics, Fréchet distance) and uniform sets of {{ m.generated.n_per_class }}
images per class (classifier scores). Paper: 10 sets of 1000 and 10 sets of 200 per class, DDPM with T = 1000. Values are
mean ± std over the sets.</p>
{% if m.generated.left_out %}<p class="note">Not generated (fewer than the minimum training images):
{{ m.generated.left_out | join(', ') }}.</p>{% endif %}

<h2>Data (Fig. 1)</h2>
{% if m.labels %}<p>{{ m.labels.images_read }} images read; {{ m.labels.labelled }} labelled —
<b>{{ m.labels.event_linked }}</b> linked to a flare peak by the paper's event rule (image ≤ 7 min after the peak),
{{ m.labels.flux_labelled or 0 }} by the GOES flux at the image time; {{ m.labels.unlabelled }} unlabelled.</p>
{% if m.labels.events %}<p class="note">Event list: {{ m.labels.events.listed }} events, {{ m.labels.events.used }} with a class
({{ m.labels.events.classless_filled }} of {{ m.labels.events.classless }} listed without one given the XRS-B flux ≤ 6 s after
the peak){% for why, n in m.labels.events.skipped.items() %}; {{ n }} skipped: {{ why }}{% endfor %}.</p>{% endif %}
{% if m.labels.skipped_by_reason %}<p class="note">Images skipped: {% for why, n in m.labels.skipped_by_reason.items() %}{{ n }} {{ why }}; {% endfor %}</p>{% endif %}
{% if m.labels.unlabelled_by_reason %}<p class="note">Images unlabelled: {% for why, n in m.labels.unlabelled_by_reason.items() %}{{ n }} {{ why }}; {% endfor %}</p>{% endif %}{% endif %}
<table><tr><th>split</th>{% for c in classes %}<th>{{ c }}</th>{% endfor %}</tr>
<tr><td>train</td>{% for c in classes %}<td>{{ m.data.train[c] }}</td>{% endfor %}</tr>
<tr><td>test</td>{% for c in classes %}<td>{{ m.data.test[c] }}</td>{% endfor %}</tr></table>
<img src="{{ m.figures.histogram }}" style="max-width:480px">

<h2>Table 1, beside the paper</h2>
<p class="note">Feature space: {{ m.feature_space.encoder }} ({{ m.feature_space.latent_dim }}-d). Cluster metrics:
k-means, k = {{ k }}, fitted on the real training features (definitions in docs/diffusion.md).
Yardsticks measured in this run: <b>GT</b>, random halves of the real training set; <b>held-out real</b>, the test images
(what a generator of new real-like images can reach at this size); <b>trivial generator</b>, {{ m.baseline.name }}
({{ m.baseline.description }}); for F1, <b>chance</b>: the same predictions against permuted labels.
The paper's values are in its ceVAE/DeiT spaces at 20,420 images: compare ours with our own yardsticks.</p>
<table><tr><th>metric</th><th>GT: real halves</th><th>held-out real</th><th>generated</th><th>trivial generator</th><th>paper GT</th><th>paper {{ 'discrete' if m.condition == 'class' else 'X-ray' }}</th></tr>
{% for key, label in [('cluster_error','cluster error ↓'),('cluster_distance','cluster distance'),('cluster_std','cluster std')] %}
<tr><td>{{ label }}</td><td>{{ fmt(m.cluster.gt_real_halves[key]) }}</td><td>{{ fmt(m.cluster.real_test[key]) }}</td>
<td><b>{{ fmt(m.cluster.generated[key]) }}</b></td><td>{{ fmt(m.cluster.baseline[key]) }}</td><td>{{ paper[key].gt }}</td><td>{{ paper[key][m.condition] }}</td></tr>{% endfor %}
<tr><td>Fréchet distance (domain features) ↓</td><td>–</td><td>{{ fmt(m.frechet.real_test_vs_train) }}</td><td><b>{{ fmt(m.frechet.generated_vs_train) }}</b></td><td>{{ fmt(m.frechet.baseline_vs_train) }}</td><td>–</td><td>–</td></tr>
{% if m.inception_fid %}<tr><td>FID InceptionV3 ↓ (proportional sets)</td><td>–</td><td>{{ fmt(m.inception_fid.real_test_vs_train, 2) }}</td><td><b>{{ fmt(m.inception_fid.generated_vs_train, 2) }}</b></td><td>–</td><td>–</td><td>{{ 3.693 if m.condition == 'class' else 2.703 }}</td></tr>
{% else %}<tr><td>FID InceptionV3</td><td colspan="6" class="note">not computed: pass --inception-weights PATH (local TorchScript inception-2015-12-05.pt)</td></tr>{% endif %}
</table>
<p class="note">Classifier scores over the same classes on both sides of every ratio: <b>{{ m.classifier.classes | join(', ') }}</b>
(the classes that are both generated and in the held-out real set).</p>
<table><tr><th>classifier score</th><th>real held-out</th><th>chance (real)</th><th>majority class ({{ m.classifier.majority_class }})</th><th>generated (uniform)</th><th>chance (generated)</th><th>trivial generator</th><th>paper real</th><th>paper generated / ratio</th></tr>
{% for key, label, pr, pg in [('macro_f1','macro F1', 0.55, 0.38),('macro_precision','macro precision', 0.57, None),('macro_recall','macro recall', 0.54, None)] %}
<tr><td>{{ label }}</td><td>{{ fmt(m.classifier.real_test[key]) }}</td><td>{{ fmt(m.classifier.real_test_chance[key]) }}</td>
<td>{{ fmt(m.classifier.real_test_majority[key]) }}</td><td><b>{{ fmt(m.classifier.generated_uniform[key]) }}</b></td>
<td>{{ fmt(m.classifier.generated_chance[key]) }}</td><td>{{ fmt(m.classifier.baseline_uniform[key]) }}</td><td>{{ pr }}</td><td>{{ pg if pg else '–' }}</td></tr>{% endfor %}
{% for key, label, pv in [('macro_f1','F1 ratio generated / real ↑', paper.macro_f1_ratio[m.condition]),('macro_precision','precision ratio', 0.73),('macro_recall','recall ratio', 0.74)] %}
<tr><td>{{ label }}</td><td colspan="3">–</td><td><b>{{ fmt(m.classifier.ratio[key]) }}</b></td><td>–</td><td>{{ fmt(m.classifier.baseline_ratio[key]) }}</td><td>–</td><td>{{ pv if m.condition == 'class' else '–' }}</td></tr>{% endfor %}
</table>

<h2>What this sample allows one to conclude</h2>
<ul>{% for key, text in m.conclusions.items() %}<li>{{ text }}</li>{% endfor %}</ul>

<h2>Per class (App. D)</h2>
<table><tr><th>class</th><th>real test support</th><th>real F1</th><th>generated F1</th><th>paper real F1</th><th>paper generated F1</th><th>brightness index real</th><th>brightness index generated</th></tr>
{% for c in classes %}<tr><td>{{ c }}</td><td>{{ m.classifier.real_test.per_class[c].support }}</td><td>{{ fmt(m.classifier.real_test.per_class[c].f1) }}</td>
<td>{{ fmt(m.classifier.generated_uniform.per_class_f1[c]) if c in m.classifier.generated_uniform.per_class_f1 else '–' }}</td>
<td>{{ paper_d1[c] }}</td><td>{{ paper_d2[c] }}</td>
<td>{{ fmt(m.brightness_index[c].real_mean) }}</td><td>{{ fmt(m.brightness_index[c].generated_mean) }}</td></tr>{% endfor %}
</table>
<p class="note">Brightness index: mean over images of the 99.5th percentile of the scaled intensity, a proxy of
active-region and flare brightness; a guided model should order it with the class as the real images do.</p>

<h2>Standard-deviation maps (Fig. 4)</h2><img src="{{ m.figures.std_maps }}">
<h2>Generated images per class (Fig. 5)</h2><img src="{{ m.figures.samples }}">
<h2>Real images per class</h2><img src="{{ m.figures.real }}">
<p class="note">Training times (s): {{ m.training_s }}; evaluation {{ m.evaluate_s }} s.</p>
</body></html>
""")

#: Ramunno et al. (2024) App. D: per-class F1 of the classifier on real data (Table D.1) and on
#: images of the discrete-label model (Table D.2).
PAPER_D1_F1 = {"A": 0.80, "B": 0.26, "C": 0.55, "M": 0.70, "X": 0.42}
PAPER_D2_F1 = {"A": 0.77, "B": 0.24, "C": 0.28, "M": 0.37, "X": 0.26}


def write_evaluation_html(report_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """Render ``index.html`` of an evaluation from its metrics dictionary."""
    from helioforge.data.goes import FLARE_CLASSES

    text = EVAL_HTML.render(m=metrics, classes=FLARE_CLASSES, paper=PAPER_TABLE1, fmt=_fmt, paper_d1=PAPER_D1_F1,
                            paper_d2=PAPER_D2_F1,
                            k=metrics["cluster"]["gt_real_halves"].get("k", 5))
    return write_text(Path(report_dir) / "index.html", text)


AUG_HTML = Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>helioforge augmentation experiment</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}img{max-width:100%}.note{color:#555}</style></head><body>
<h1>Augmentation experiment (paper §8.1, Figs. 6–8)</h1>
<p>A flare-class classifier is trained on the real training images with nothing added, with classical augmentations
(flips, rotations, affine) of real minority-class images, or with images generated by the {{ r.condition }}-conditioned
diffusion model, {{ r.additions | join('/') }} images per minority class ({{ r.minority_classes | join(', ') }}),
{{ r.repeats }} repeats each; accuracy = recall of the class on the same held-out real test set.</p>
{% if not r.paper_scale %}<p class="note"><b>CPU run:</b> fewer added images ({{ r.additions | join('/') }} instead of the
paper's 200/400/600) and {{ r.classifier_epochs }} classifier epochs, so that it runs in minutes on a laptop.</p>{% endif %}
{% if r.dropped_classes %}<p class="note">Minority classes left out (no training images, the model cannot generate them):
{{ r.dropped_classes | join(', ') }}.</p>{% endif %}
{% for n in r.notes %}<p class="note">{{ n }}</p>{% endfor %}
<p>Real training images per class: {{ r.train_counts }}; test: {{ r.test_counts }}. Generated images by
{{ r.sampler_label }}. Every arm trains the same classifier with the same loss — {{ r.loss_weights_text }} — and
no random flips, so arms differ only by the added images.</p>
<h2>Recall per class, mean ± std over {{ r.repeats }} repeats</h2>
<table><tr><th>method</th><th>added per class</th>{% for c in r.pivot_classes %}<th>{{ c }}{% if c in r.minority_classes %} *{% endif %}</th>{% endfor %}<th>macro F1</th></tr>
{% for row in r.pivot %}<tr><td>{{ row.method }}</td><td>{{ row.n_added }}</td>{% for c in r.pivot_classes %}<td>{{ row[c] }}</td>{% endfor %}<td>{{ row.macro_f1 }}</td></tr>{% endfor %}
</table><p class="note">* receives the added images. Test images per class: {{ r.test_counts }}.</p>
{% for text in r.conclusions %}<p>{{ text }}</p>{% endfor %}
<h2>All rows</h2>
<table><tr>{% for k in cols %}<th>{{ k }}</th>{% endfor %}</tr>
{% for row in r.summary %}<tr>{% for k in cols %}<td>{{ fmt(row[k]) }}</td>{% endfor %}</tr>{% endfor %}</table>
{% for f in r.figures %}<p><img src="{{ f }}"></p>{% endfor %}
<p class="note">Run time {{ r.seconds }} s.</p>
</body></html>
""")


def write_augmentation_html(report_dir: str | Path, result: dict[str, Any]) -> Path:
    """Render ``augmentation.html`` from the experiment's result dictionary."""
    cols = list(result["summary"][0].keys()) if result["summary"] else []
    return write_text(Path(report_dir) / "augmentation.html", AUG_HTML.render(r=result, cols=cols, fmt=_fmt))
