"""The one list of pipeline stages.

Both runners read this list: ``medflow pipeline`` (the embedded local runner) executes it,
and the Nextflow workflow (``main.nf``, ``modules/local/*/main.nf``, ``conf/modules.config``)
is held to it by tests. Keep it declarative: names, commands, inputs, outputs, published
paths and default arguments, no behaviour.

Paths are templates: ``{subject}`` is the samplesheet's subject ID, ``{role}`` an image role
(a samplesheet column such as ``sa`` or ``seg_sa``). Every per-subject file lands in
``results/<stage>/<subject>/`` and every cohort-level file in ``results/<stage>/``
(DESIGN.md, "Results layout").

Roles: the preprocess stage takes every image column of the samplesheet. The later stages
use the model's roles: ``image`` is the model card's first image role (``sa``), ``label``
its label role (``seg_sa``); with ``--train`` these are the train stage's defaults.

The model reads the samplesheet's images as acquired, not the preprocessed copies: it
resamples to its own spacing and normalises itself, and reorienting oblique short-axis
stacks to RAS puts the slice axis first for some subjects and second for others, which a
model would then see resampled across its in-plane axes. Preprocess runs first all the
same: it reads and checks every image, so a corrupt subject stops there, alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Where a stage's work is split: once per subject, or once for the whole cohort.
SUBJECT, COHORT = "subject", "cohort"

#: Roles the train stage learns from when the pipeline trains (``--train``).
TRAIN_IMAGE_ROLE, TRAIN_LABEL_ROLE = "sa", "seg_sa"
#: Samplesheet columns of the long-axis cine segmentations the motion stage reads.
LONG_AXIS_ROLES = ("seg_la_2ch", "seg_la_4ch")


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes:
        name: results folder (``results/<name>/``) and Nextflow process name in lower case.
        command: the ``medflow`` sub-command words, e.g. ``("segment-cascaded", "predict")``.
        scope: ``"subject"`` (one task per subject, run in parallel) or ``"cohort"``
            (one task after all subjects' earlier stages).
        inputs: what the stage reads: ``"samplesheet:<role>"`` a samplesheet column
            (``*``: every image column), ``"<stage>:<output>"`` an earlier stage's output,
            ``"model"`` the model folder (``--model``, or the train stage's output).
        outputs: output name -> file name template under the stage folder
            (per-subject names are relative to ``<stage>/<subject>/``).
        args: default flags (Nextflow ``ext.args``) per kind of input role,
            ``"image"`` or ``"label"``; a stage with one kind uses ``"image"``.
        device: ``"cpu"`` or ``"gpu"`` (GPU stages get ``--device cuda`` only when a GPU
            is there; every GPU stage also runs on CPU).
        resource_label: the Nextflow resource label (``conf/base.config``).
        table: the stage's Parquet table, relative to ``results/<name>/`` (None: none).
        needs: the samplesheet roles the stage needs to run for a subject at all
            (e.g. ground truth for scoring); subjects without them skip the stage.
        columns: cohort stages only: the samplesheet the stage's command reads
            (``--samplesheet <stage>/samplesheet.csv``), column -> ``"<stage>:<output>"``;
            ``{image}``/``{label}`` in a column name are the role names.
        only_with: the runner option that turns the stage on (``"train"``: only with
            ``--train``; ``"train_prior"``: only with ``--train-prior``; ``"prior"``: only
            with a shape prior, ``--superres-model`` or ``--train-prior``; ``"motion"``:
            only with ``--motion``); None: the stage always runs.
        optional: outputs and ``columns`` that only exist with a runner option, name ->
            the option (``"save_probabilities"``: only with ``--save-probabilities``).
    """

    name: str
    command: tuple[str, ...]
    scope: str
    inputs: tuple[str, ...]
    outputs: dict[str, str]
    args: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    resource_label: str = "process_low"
    table: str | None = None
    needs: tuple[str, ...] = ()
    columns: dict[str, str] = field(default_factory=dict)
    only_with: str | None = None
    optional: dict[str, str] = field(default_factory=dict)

    @property
    def process(self) -> str:
        """The Nextflow process name (``PREPROCESS``, ``SEGMENT``, ...)."""
        return self.name.upper()


