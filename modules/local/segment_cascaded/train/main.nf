// medflow segment-cascaded train (cohort): train both stages of the cascade on every
// subject's preprocessed image and label map. meta.subjects lists the subjects in the order
// of the file lists; meta.image_role / meta.label_role name the samplesheet columns. Runs on
// a GPU when one is allocated (task.accelerator) and on CPU otherwise.
process SEGMENT_CASCADED_TRAIN {
    tag "${meta.id}"
    label 'process_high'
    label 'process_gpu'

    input:
    tuple val(meta), path(image, stageAs: 'image/*'), path(label, stageAs: 'label/*')

    output:
    tuple val(meta), path('model/model.safetensors'),       emit: model
    tuple val(meta), path('model/model.json'),              emit: card
    tuple val(meta), path('model/training_curve.parquet'),  emit: curve
    tuple val(meta), path('model/*'),                       emit: files
    tuple val("${task.process}"), val('medflow'), eval('medflow --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args   = task.ext.args ?: ''
    def device = task.accelerator ? 'cuda' : 'cpu'
    def lists  = [meta.subjects, image, label].collect { v -> v instanceof List ? v : [v] }
    def rows   = lists.transpose().collect { subject, img, lab -> "${subject},${img},${lab}" }
    def sheet  = (["subject,${meta.image_role},${meta.label_role}"] + rows).collect { line -> "'${line}'" }.join(' ')
    """
    printf '%s\\n' ${sheet} > samplesheet.csv

    medflow segment-cascaded train \\
        --samplesheet samplesheet.csv \\
        --image-role ${meta.image_role} \\
        --label-role ${meta.label_role} \\
        --out model \\
        --device ${device} \\
        ${args}
    """

    stub:
    """
    mkdir -p model
    touch model/model.safetensors model/training_curve.parquet
    echo '{}' > model/model.json
    """
}
