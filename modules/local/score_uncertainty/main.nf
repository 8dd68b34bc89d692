// medflow score-uncertainty (cohort mode): QU-BraTS uncertainty score of every subject's
// segmentation against its ground truth, with cohort summary and curves. One task for the
// whole cohort; meta.subjects lists the subjects in the order of the file lists. The
// cohort samplesheet's columns are STAGES' uncertainty.columns: seg (truth), pred, mask (the
// image: its field of view) and unc_<region>, the one entropy map standing for every region;
// with the segment stage's class probabilities (--save_probabilities; [] otherwise) also
// prob: ECE, MCE, Brier and NLL per region and curves_reliability.png.
process SCORE_UNCERTAINTY {
    tag "${meta.id}"
    label 'process_low'

    input:
    tuple val(meta), path(seg, stageAs: 'pred/*'), path(uncertainty, stageAs: 'unc/*'), path(label, stageAs: 'truth/*'), path(image, stageAs: 'image/*'), path(prob, stageAs: 'prob/*')

    output:
    tuple val(meta), path('score-uncertainty.parquet'), emit: table
    tuple val(meta), path('summary.parquet'),           emit: summary
    tuple val(meta), path('curves.parquet'),            emit: curves
    tuple val(meta), path('score-uncertainty.json'),    emit: sidecar
    tuple val(meta), path('curves.png'),                emit: plot
    tuple val(meta), path('curves_reliability.png'),    emit: reliability, optional: true
    tuple val("${task.process}"), val('medflow'), eval('medflow --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    // A model without regions writes one uncertainty map: it scores every region.
    def keys = [brats: ['wt', 'tc', 'et'], cardiac: ['lv', 'myo', 'rv']]
    def spec = (args =~ /--regions[ =](\S+)/).with { m -> m.find() ? m.group(1) : 'brats' }
    if (!keys.containsKey(spec)) { error "SCORE_UNCERTAINTY: --regions ${spec}: only brats or cardiac in the pipeline" }
    def lists  = [meta.subjects, seg, uncertainty, label, image].collect { v -> v instanceof List ? v : [v] }
    def probs  = prob instanceof List ? prob : [prob]
    def header = (['subject', 'seg', 'pred', 'mask'] + keys[spec].collect { k -> "unc_${k}" } + (probs ? ['prob'] : [])).join(',')
    def rows   = lists.transpose().withIndex().collect { files, i ->
        def (subject, pred, unc, truth, msk) = files
        ([subject, truth, pred, msk] + keys[spec].collect { k -> unc } + (probs ? [probs[i]] : [])).join(',')
    }
    def sheet  = ([header] + rows).collect { line -> "'${line}'" }.join(' ')
    """
    printf '%s\\n' ${sheet} > cohort.csv

    medflow score-uncertainty \\
        --samplesheet cohort.csv \\
        --outdir . \\
        --jobs ${task.cpus} \\
        ${args}
    """

    stub:
    """
    touch score-uncertainty.parquet summary.parquet curves.parquet curves.png ${prob ? 'curves_reliability.png' : ''}
    echo '{}' > score-uncertainty.json
    """
}