STAGES: tuple[Stage, ...] = (
    Stage(
        name="preprocess",
        command=("preprocess",),
        scope=SUBJECT,
        inputs=("samplesheet:*",),
        outputs={"image": "{subject}_{role}_preproc.nii.gz",
                 "sidecar": "{subject}_{role}_preproc.json"},
        # Reorient only (no interpolation, intensities untouched): checked, standardised
        # copies; a tool that needs another grid resamples once, itself.
        args={"image": "--orientation RAS --normalise none",
              "label": "--orientation RAS"},
        resource_label="process_low",
        table="preprocess.parquet",
    ),
    Stage(
        name="train",
        command=("segment-cascaded", "train"),
        scope=COHORT,
        inputs=("samplesheet:image", "samplesheet:label"),
        outputs={"model": "model/model.safetensors", "card": "model/model.json",
                 "curve": "model/training_curve.parquet"},
        # Small enough for a few minutes on 2 CPU cores (the demo); train longer and wider
        # with segment-cascaded train for real cohorts. The patch is clipped to the data.
        # 10 epochs, not fewer: at 6 the basal slices were still being learnt (demo
        # validation Dice 0.93 -> 0.96 at 10; demo LVEF mean abs error 2.7 -> 2.3 points).
        args={"image": "--epochs 10 --patch 96,96,16 --channels 8 --levels 3 "
                       "--augment standard --val-fraction 0.2"},
        device="gpu",
        resource_label="process_high",
        needs=("label",),
        columns={"{image}": "samplesheet:image", "{label}": "samplesheet:label"},
        only_with="train",
    ),
    Stage(
        name="segment",
        command=("segment-cascaded", "predict"),
        scope=SUBJECT,
        inputs=("samplesheet:image", "model"),
        outputs={"seg": "{subject}_{role}_seg.nii.gz",
                 "uncertainty": "{subject}_{role}_unc.nii.gz",
                 "sidecar": "{subject}_{role}_seg.json",
                 "prob": "{subject}_{role}_prob.nii.gz"},
        args={"image": "--uncertainty-kind entropy --tta 2"},
        device="gpu",
        resource_label="process_medium",
        table="segment.parquet",
        # The class probabilities (X, Y, Z, T, C float32: predict --probabilities) for the
        # uncertainty stage's calibration; only with --save-probabilities: about ten
        # times the image's size (about 40 MB for a 10-frame demo cine, README).
        optional={"prob": "save_probabilities"},
    ),
    Stage(
        name="uncertainty",
        command=("score-uncertainty",),
        scope=COHORT,
        inputs=("segment:seg", "segment:uncertainty", "samplesheet:label", "samplesheet:image",
                "segment:prob"),
        outputs={"table": "score-uncertainty.parquet",
                 "summary": "summary.parquet",
                 "curves": "curves.parquet",
                 "plot": "curves.png",
                 "reliability": "curves_reliability.png"},
        # The segment stage's probabilities (with --save-probabilities) are per class:
        # LV/Myo/RV <- classes 1/2/3 (uncertainty.regions.region_probabilities).
        args={"image": "--regions cardiac --prob-channels classes"},
        resource_label="process_low",
        table="score-uncertainty.parquet",
        needs=("label",),
        # The entropy map is one map for all classes: it stands for every region. The
        # mask (voxels > 0 of the image) is the field of view.
        # With --save-probabilities the prob column adds ECE, MCE, Brier and NLL per region
        # to the table and the pooled reliability diagram.
        columns={"seg": "samplesheet:label", "pred": "segment:seg", "mask": "samplesheet:image",
                 "unc_lv": "segment:uncertainty", "unc_myo": "segment:uncertainty",
                 "unc_rv": "segment:uncertainty", "prob": "segment:prob"},
        optional={"prob": "save_probabilities", "reliability": "save_probabilities"},
    ),
    # super-resolve: a shape prior trained on the cohort's high-resolution ground truth
    # (only with --train-prior, and only over subjects that have gt_ed and gt_es) ...
    Stage(
        name="train_prior",
        command=("super-resolve", "train-prior"),
        scope=COHORT,
        inputs=("samplesheet:gt_ed", "samplesheet:gt_es"),
        outputs={"prior": "prior/model.safetensors", "card": "prior/model.json",
                 "curve": "prior/training_curve.parquet"},
        # Sized for the demo (about a minute on 2 CPU cores); a real prior trains for
        # about 150 epochs on a few dozen subjects (benchmarks/superres/).
        args={"image": "--epochs 40 --val-fraction 0"},
        device="gpu",
        resource_label="process_high",
        needs=("gt_ed", "gt_es"),
        only_with="train_prior",
    ),
    # ... then each subject's segmentation, ED and ES, to 1.25 mm 3D shapes with the
    # per-slice breath-hold shifts corrected (the motion stage reads the ED shape).
    Stage(
        name="superres",
        command=("super-resolve", "predict"),
        scope=SUBJECT,
        inputs=("segment:seg", "prior"),
        outputs={"hr_ed": "{subject}_{role}_hr_ed.nii.gz",
                 "hr_es": "{subject}_{role}_hr_es.nii.gz",
                 "sidecar_ed": "{subject}_{role}_hr_ed.json",
                 "sidecar_es": "{subject}_{role}_hr_es.json"},
        args={"image": "--method latent --frames ed,es --iterations 80"},
        device="gpu",
        resource_label="process_medium",
        table="superres.parquet",
        only_with="prior",
    ),
    Stage(
        name="annotate",
        command=("suggest-annotation", "rank"),
        scope=COHORT,
        inputs=("samplesheet:image", "samplesheet:label", "model"),
        outputs={"suggestions": "suggestions.csv", "sidecar": "suggestions.json"},
        # The next subjects to annotate among those with an empty label cell; the budget
        # comes from --annotate-budget (Nextflow: --annotate_budget), this is its default.
        args={"image": "--strategy gradient --budget 10%"},
        device="gpu",
        resource_label="process_medium",
        # Every subject's image; the label where there is one (empty: to be suggested).
        columns={"{image}": "samplesheet:image", "{label}": "samplesheet:label"},
    ),
    # Is each image column the kind of image it claims? One cohort task reads every
    # subject's preprocessed images (every image column; label maps are not read), trains
    # a small encoder on them (or uses --cluster-model), clusters them and flags an image
    # whose cluster holds under a quarter of its column (a 4-chamber cine in sa). Short
    # training: the cohort's own views are far apart; train longer with
    # `cluster-unsupervised train` for archives of unknown content.
    Stage(
        name="cluster",
        command=("cluster-unsupervised", "assign"),
        scope=COHORT,
        inputs=("preprocess:image",),
        outputs={"table": "clusters.parquet", "sidecar": "clusters.json",
                 "montage": "montage.png", "map": "map.png"},
        args={"image": "--steps 100 --refine-steps 30 --batch 32 --k-columns"},
        resource_label="process_medium",
        table="clusters.parquet",
    ),
    # estimate-motion-mesh: a template heart mesh fitted to each subject's predicted
    # short-axis segmentation (the segment stage's) and its long-axis segmentations (the
    # samplesheet's seg_la_2ch / seg_la_4ch: the pipeline segments no long-axis view yet;
    # a subject with neither is skipped, plan.motion_task) and moved through the cycle;
    # LV/RV volumes, LVEF, LV mass, strain and wall thickness from the closed surfaces are
    # the plain phenotype columns of cohort.parquet, beside the voxel-counting *_voxel twins.
    Stage(
        name="motion",
        command=("estimate-motion-mesh", "fit"),
        scope=SUBJECT,
        inputs=("segment:seg", "samplesheet:seg_la_2ch", "samplesheet:seg_la_4ch"),
        outputs={"phenotypes": "{subject}_{role}_phenotypes.parquet",
                 "frames": "{subject}_{role}_frames.parquet",
                 "vertices": "{subject}_{role}_vertices.parquet",
                 "displacements": "{subject}_{role}_displacements.npy",
                 "meshes": "{subject}_{role}_meshes",
                 "sidecar": "{subject}_{role}_motion.json"},
        # The fit is a per-subject optimisation on CPU (about 1 s CPU per frame);
        # process_gpu waits for the learned `predict` mode. Only with --motion: cardiac
        # cines only, and about 50 s CPU per 50-frame subject.
        resource_label="process_medium",
        table="motion.parquet",
        only_with="motion",
    ),
)


def get_stage(name: str) -> Stage:
    """The stage called ``name`` (KeyError naming the known stages otherwise)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}; known: {', '.join(s.name for s in STAGES)}")
