#!/usr/bin/env nextflow
/*
 * medflow: the cohort pipeline, scale-out runner.
 *
 * The stage list lives once, in Python (medflow.pipeline.stages.STAGES); this workflow and
 * conf/modules.config mirror it and tests/nextflow/ hold them to it. Every task calls the
 * same `medflow` tool with the same arguments as `medflow pipeline`, and results land in
 * the same layout: <outdir>/<stage>/<subject>/<subject>_<role>_<what>.<ext>.
 */
nextflow.enable.dsl = 2

include { SAMPLESHEET_CHECK                   } from './modules/local/samplesheet_check/main'
include { PREPROCESS                          } from './modules/local/preprocess/main'
include { SEGMENT_CASCADED_TRAIN as TRAIN     } from './modules/local/segment_cascaded/train/main'
include { SEGMENT_CASCADED_PREDICT as SEGMENT } from './modules/local/segment_cascaded/predict/main'
include { SCORE_UNCERTAINTY as UNCERTAINTY    } from './modules/local/score_uncertainty/main'
include { SUPER_RESOLVE_TRAIN_PRIOR as TRAIN_PRIOR } from './modules/local/super_resolve/train_prior/main'
include { SUPER_RESOLVE_PREDICT as SUPERRES   } from './modules/local/super_resolve/predict/main'
include { SUGGEST_ANNOTATION_RANK as ANNOTATE } from './modules/local/suggest_annotation/rank/main'
include { CLUSTER_UNSUPERVISED_ASSIGN as CLUSTER } from './modules/local/cluster_unsupervised/assign/main'
include { ESTIMATE_MOTION_MESH_FIT as MOTION } from './modules/local/estimate_motion_mesh/fit/main'

// The image role(s) a model segments, in channel order: --segment_roles, else its model card
def modelRoles(model) {
    if (params.segment_roles) {
        return params.segment_roles.tokenize(',')*.trim()
    }
    def card = model.resolve('model.json')
    if (!card.exists()) {
        error "medflow: ${card} not found: --model must be a folder written by `medflow segment-cascaded train`"
    }
    return new groovy.json.JsonSlurper().parseText(card.text).training.image_roles
}

// The label role a model was trained on (its model card), for the annotate stage
def modelLabelRole(model) {
    def card = model.resolve('model.json')
    return card.exists() ? new groovy.json.JsonSlurper().parseText(card.text).training.label_role : null
}

