// medflow cluster-unsupervised assign (cohort): the samplesheet column check. Every
// subject's preprocessed images (image columns only) are clustered without labels and an
// image whose cluster holds under a quarter of its column is flagged. meta.subjects and
// meta.roles give the subject and samplesheet column of each file, in the order of the
// file list. The encoder is trained on these images in the task (its folder is published
// as model/), unless a model from `cluster-unsupervised train` is given (--cluster_model;
// [] when none). A small model: it runs on CPU.
process CLUSTER_UNSUPERVISED_ASSIGN {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(image, stageAs: 'images/?/*')
    path(model)

    output:
    tuple val(meta), path('clusters.parquet'), emit: table
    tuple val(meta), path('clusters.json'),    emit: sidecar
    tuple val(meta), path('montage.png'),      emit: montage
    tuple val(meta), path('map.png'),          emit: map
    tuple val(meta), path('model/*'),          emit: model, optional: true
    tuple val("${task.process}"), val('medflow'), eval('medflow --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args   = task.ext.args ?: ''
    args       = model ? "${args} --model ${model}" : args
    def files  = image instanceof List ? image : [image]
    def roles  = meta.roles.unique(false)
    def cells  = [:]
    [meta.subjects, meta.roles, files].transpose().each { subject, role, file ->
        cells.get(subject, [:])[role] = "${file}"  // images/<n>/<name>: names may repeat
    }
    def rows   = cells.collect { subject, row -> ([subject] + roles.collect { role -> row[role] ?: '' }).join(',') }
    def sheet  = ([(['subject'] + roles).join(',')] + rows).collect { line -> "'${line}'" }.join(' ')
    """
    printf '%s\\n' ${sheet} > samplesheet.csv

    medflow cluster-unsupervised assign \\
        --samplesheet samplesheet.csv \\
        --out . \\
        --device cpu \\
        ${args}
    """

    stub:
    """
    touch clusters.parquet montage.png map.png
    echo '{}' > clusters.json
    """
}
