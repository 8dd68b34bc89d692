// medflow suggest-annotation rank (cohort): the next subjects to annotate among those
// without labels, ranked by the current model (gradient-guided sampling by default).
// meta.subjects lists every subject in the order of the image list; meta.labelled the
// subjects that have labels, in the order of the label list. The cohort samplesheet has
// an empty label cell for every other subject: those form the pool. meta.budget (from
// params.annotate_budget) overrides the budget in ext.args. Runs on a GPU when one is
// allocated (task.accelerator) and on CPU otherwise.
process SUGGEST_ANNOTATION_RANK {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'

    input:
    tuple val(meta), path(image, stageAs: 'image/*'), path(label, stageAs: 'label/*')
    path(model)

    output:
    tuple val(meta), path('suggestions.csv'),  emit: suggestions
    tuple val(meta), path('suggestions.json'), emit: sidecar
    tuple val("${task.process}"), val('medflow'), eval('medflow --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args    = task.ext.args ?: ''
    def device  = task.accelerator ? 'cuda' : 'cpu'
    def budget  = meta.budget ? "--budget ${meta.budget}" : ''
    def images  = image instanceof List ? image : [image]
    def labels  = label instanceof List ? label : (label ? [label] : [])
    def byLabel = [meta.labelled, labels].transpose().collectEntries { subject, lab -> [(subject): lab] }
    def rows    = [meta.subjects, images].transpose().collect { subject, img -> "${subject},${img},${byLabel[subject] ?: ''}" }
    def sheet   = (["subject,${meta.image_role},${meta.label_role}"] + rows).collect { line -> "'${line}'" }.join(' ')
    """
    printf '%s\\n' ${sheet} > samplesheet.csv

    medflow suggest-annotation rank \\
        --samplesheet samplesheet.csv \\
        --model ${model} \\
        --image-role ${meta.image_role} \\
        --label-role ${meta.label_role} \\
        --out suggestions.csv \\
        --device ${device} \\
        ${args} \\
        ${budget}
    """

    stub:
    """
    echo 'rank,subject,strategy,score,reason' > suggestions.csv
    echo '{}' > suggestions.json
    """
}