workflow {
    if (!params.input) {
        error "medflow: give --input samplesheet.csv (the schema is in nextflow_schema.json)"
    }
    def samplesheet = file(params.input, checkIfExists: true)

    // Parameters of this run, for the record
    def info = file("${params.outdir}/pipeline_info")
    info.mkdirs()
    info.resolve('params.json').text = groovy.json.JsonOutput.prettyPrint(groovy.json.JsonOutput.toJson(params))

    // Validate the samplesheet with medflow's own checks; every other task waits for it
    SAMPLESHEET_CHECK(channel.value([[id: 'samplesheet', source: samplesheet.toUriString()], samplesheet]))

    // One item per (subject, role) file; meta.kind is image or label, meta.pair the image a
    // label annotates, meta.series the series inside a DICOM zip (a <zip>#<series> cell: the
    // zip is staged). Cells that are not images (the demo's truth.json) are not processed.
    ch_files = SAMPLESHEET_CHECK.out.csv
        .map { meta, csv -> csv }
        .splitCsv(header: true)
        .filter { row -> !row.path.endsWith('.json') }
        .map { row ->
            [[id: row.subject, role: row.role, kind: row.kind, pair: row.pair, series: row.series ?: ''],
             file(row.path, checkIfExists: true)]
        }

    // preprocess: reorient every image and label map (per subject, per role)
    PREPROCESS(ch_files)

    // train (only with --train): the cascade on every subject with the label role;
    // otherwise the model is --model and its card names the roles it segments
    def model = null
    def roles = []
    if (params.train) {
        def image_role = params.train_image_role
        def label_role = params.train_label_role
        ch_train = PREPROCESS.out.image
            .filter { meta, file -> meta.role in [image_role, label_role] }
            .map { meta, file -> [meta.id, meta.role, file] }
            .groupTuple(size: 2)
            .map { subject, found, files -> [subject, files[found.indexOf(image_role)], files[found.indexOf(label_role)]] }
            .toSortedList { a, b -> a.first() <=> b.first() }
            .filter { subjects -> !subjects.isEmpty() }
            .map { subjects ->
                [
                    [id: 'cohort', subjects: subjects.collect { subject, image, label -> subject },
                     image_role: image_role, label_role: label_role],
                    subjects.collect { subject, image, label -> image },
                    subjects.collect { subject, image, label -> label },
                ]
            }
        TRAIN(ch_train)
        model = TRAIN.out.model.map { meta, weights -> weights.parent }.first()
        roles = [image_role]
    } else if (params.model) {
        model = file(params.model, checkIfExists: true)
        roles = modelRoles(model)
    }

    if (model != null) {
        // segment: the model's image role(s) of each subject, channels in the model's order;
        // outputs are named after the first role (<subject>_<role>_seg.nii.gz)
        ch_to_segment = PREPROCESS.out.image
            .filter { meta, image -> meta.role in roles }
            .map { meta, image -> [meta.id, meta.role, image] }
            .groupTuple(size: roles.size())
            .map { subject, found, images ->
                [[id: subject, role: roles[0]], roles.collect { role -> images[found.indexOf(role)] }]
            }
        SEGMENT(ch_to_segment, model, params.save_probabilities)

        // uncertainty: one cohort task over the subjects that have ground truth for the
        // segmented role (the label column paired with it); the segmented image is the mask
        ch_truth = PREPROCESS.out.image
            .filter { meta, label -> meta.kind == 'label' && meta.pair == roles[0] }
            .map { meta, label -> [meta.id, label] }
        ch_mask = PREPROCESS.out.image
            .filter { meta, image -> meta.role == roles[0] }
            .map { meta, image -> [meta.id, image] }
        // with --save_probabilities every segmented subject's class probabilities go along
        // (a subject without them stops the run); [] otherwise
        ch_segmented = params.save_probabilities
            ? SEGMENT.out.seg.join(SEGMENT.out.uncertainty).join(SEGMENT.out.prob, failOnMismatch: true)
            : SEGMENT.out.seg.join(SEGMENT.out.uncertainty).map { meta, seg, unc -> [meta, seg, unc, []] }
        ch_cohort = ch_segmented
            .map { meta, seg, unc, prob -> [meta.id, seg, unc, prob] }
            .join(ch_truth)
            .join(ch_mask)
            .toSortedList { a, b -> a.first() <=> b.first() }
            .filter { subjects -> !subjects.isEmpty() }
            .map { subjects ->
                [
                    [id: 'cohort', subjects: subjects.collect { subject, seg, unc, prob, truth, mask -> subject }],
                    subjects.collect { subject, seg, unc, prob, truth, mask -> seg },
                    subjects.collect { subject, seg, unc, prob, truth, mask -> unc },
                    subjects.collect { subject, seg, unc, prob, truth, mask -> truth },
                    subjects.collect { subject, seg, unc, prob, truth, mask -> mask },
                    subjects.collect { subject, seg, unc, prob, truth, mask -> prob }.flatten(),
                ]
            }
        UNCERTAINTY(ch_cohort)

        // train_prior (only with --train_prior): the superres shape prior from the
        // subjects' high-resolution ground truth (gt_ed, gt_es); otherwise --superres_model
        def prior = null
        if (params.train_prior) {
            ch_prior = PREPROCESS.out.image
                .filter { meta, label -> meta.role in ['gt_ed', 'gt_es'] }
                .map { meta, label -> [meta.id, meta.role, label] }
                .groupTuple(size: 2)
                .map { subject, found, maps -> [subject, maps[found.indexOf('gt_ed')], maps[found.indexOf('gt_es')]] }
                .toSortedList { a, b -> a.first() <=> b.first() }
                .filter { subjects -> !subjects.isEmpty() }
                .map { subjects ->
                    [
                        [id: 'cohort', subjects: subjects.collect { subject, ed, es -> subject }],
                        subjects.collect { subject, ed, es -> ed },
                        subjects.collect { subject, ed, es -> es },
                    ]
                }
            TRAIN_PRIOR(ch_prior)
            prior = TRAIN_PRIOR.out.prior.map { meta, weights -> weights.parent }.first()
        } else if (params.superres_model) {
            prior = file(params.superres_model, checkIfExists: true)
        }

        // the long-axis segmentations of each subject's samplesheet row (seg_la_2ch /
        // seg_la_4ch; the pipeline segments no long-axis view yet): [id, roles, files]
        ch_long_axis = PREPROCESS.out.image
            .filter { meta, label -> meta.role in ['seg_la_2ch', 'seg_la_4ch'] }
            .map { meta, label -> [meta.id, meta.role, label] }
            .groupTuple()

        // superres: ED and ES of each subject's segmentation to 1.25 mm 3D shapes, the
        // breath-hold shifts corrected (the motion stage reads the ED shape); with the
        // long-axis segmentations the shifts are absolute and refined on them
        if (prior != null) {
            ch_superres = SEGMENT.out.seg
                .map { meta, seg -> [meta.id, meta, seg] }
                .join(ch_long_axis, remainder: true)
                .filter { row -> row[1] != null }  // long-axis labels of an unsegmented subject
                .map { row ->
                    def la_roles = row.size() > 3 && row[3] != null ? row[3] : []
                    def labels = row.size() > 4 && row[4] != null ? row[4] : []
                    def order = la_roles.withIndex().sort { a, b -> a[0] <=> b[0] }*.getAt(1)
                    [row[1] + [la_roles: order.collect { i -> la_roles[i] }], row[2],
                     order.collect { i -> labels[i] }]
                }
            SUPERRES(ch_superres, prior)
        }
        // annotate: the next subjects to label, among those without a label for the
        // model's label role; one cohort task over every subject with the image
        def label_role = params.train ? params.train_label_role : modelLabelRole(model)
        ch_images = PREPROCESS.out.image
            .filter { meta, image -> meta.role == roles[0] }
            .map { meta, image -> [meta.id, image] }
        ch_labels = PREPROCESS.out.image
            .filter { meta, label -> meta.role == label_role }
            .map { meta, label -> [meta.id, label] }
        ch_annotate = ch_images
            .join(ch_labels, remainder: true)
            .filter { subject, image, label -> image != null }
            .toSortedList { a, b -> a.first() <=> b.first() }
            .filter { subjects -> !subjects.isEmpty() }
            .map { subjects ->
                def labelled = subjects.findAll { subject, image, label -> label != null }
                [
                    [id: 'cohort', subjects: subjects.collect { subject, image, label -> subject },
                     labelled: labelled.collect { subject, image, label -> subject },
                     image_role: roles[0], label_role: label_role, budget: params.annotate_budget],
                    subjects.collect { subject, image, label -> image },
                    labelled.collect { subject, image, label -> label },
                ]
            }
        ANNOTATE(ch_annotate, model)
    } else {
        log.warn "medflow: neither --model nor --train given: no segmentation"
    }

    // cluster: the column check, one cohort task over every subject's preprocessed images
    // (image columns only); the encoder is --cluster_model or trained in the task
    ch_cluster = PREPROCESS.out.image
        .filter { meta, image -> meta.kind == 'image' }
        .map { meta, image -> [meta.id, meta.role, image] }
        .toSortedList { a, b -> (a[0] <=> b[0]) ?: (a[1] <=> b[1]) }
        .filter { items -> !items.isEmpty() }
        .map { items ->
            [
                [id: 'cohort', subjects: items.collect { subject, role, image -> subject },
                 roles: items.collect { subject, role, image -> role }],
                items.collect { subject, role, image -> image },
            ]
        }
    CLUSTER(ch_cluster, params.cluster_model ? file(params.cluster_model, checkIfExists: true) : [])

    // motion (only with --motion): the template mesh fitted to each subject's predicted
    // short-axis segmentation and the long-axis segmentations of its samplesheet row
    // (seg_la_2ch / seg_la_4ch; the pipeline segments no long-axis view yet); a subject
    // without one is left out, as the local runner skips it
    if ((params.motion || params.motion_model) && model != null) {
        ch_motion = SEGMENT.out.seg
            .map { meta, seg -> [meta.id, meta, seg] }
            .join(ch_long_axis)
            .map { subject, meta, seg, la_roles, labels ->
                def order = la_roles.withIndex().sort { a, b -> a[0] <=> b[0] }*.getAt(1)
                [meta + [la_roles: order.collect { i -> la_roles[i] }], seg,
                 order.collect { i -> labels[i] }]
            }
        // --motion_model: the trained network predicts instead of the per-subject fit
        MOTION(ch_motion, params.motion_model ? file(params.motion_model, checkIfExists: true) : [])
    } else if (params.motion || params.motion_model) {
        log.warn "medflow: --motion needs a segmentation (--model or --train): no motion stage"
    }

    // Tool versions of every task that ran, to pipeline_info/ (trace, report, timeline and
    // the DAG are configured in nextflow.config)
    channel.topic('versions')
        .unique()
        .map { process, tool, version -> "${process.tokenize(':').last()}:\n  ${tool}: ${version}\n" }
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true)
}
