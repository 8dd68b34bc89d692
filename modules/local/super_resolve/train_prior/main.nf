// medflow super-resolve train-prior (cohort): the shape prior of the superres stage, a 3D
// VAE over the high-resolution label maps (gt_ed, gt_es) of every subject that has them.
// meta.subjects lists the subjects in the order of the file lists. Runs on a GPU when one
// is allocated (task.accelerator) and on CPU otherwise.
process SUPER_RESOLVE_TRAIN_PRIOR {
    tag "${meta.id}"
    label 'process_high'
    label 'process_gpu'

    input:
    tuple val(meta), path(gt_ed, stageAs: 'gt_ed/*'), path(gt_es, stageAs: 'gt_es/*')

    output:
    tuple val(meta), path('prior/model.safetensors'),       emit: prior
    tuple val(meta), path('prior/model.json'),              emit: card
    tuple val(meta), path('prior/training_curve.parquet'),  emit: curve
    tuple val("${task.process}"), val('medflow'), eval('medflow --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args   = task.ext.args ?: ''
    def device = task.accelerator ? 'cuda' : 'cpu'
    def lists  = [meta.subjects, gt_ed, gt_es].collect { v -> v instanceof List ? v : [v] }
    def rows   = lists.transpose().collect { subject, ed, es -> "${subject},${ed},${es}" }
    def sheet  = (["subject,gt_ed,gt_es"] + rows).collect { line -> "'${line}'" }.join(' ')
    """
    printf '%s\\n' ${sheet} > samplesheet.csv

    medflow super-resolve train-prior \\
        --samplesheet samplesheet.csv \\
        --label-role gt_ed,gt_es \\
        --out prior \\
        --device ${device} \\
        ${args}
    """

    stub:
    """
    mkdir -p prior
    touch prior/model.safetensors prior/training_curve.parquet
    echo '{}' > prior/model.json
    """
}
