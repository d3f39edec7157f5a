"""The classifier scorer: features of the small digit CNN that sit trains on the real data
(``sit.evaluate.classifier``; cached, sha256-verified). Classifier FD, precision / recall and the
share of samples classified as their label; comparable only between runs with the same
classifier (same real data and seed), never with Inception FIDs.

``ClassifierScorer(real_x, real_y)`` scores float samples (N, 1, H, W) in [-1, 1] with
``score_images`` (the numbers of ``quick_quality``); ``evaluate_dataset`` is ``sit eval``'s
classifier part for a sample set against an embedded dataset.
"""

from __future__ import annotations

from sit.evaluate.scorer import Scores


class ClassifierScorer:
    name = "classifier"
    fd_key = "features"

    def __init__(self, real_x, real_y, *, seed: int = 0, cache_dir=None, progress: bool = False):
        self.real_x, self.real_y, self.seed = real_x, real_y, seed
        self.cache_dir, self.progress = cache_dir, progress

    def identity(self) -> str:
        from sit.evaluate.classifier import ARCH_VERSION, _data_hash

        return f"{ARCH_VERSION}|{_data_hash(self.real_x, self.real_y, self.seed)}"

    def score_images(self, fake_x, fake_y=None) -> Scores:
        """Scores of samples ``fake_x`` (N, C, H, W) in [-1, 1] generated for labels ``fake_y``
        (None: unconditional, no accuracy) against the real set."""
        from sit.evaluate.classifier import quick_quality

        q = quick_quality(self.real_x, self.real_y, fake_x, fake_y, seed=self.seed, cache_dir=self.cache_dir,
                          progress=self.progress)
        return Scores("classifier", fd=q["fid"], precision=q["precision"], recall=q["recall"], accuracy=q["accuracy"],
                      num_real=q["num_real"], num_fake=q["num_fake"],
                      extra={"classifier_test_accuracy": q["classifier_test_accuracy"]})


def evaluate_dataset(dataset: str, sample_set, *, seed: int = 0, fit: str | None = None, log=print,
                        progress: bool = False) -> dict:
    """Classifier-space metrics (``sit.evaluate.classifier.quick_quality``) of the samples against
    an embedded dataset at the samples' resolution; labels from the samples' ``arr_1``."""
    import torch

    from sit.data.embedded import load_embedded
    from sit.evaluate.classifier import FEATURE_DIM, quick_quality
    from sit.evaluate.metrics import RECOMMENDED_CLASSIFIER_SAMPLES, fid_sample_note

    imgs = sample_set.images  # uint8 (N, H, W, C)
    if imgs.shape[1] != imgs.shape[2]:
        raise ValueError(f"classifier metrics need square samples; got {imgs.shape[1]}x{imgs.shape[2]}")
    fake_x = torch.from_numpy(imgs[..., :1].copy()).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # bin centres of sit's uint8
    real_x, real_y = load_embedded(dataset, "all", image_size=imgs.shape[1], fit=fit)
    fake_y, why = None, None
    if sample_set.labels is None:
        why = "the sample set has no labels (arr_1)"
    elif len(sample_set.labels) != len(imgs):
        why = f"the sample set has {len(sample_set.labels)} labels for {len(imgs)} images"
    else:
        fake_y = torch.as_tensor(sample_set.labels).long()
        lo, hi = int(fake_y.min()), int(fake_y.max())
        if lo < 0 or hi >= 10:  # e.g. the null label 10 of unconditional samples
            why = f"labels span {lo}..{hi}, outside the classifier's classes 0..9 (unconditional samples carry the null label 10)"
            fake_y = None
    n = min(len(imgs), len(real_x))
    note = fid_sample_note(n, FEATURE_DIM, recommended=RECOMMENDED_CLASSIFIER_SAMPLES, name="classifier FID")
    if note:
        log(f"warning: {note}")
    q = quick_quality(real_x, real_y, fake_x, fake_y, seed=seed, progress=progress)
    out = {f"clf_{k}" if k in ("accuracy", "fid", "precision", "recall") else k: v for k, v in q.items()}
    notes = ({"clf_fid_note": note} if note else {}) | ({"clf_accuracy_note": f"accuracy n/a: {why}"} if why else {})
    return out | {"classifier_dataset": dataset} | notes




def evaluate(request) -> dict:
    """`sit eval`'s classifier part (the ``SCORERS`` row's ``evaluate``): ``evaluate_dataset``
    against ``request.classifier_dataset``."""
    if request.classifier_dataset is None:
        from sit.config import ConfigError

        raise ConfigError("EvalRequest", "classifier_dataset", "is needed by {metrics} classifier (or REF = digits | "
                          "mnist_5k): the classifier compares the samples with an embedded dataset")
    return evaluate_dataset(request.classifier_dataset, request.sample_set, seed=request.seed, fit=request.fit,
                            log=request.log, progress=request.progress)
